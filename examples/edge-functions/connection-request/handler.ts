// Connection request: an app user asks for a VPN connection; this function picks a server from
// the fleet table, creates a peer on it through the node's signed API, and returns the client
// configuration.
import type { SupabaseClient } from "@supabase/supabase-js";
import { signedHeaders } from "./sign.ts";

/** A heartbeat older than this means the node is gone (three missed 30 s heartbeats). */
export const FRESH_MS = 90_000;
/** Servers tried per request before giving up. */
export const MAX_ATTEMPTS = 3;
const NODE_TIMEOUT_MS = 10_000;
const KEY_RE = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

export interface ServerRow {
  id: string;
  endpoint: string;
  public_ip: string | null;
  api_port: number;
  country: string | null;
  city: string | null;
  current_load: number;
  max_capacity: number;
  last_heartbeat: string;
}

export interface Deps {
  supabase: SupabaseClient;
  /** The secret the nodes verify request signatures with. */
  apiSecret: string;
  /** "https" when the node APIs sit behind TLS (recommended), else "http". */
  apiScheme: string;
  /** The user behind the request's JWT, or null. */
  userId: (jwt: string) => Promise<string | null>;
  now?: () => Date;
}

const cors = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
};

function reply(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...cors, "Content-Type": "application/json" },
  });
}

function fail(status: number, code: string, message: string): Response {
  return reply(status, { error: { code, message } });
}

/** Online servers with a fresh heartbeat and room left, least loaded (relative) first. */
export async function candidates(
  supabase: SupabaseClient,
  country: string | null,
  now: Date,
): Promise<ServerRow[]> {
  let q = supabase
    .from("waylume_servers")
    .select(
      "id, endpoint, public_ip, api_port, country, city, current_load, max_capacity, last_heartbeat",
    )
    .eq("status", "online")
    .gte("last_heartbeat", new Date(now.getTime() - FRESH_MS).toISOString());
  if (country) q = q.eq("country", country);
  const { data, error } = await q;
  if (error) throw new Error(`fleet query failed: ${error.code ?? ""} ${error.message}`);
  return (data as ServerRow[])
    .filter((s) => s.current_load < s.max_capacity)
    .sort((a, b) =>
      a.current_load / a.max_capacity - b.current_load / b.max_capacity ||
      a.id.localeCompare(b.id)
    );
}

/** Where the node's API listens: its public address, or the endpoint's host. */
export function apiBase(s: ServerRow, scheme: string): string {
  const host = s.public_ip ?? s.endpoint.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  const h = host.includes(":") ? `[${host}]` : host;
  return `${scheme}://${h}:${s.api_port}`;
}

type Attempt = { ok: true; status: number; peer: Record<string, unknown> } | {
  ok: false;
  retry: boolean;
  status: number;
  message: string;
};

async function createPeer(deps: Deps, s: ServerRow, body: string): Promise<Attempt> {
  const path = "/api/peers";
  const headers = await signedHeaders(deps.apiSecret, s.id, "POST", path, body, deps.now?.());
  try {
    const r = await fetch(apiBase(s, deps.apiScheme) + path, {
      method: "POST",
      headers: { ...headers, "Content-Type": "application/json" },
      body,
      signal: AbortSignal.timeout(NODE_TIMEOUT_MS),
    });
    const text = await r.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch { /* not JSON: keep the status */ }
    if (r.ok) return { ok: true, status: r.status, peer: json };
    const err = (json.error ?? {}) as { message?: string };
    // 503: that node is full or degraded, another may do. 5xx likewise.
    return {
      ok: false,
      retry: r.status >= 500,
      status: r.status,
      message: err.message ?? text.slice(0, 200),
    };
  } catch (e) {
    return { ok: false, retry: true, status: 0, message: String(e) };
  }
}

export function makeHandler(deps: Deps): (req: Request) => Promise<Response> {
  return async (req: Request): Promise<Response> => {
    if (req.method === "OPTIONS") return new Response("ok", { headers: cors });
    if (req.method !== "POST") return fail(405, "method", "use POST");
    const jwt = (req.headers.get("Authorization") ?? "").replace(/^Bearer\s+/i, "");
    const userId = jwt ? await deps.userId(jwt) : null;
    if (!userId) return fail(401, "auth", "sign in first");

    let input: { country?: unknown; public_key?: unknown };
    try {
      input = await req.json();
    } catch {
      input = {};
    }
    const country = typeof input.country === "string" && input.country.trim()
      ? input.country.trim()
      : null;
    const publicKey = input.public_key ?? null;
    if (publicKey !== null && (typeof publicKey !== "string" || !KEY_RE.test(publicKey))) {
      return fail(422, "public_key", "public_key must be a base64 WireGuard public key");
    }

    const now = deps.now?.() ?? new Date();
    let servers: ServerRow[];
    try {
      servers = await candidates(deps.supabase, country, now);
    } catch (e) {
      return fail(502, "fleet", String(e));
    }
    // One session id for every attempt: a node that did create the peer but whose answer was
    // lost returns the same peer when asked again.
    const sessionId = crypto.randomUUID();
    const body = JSON.stringify({
      session_id: sessionId,
      user_id: userId,
      ...(publicKey ? { public_key: publicKey } : {}),
    });
    const tried: string[] = [];
    for (const s of servers.slice(0, MAX_ATTEMPTS)) {
      const a = await createPeer(deps, s, body);
      if (a.ok) {
        return reply(200, {
          server_id: s.id,
          country: s.country,
          city: s.city,
          session_id: sessionId,
          peer: a.peer,
          config: a.peer.config,
        });
      }
      tried.push(`${s.id}: ${a.status || "unreachable"} ${a.message}`);
      console.warn(`connection-request: ${s.id} failed (${a.status}): ${a.message}`);
      if (!a.retry) {
        // The node refused this request itself (409 key in use, 422 invalid): say so.
        return fail(a.status === 401 ? 502 : a.status, "node", a.message);
      }
    }
    return fail(
      503,
      "no_server",
      tried.length
        ? `no server could take the connection (${tried.join("; ")})`
        : "no online server with room" + (country ? ` in ${country}` : ""),
    );
  };
}
