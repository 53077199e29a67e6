// The Waylume node API as Edge Functions call it: request signatures (HMAC-SHA256, the scheme
// the node verifies), where a node's API is, and the one call that creates a peer. Shared by
// every function under supabase/functions/ that talks to nodes.
//
// String to sign, lines joined by "\n" with no trailing newline:
//   waylume-v1, SERVER_ID, METHOD, path (with ?query when present), unix seconds, nonce,
//   lowercase hex SHA-256 of the body (its UTF-8 bytes, exactly as sent).
// Headers: x-waylume-timestamp, x-waylume-nonce (16-64 of [A-Za-z0-9_-]),
//          x-waylume-signature: "v1=" + lowercase hex HMAC.
// The node rejects timestamps more than 60 s from its clock and a nonce it has already seen.
// Its answers are signed over the request's nonce and the secrets of a create answer are sealed
// for the caller (answer.ts); `createPeer` checks and opens them before it trusts a byte.

import { nodeSecret, openSealed, verifyAnswer } from "./answer.ts";

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

/** What a function needs to know about a node to call its API (a row of the fleet view). */
export interface NodeTarget {
  id: string;
  /** host:port that clients use; its host is also the API's host. */
  endpoint: string;
  api_port: number;
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** The endpoint's host, without brackets or port. */
export function endpointHost(endpoint: string): string {
  const m = endpoint.match(/^\[([^\]]+)\]:\d+$/) ?? endpoint.match(/^([^:]+):\d+$/);
  return m ? m[1] : endpoint;
}

/**
 * Where a node's API listens, or null when it cannot be called safely: over https only a DNS
 * name can match a certificate, so a node whose endpoint is an IP address is skipped (give it
 * a name, e.g. `WAYLUME_ENDPOINT=vpn-1.example.org:51820`, with a certificate for that name).
 */
export function apiBase(node: NodeTarget, scheme: string): string | null {
  const host = endpointHost(node.endpoint);
  const isIp = IPV4.test(host) || host.includes(":");
  if (scheme === "https" && isIp) return null;
  return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${node.api_port}`;
}

export type Attempt =
  | { ok: true; status: number; peer: Record<string, unknown> }
  | { ok: false; status: number; next: boolean; reason: string };

/** Node answers are small; a larger one is cut off as it streams in. */
const MAX_ANSWER = 64 * 1024;

async function readCapped(r: Response): Promise<Uint8Array<ArrayBuffer>> {
  if (!r.body) return new Uint8Array(0);
  const reader = r.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_ANSWER) {
      await reader.cancel();
      throw new Error(`answer larger than ${MAX_ANSWER} bytes`);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}

export interface CallOptions {
  secret: string;
  /** `secret` is the fleet master: each node's own is hex(HMAC-SHA256(master, node id)). */
  master?: boolean;
  scheme: string;
  timeoutMs: number;
  now?: Date;
  fetch?: typeof fetch;
}

/**
 * `POST /api/peers`, signed. `next` says whether another node may succeed where this one did
 * not: yes for 401/403 (wrong secret, skewed clock), 404, 409 (key in use there), 429, 5xx,
 * timeouts and network errors; no for 400/422 (the request itself is wrong everywhere).
 * `reason` is for the function's log only, never for the end user.
 */
export async function createPeer(
  node: NodeTarget,
  body: string,
  opts: CallOptions,
): Promise<Attempt> {
  const base = apiBase(node, opts.scheme);
  if (!base) {
    return { ok: false, status: 0, next: true, reason: "https needs a DNS name in endpoint" };
  }
  const path = "/api/peers";
  const secret = opts.master ? await nodeSecret(opts.secret, node.id) : opts.secret;
  const headers = await signedHeaders(secret, node.id, "POST", path, body, opts.now);
  const nonce = headers["x-waylume-nonce"];
  try {
    const r = await (opts.fetch ?? fetch)(base + path, {
      method: "POST",
      headers: { ...headers, "Content-Type": "application/json" },
      body,
      signal: AbortSignal.timeout(opts.timeoutMs),
    });
    const bytes = await readCapped(r);
    // Unsigned or altered: not this node's answer to this request (or the secret is wrong).
    const signature = r.headers.get("x-waylume-signature");
    try {
      await verifyAnswer(secret, node.id, nonce, r.status, bytes, signature);
    } catch (e) {
      return { ok: false, status: r.status, next: true, reason: `answer refused: ${e}` };
    }
    const text = new TextDecoder().decode(bytes);
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch { /* not JSON: the status says enough */ }
    if (r.ok) {
      if (json.sealed && typeof json.sealed === "object") {
        try {
          Object.assign(json, await openSealed(secret, node.id, nonce, json.sealed));
        } catch (e) {
          return { ok: false, status: r.status, next: true, reason: `answer refused: ${e}` };
        }
        delete json.sealed;
      }
      return { ok: true, status: r.status, peer: json };
    }
    const err = (json.error ?? {}) as { code?: string; message?: string };
    return {
      ok: false,
      status: r.status,
      next: r.status !== 400 && r.status !== 422,
      reason: `${err.code ?? ""} ${err.message ?? text.slice(0, 200)}`.trim(),
    };
  } catch (e) {
    const timedOut = e instanceof DOMException && e.name === "TimeoutError";
    return { ok: false, status: 0, next: true, reason: timedOut ? "timed out" : String(e) };
  }
}
