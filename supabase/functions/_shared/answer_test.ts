import {
  answerSignature,
  nodeSecret,
  openSealed,
  readAnswer,
  SEAL_SCHEME,
  verifyAnswer,
} from "./answer.ts";

// The known-answer vectors of the node's own tests (src/core/answer.rs, src/core/seal.rs).
const NONCE = "0123456789abcdef";
const enc = new TextEncoder();

async function rejects(f: () => Promise<unknown>, want: string) {
  try {
    await f();
  } catch (e) {
    if (!String(e).includes(want)) throw new Error(`wrong error: ${e}, want ${want}`);
    return;
  }
  throw new Error(`accepted, want an error with ${want}`);
}

Deno.test("answer signature: known answer, and refusals", async () => {
  const sig = await answerSignature("secret", "node-1", NONCE, 201, enc.encode("{}"));
  const want = "v1=28d693ba328e5c9e94e6f706206799a269cefa4ce4cf7d28fa55999db0f4d832";
  if (sig !== want) throw new Error(`got ${sig}, want ${want}`);
  await verifyAnswer("secret", "node-1", NONCE, 201, enc.encode("{}"), sig);
  await rejects(
    () => verifyAnswer("secret", "node-1", NONCE, 201, enc.encode("{ }"), sig),
    "does not match",
  );
  await rejects(
    () => verifyAnswer("secret", "node-1", NONCE, 200, enc.encode("{}"), sig),
    "does not match",
  );
  await rejects(
    () => verifyAnswer("secret", "node-1", "fedcba9876543210", 201, enc.encode("{}"), sig),
    "does not match",
  );
  await rejects(
    () => verifyAnswer("secret", "node-1", NONCE, 201, enc.encode("{}"), null),
    "not signed",
  );
  await rejects(
    () => verifyAnswer("secret", "node-1", NONCE, 201, enc.encode("{}"), "v1=zz"),
    "malformed",
  );
});

Deno.test("sealed secrets: known answer, and refusals", async () => {
  const sealed = {
    scheme: SEAL_SCHEME,
    data: "AQIDBAUGBwgJCgsMONlP/fLfspmCOaXGL0SuQc96421iTynj2BQHE/usQ8MvkDQ=",
  };
  const got = await openSealed("secret", "node-1", NONCE, sealed);
  if (got.private_key !== "x") throw new Error(JSON.stringify(got));
  await rejects(() => openSealed("secret", "node-2", NONCE, sealed), "does not open");
  await rejects(() => openSealed("secret", "node-1", "fedcba9876543210", sealed), "does not open");
  await rejects(
    () => openSealed("secret", "node-1", NONCE, { ...sealed, scheme: "none" }),
    "scheme",
  );
  const flipped = { ...sealed, data: "B" + sealed.data.slice(1) };
  await rejects(() => openSealed("secret", "node-1", NONCE, flipped), "does not open");
});

Deno.test("readAnswer checks the signature before trusting the body", async () => {
  const body = enc.encode(JSON.stringify({
    peer_id: "p",
    sealed: {
      scheme: SEAL_SCHEME,
      data: "AQIDBAUGBwgJCgsMONlP/fLfspmCOaXGL0SuQc96421iTynj2BQHE/usQ8MvkDQ=",
    },
  }));
  const sig = await answerSignature("secret", "node-1", NONCE, 201, body);
  const res = () => new Response(body, { status: 201, headers: { "x-waylume-signature": sig } });
  const { status, body: v } = await readAnswer("secret", "node-1", NONCE, res());
  if (status !== 201 || v.private_key !== "x" || "sealed" in v) throw new Error(JSON.stringify(v));
  const unsigned = new Response(body, { status: 201 });
  await rejects(() => readAnswer("secret", "node-1", NONCE, unsigned), "not signed");
});

Deno.test("node secret from the fleet master: known answer", async () => {
  const s = await nodeSecret("fleet-master", "node-1");
  const want = "9cd8880848e5fe8a3619f598a061993b36cc2cf6fc1d4860169129fc0571a650";
  if (s !== want) throw new Error(`got ${s}, want ${want}`);
});
