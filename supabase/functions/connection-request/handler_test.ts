import { answerSignature } from "../_shared/answer.ts";
import { makeHandler, order, type ServerRow } from "./handler.ts";

function assertEq<T>(got: T, want: T) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(`got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

const row = (id: string, peers: number, cap: number, endpoint = `${id}.example.org:51820`) => ({
  id,
  endpoint,
  api_port: 3000,
  country: "DE",
  city: "Berlin",
  peer_count: peers,
  max_capacity: cap,
});

/** A function whose nodes answer with `answers[host]`; records the hosts and bodies it saw. */
function setup(fleet: ServerRow[], answers: Record<string, number | "timeout">, scheme = "http") {
  const seen: { host: string; body: string }[] = [];
  const handler = makeHandler({
    fleet: () => Promise.resolve(fleet),
    apiSecret: "secret",
    apiScheme: scheme,
    userId: (jwt) => Promise.resolve(jwt === "good" ? "user-1" : null),
    random: () => 0,
    fetch: (url, init) => {
      const host = new URL(String(url)).hostname;
      seen.push({ host, body: String(init?.body) });
      const a = answers[host];
      if (a === "timeout") return Promise.reject(new DOMException("slow", "TimeoutError"));
      const body = a === 201
        ? { peer_id: "p", config: "[Interface]\n", private_key: "k", endpoint: "x:1" }
        : { error: { code: "x", message: `secret detail from ${host}` } };
      // Signed as the node signs its answers: with the secret, for this request's nonce.
      const nonce = (init?.headers as Record<string, string>)["x-waylume-nonce"];
      const text = JSON.stringify(body);
      const id = host.split(".")[0];
      return answerSignature("secret", id, nonce, a, new TextEncoder().encode(text)).then((sig) =>
        new Response(text, { status: a, headers: { "x-waylume-signature": sig } })
      );
    },
  });
  const call = async (body: unknown = {}) => {
    const r = await handler(
      new Request("http://f/", {
        method: "POST",
        headers: { Authorization: "Bearer good" },
        body: JSON.stringify(body),
      }),
    );
    return { status: r.status, text: await r.text() };
  };
  return { seen, call };
}

Deno.test("order is weighted by free slots; full nodes never come up", () => {
  const fleet = [row("a", 9, 10), row("b", 0, 10), row("full", 10, 10)];
  assertEq(order(fleet, () => 0).map((s) => s.id), ["a", "b"]);
  // 1 free slot of 11: anything from 1/11 on lands on b.
  assertEq(order(fleet, () => 0.5).map((s) => s.id), ["b", "a"]);
});

Deno.test("401, 404, 409, 5xx and timeouts move on to the next node with one session id", async () => {
  for (const bad of [401, 404, 409, 500, 503, "timeout"] as const) {
    const { seen, call } = setup([row("bad", 0, 1000), row("good", 0, 1)], {
      "bad.example.org": bad,
      "good.example.org": 201,
    });
    const r = await call();
    assertEq([r.status, seen.map((s) => s.host)], [200, ["bad.example.org", "good.example.org"]]);
    assertEq(JSON.parse(seen[0].body).session_id, JSON.parse(seen[1].body).session_id);
    const out = JSON.parse(r.text);
    assertEq([out.server_id, out.config, out.peer], ["good", "[Interface]\n", { peer_id: "p" }]);
  }
});

Deno.test("attempts are bounded and failures tell the user nothing internal", async () => {
  const fleet = [row("a", 0, 10), row("b", 0, 10), row("c", 0, 10), row("d", 0, 10)];
  const answers = Object.fromEntries(fleet.map((s) => [`${s.id}.example.org`, 500]));
  const { seen, call } = setup(fleet, answers);
  const r = await call();
  assertEq([r.status, seen.length], [503, 3]);
  for (const leak of ["example.org", "secret detail", "500"]) {
    if (r.text.includes(leak)) throw new Error(`leaked ${leak}: ${r.text}`);
  }
  // A request the node calls invalid stops at once, also without details.
  const stop = setup([row("a", 0, 10), row("b", 0, 10)], { "a.example.org": 422 });
  const r2 = await stop.call();
  assertEq([r2.status, stop.seen.length], [502, 1]);
  if (r2.text.includes("secret detail")) throw new Error(r2.text);
});

Deno.test("over https a node with an IP endpoint is skipped, a named one is called", async () => {
  const { seen, call } = setup(
    [row("ip", 0, 1000, "203.0.113.7:51820"), row("named", 0, 1)],
    { "named.example.org": 201 },
    "https",
  );
  const r = await call();
  assertEq([r.status, seen.map((s) => s.host)], [200, ["named.example.org"]]);
});

Deno.test("no user, bad key, empty fleet", async () => {
  const { call } = setup([], {});
  assertEq((await call({ public_key: "nope" })).status, 422);
  assertEq((await call()).status, 503);
  const handler = makeHandler({
    fleet: () => Promise.reject(new Error("db down at 10.0.0.5")),
    apiSecret: "s",
    apiScheme: "http",
    userId: () => Promise.resolve("u"),
  });
  const r = await handler(
    new Request("http://f/", { method: "POST", headers: { Authorization: "Bearer x" } }),
  );
  const text = await r.text();
  assertEq(r.status, 503);
  if (text.includes("10.0.0.5")) throw new Error(text);
  const anon = await handler(new Request("http://f/", { method: "POST" }));
  assertEq(anon.status, 401);
});
