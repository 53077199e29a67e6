import { signature } from "./sign.ts";

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
