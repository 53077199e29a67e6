// Answers from the node API: their signature, their sealed secrets, and per-node secrets.
// The scheme is the node's (README, "Signed answers" and "Sealed secrets"); Web Crypto only.
//
// Signature: header x-waylume-signature = "v1=" + lowercase hex HMAC-SHA256(secret, text), text =
//   "waylume-v1-answer", SERVER_ID, the request's nonce, the status (decimal), lowercase hex
//   SHA-256 of the body bytes, joined by "\n".
// Sealed: "sealed": {"scheme": "hkdf-sha256-aes-256-gcm-v1", "data": base64(iv ‖ ciphertext ‖ tag)}
//   key = HKDF-SHA256(salt "waylume-seal-v1", ikm secret, info nonce), AES-256-GCM, 12-byte IV,
//   the server id as additional data. It opens to {"private_key", "preshared_key", "config"}.
// Node secret: lowercase hex HMAC-SHA256(master, SERVER_ID).

const enc = new TextEncoder();
export const SEAL_SCHEME = "hkdf-sha256-aes-256-gcm-v1";

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(s: string): Uint8Array<ArrayBuffer> | null {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) return null;
  return Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
}

function hmacKey(secret: string, usage: "sign" | "verify"): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    "raw",
    enc.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    [
      usage,
    ],
  );
}

async function answerText(
  serverId: string,
  nonce: string,
  status: number,
  body: Uint8Array<ArrayBuffer>,
) {
  const bodyHash = hex(await crypto.subtle.digest("SHA-256", body));
  return ["waylume-v1-answer", serverId, nonce, String(status), bodyHash].join("\n");
}

/** The signature header the node puts on an answer. */
export async function answerSignature(
  secret: string,
  serverId: string,
  nonce: string,
  status: number,
  body: Uint8Array<ArrayBuffer>,
): Promise<string> {
  const text = await answerText(serverId, nonce, status, body);
  return "v1=" +
    hex(await crypto.subtle.sign("HMAC", await hmacKey(secret, "sign"), enc.encode(text)));
}

/** Throws unless `header` signs this status and body for the request with `nonce`. */
export async function verifyAnswer(
  secret: string,
  serverId: string,
  nonce: string,
  status: number,
  body: Uint8Array<ArrayBuffer>,
  header: string | null,
): Promise<void> {
  if (header === null) throw new Error("the node's answer is not signed");
  const given = header.startsWith("v1=") ? unhex(header.slice(3)) : null;
  if (given === null || given.length !== 32) {
    throw new Error("the node's answer signature is malformed");
  }
  const text = await answerText(serverId, nonce, status, body);
  // subtle.verify compares in constant time.
  const ok = await crypto.subtle.verify(
    "HMAC",
    await hmacKey(secret, "verify"),
    given,
    enc.encode(text),
  );
  if (!ok) {
    throw new Error("the node's answer signature does not match: altered, or not from this node");
  }
}

/** Opens a `sealed` object to the secret fields it holds. */
export async function openSealed(
  secret: string,
  serverId: string,
  nonce: string,
  sealed: { scheme?: unknown; data?: unknown },
): Promise<Record<string, unknown>> {
  if (sealed.scheme !== SEAL_SCHEME) {
    throw new Error(`unknown sealing scheme ${String(sealed.scheme)}`);
  }
  if (typeof sealed.data !== "string") throw new Error("sealed data is not a string");
  const raw = Uint8Array.from(atob(sealed.data), (c) => c.charCodeAt(0));
  if (raw.length < 28) throw new Error("sealed data is too short");
  const base = await crypto.subtle.importKey("raw", enc.encode(secret), "HKDF", false, [
    "deriveKey",
  ]);
  const key = await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: enc.encode("waylume-seal-v1"), info: enc.encode(nonce) },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["decrypt"],
  );
  let plain: ArrayBuffer;
  try {
    plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: raw.slice(0, 12), additionalData: enc.encode(serverId) },
      key,
      raw.slice(12),
    );
  } catch {
    throw new Error("sealed data does not open: altered, or not for this request");
  }
  return JSON.parse(new TextDecoder().decode(plain));
}

/**
 * Reads the node's answer to a request signed with `nonce`: checks its signature, then puts the
 * sealed fields back in place. Throws on an unsigned, altered or unopenable answer.
 */
export async function readAnswer(
  secret: string,
  serverId: string,
  nonce: string,
  res: Response,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const bytes = new Uint8Array(await res.arrayBuffer());
  await verifyAnswer(
    secret,
    serverId,
    nonce,
    res.status,
    bytes,
    res.headers.get("x-waylume-signature"),
  );
  const body = JSON.parse(new TextDecoder().decode(bytes));
  if (body && typeof body === "object" && body.sealed) {
    const fields = await openSealed(secret, serverId, nonce, body.sealed);
    delete body.sealed;
    for (const f of ["private_key", "preshared_key", "config"]) {
      if (f in fields) body[f] = fields[f];
    }
  }
  return { status: res.status, body };
}

/** A node's API secret derived from the fleet master. */
export async function nodeSecret(master: string, serverId: string): Promise<string> {
  return hex(await crypto.subtle.sign("HMAC", await hmacKey(master, "sign"), enc.encode(serverId)));
}
