import { apiBase, createPeer, endpointHost, signature } from "./waylume-api.ts";

Deno.test("signature matches the node's scheme (known answer)", async () => {
  const body = '{"session_id":"s1"}';
  const sig = await signature(
    "test-secret",
    "de-fra-1",
    "post",
    "/api/peers",
    body,
    1764109800,
    "0123456789abcdef0123456789abcdef",
  );
  // Computed independently (Python hmac/hashlib) from the string-to-sign.
  const want = "v1=383141d0d02784d48e0139ea127780186d490b809667dd632b75d933385e6237";
  if (sig !== want) throw new Error(`got ${sig}, want ${want}`);
});

function assertEq<T>(got: T, want: T) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(`got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

Deno.test("the API host is the endpoint's; https never goes to an IP address", () => {
  const node = (endpoint: string) => ({ id: "n", endpoint, api_port: 3000 });
  assertEq(endpointHost("[2001:db8::1]:51820"), "2001:db8::1");
  assertEq(apiBase(node("203.0.113.7:51820"), "http"), "http://203.0.113.7:3000");
  assertEq(apiBase(node("[2001:db8::1]:51820"), "http"), "http://[2001:db8::1]:3000");
  assertEq(apiBase(node("vpn-1.example.org:51820"), "https"), "https://vpn-1.example.org:3000");
  assertEq(apiBase(node("203.0.113.7:51820"), "https"), null);
  assertEq(apiBase(node("[2001:db8::1]:51820"), "https"), null);
});

Deno.test("which failures send the function on to the next node", async () => {
  const node = { id: "n", endpoint: "vpn.example.org:51820", api_port: 3000 };
  const answer = (status: number, body = "{}") => ({
    secret: "s",
    scheme: "http",
    timeoutMs: 1000,
    fetch: () => Promise.resolve(new Response(body, { status })),
  });
  for (const status of [401, 403, 404, 409, 429, 500, 503]) {
    const a = await createPeer(node, "{}", answer(status));
    assertEq([a.ok, !a.ok && a.next], [false, true]);
  }
  for (const status of [400, 422]) {
    const a = await createPeer(node, "{}", answer(status));
    assertEq([a.ok, !a.ok && a.next], [false, false]);
  }
  const ok = await createPeer(node, "{}", answer(201, '{"peer_id":"p"}'));
  assertEq(ok.ok && ok.peer.peer_id, "p");
  const huge = await createPeer(node, "{}", answer(201, "x".repeat(100_000)));
  assertEq([huge.ok, !huge.ok && huge.next], [false, true]);
  const slow = await createPeer(node, "{}", {
    secret: "s",
    scheme: "http",
    timeoutMs: 20,
    fetch: (_u, init) =>
      new Promise((_, reject) =>
        init?.signal?.addEventListener("abort", () => reject(init.signal!.reason))
      ),
  });
  assertEq(!slow.ok && slow.reason, "timed out");
});
