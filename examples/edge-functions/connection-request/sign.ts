// Request signatures for the node API (HMAC-SHA256), the scheme the node verifies.
//
// String to sign, lines joined by "\n" with no trailing newline:
//   waylume-v1, SERVER_ID, METHOD, path (with ?query when present), unix seconds, nonce,
//   lowercase hex SHA-256 of the body (its UTF-8 bytes, exactly as sent).
// Headers: x-waylume-timestamp, x-waylume-nonce (16-64 of [A-Za-z0-9_-]),
//          x-waylume-signature: "v1=" + lowercase hex HMAC.
// The node rejects timestamps more than 60 s from its clock and a nonce it has already seen.

const enc = new TextEncoder();

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function signature(
  secret: string,
  serverId: string,
  method: string,
  pathAndQuery: string,
  body: string,
  timestamp: number,
  nonce: string,
): Promise<string> {
  const bodyHash = hex(await crypto.subtle.digest("SHA-256", enc.encode(body)));
  const text = [
    "waylume-v1",
    serverId,
    method.toUpperCase(),
    pathAndQuery,
    String(timestamp),
    nonce,
    bodyHash,
  ].join("\n");
  const key = await crypto.subtle.importKey(
    "raw",
    enc.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return "v1=" + hex(await crypto.subtle.sign("HMAC", key, enc.encode(text)));
}

/** The three headers for one request; a fresh nonce each time. */
export async function signedHeaders(
  secret: string,
  serverId: string,
  method: string,
  pathAndQuery: string,
  body: string,
  now: Date = new Date(),
): Promise<Record<string, string>> {
  const timestamp = Math.floor(now.getTime() / 1000);
  const nonce = hex(crypto.getRandomValues(new Uint8Array(16)).buffer);
  return {
    "x-waylume-timestamp": String(timestamp),
    "x-waylume-nonce": nonce,
    "x-waylume-signature": await signature(
      secret,
      serverId,
      method,
      pathAndQuery,
      body,
      timestamp,
      nonce,
    ),
  };
}
