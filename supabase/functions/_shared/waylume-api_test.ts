import { answerSignature, nodeSecret, SEAL_SCHEME } from "./answer.ts";
import { apiBase, createPeer, endpointHost, signature } from "./waylume-api.ts";

/** A node's answer as the node sends it: signed with `secret` for the request's nonce. */
async function signedAnswer(
  secret: string,
  serverId: string,
  init: RequestInit | undefined,
  status: number,
  body: string,
): Promise<Response> {
  const nonce = (init?.headers as Record<string, string>)["x-waylume-nonce"];
  const bytes = new TextEncoder().encode(body);
  const sig = await answerSignature(secret, serverId, nonce, status, bytes);
  return new Response(bytes, { status, headers: { "x-waylume-signature": sig } });
}

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
    fetch: (_u: string | URL | Request, init?: RequestInit) =>
      signedAnswer("s", "n", init, status, body),
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

Deno.test("unsigned, altered and foreign answers are refused; sealed secrets are opened", async () => {
  const node = { id: "n", endpoint: "vpn.example.org:51820", api_port: 3000 };
  const opts = (fetch: (u: string | URL | Request, i?: RequestInit) => Promise<Response>) => ({
    secret: "s",
    scheme: "http",
    timeoutMs: 1000,
    fetch,
  });
  const peer = '{"peer_id":"p","endpoint":"203.0.113.7:51820"}';
  const unsigned = await createPeer(node, "{}", opts(() => Promise.resolve(new Response(peer))));
  assertEq(!unsigned.ok && unsigned.reason.includes("not signed"), true);
  const altered = await createPeer(
    node,
    "{}",
    opts(async (_u, init) => {
      const r = await signedAnswer("s", "n", init, 201, peer);
      const text = (await r.text()).replace("203.0.113.7", "198.51.100.66");
      return new Response(text, { status: 201, headers: r.headers });
    }),
  );
  assertEq([altered.ok, !altered.ok && altered.next], [false, true]);
  assertEq(!altered.ok && altered.reason.includes("does not match"), true);
  const foreign = await createPeer(
    node,
    "{}",
    opts((_u, i) => signedAnswer("x", "n", i, 201, peer)),
  );
  assertEq(foreign.ok, false);

  // A sealed answer (the node's own vector is in answer_test.ts): sealed here with Web Crypto.
  const sealedAnswer = async (_u: string | URL | Request, init?: RequestInit) => {
    const nonce = (init?.headers as Record<string, string>)["x-waylume-nonce"];
    const enc = new TextEncoder();
    const base = await crypto.subtle.importKey("raw", enc.encode("s"), "HKDF", false, [
      "deriveKey",
    ]);
    const key = await crypto.subtle.deriveKey(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: enc.encode("waylume-seal-v1"),
        info: enc.encode(nonce),
      },
      base,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt"],
    );
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const plain = enc.encode('{"private_key":"PRIV","config":"[Interface]"}');
    const ct = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: enc.encode("n") },
        key,
        plain,
      ),
    );
    const data = btoa(String.fromCharCode(...iv, ...ct));
    return signedAnswer(
      "s",
      "n",
      init,
      201,
      JSON.stringify({ peer_id: "p", sealed: { scheme: SEAL_SCHEME, data } }),
    );
  };
  const opened = await createPeer(node, "{}", opts(sealedAnswer));
  assertEq(opened.ok && [opened.peer.private_key, opened.peer.config, "sealed" in opened.peer], [
    "PRIV",
    "[Interface]",
    false,
  ]);
});

Deno.test("with the fleet master, each node is called with its own derived secret", async () => {
  const node = { id: "node-1", endpoint: "vpn.example.org:51820", api_port: 3000 };
  const own = await nodeSecret("fleet-master", "node-1");
  const a = await createPeer(node, "{}", {
    secret: "fleet-master",
    master: true,
    scheme: "http",
    timeoutMs: 1000,
    fetch: async (_u, init) => {
      const h = init?.headers as Record<string, string>;
      const want = await signature(
        own,
        "node-1",
        "POST",
        "/api/peers",
        "{}",
        Number(h["x-waylume-timestamp"]),
        h["x-waylume-nonce"],
      );
      const status = h["x-waylume-signature"] === want ? 201 : 401;
      return signedAnswer(own, "node-1", init, status, '{"peer_id":"p"}');
    },
  });
  assertEq(a.ok, true);
});
