// Connection request: an app user asks for a VPN connection; this function picks a node from
// the fleet's `waylume_available_servers` view, creates a peer on it through the node's signed
// API, and returns the client configuration. A node that refuses or fails is skipped for the
// next one; the user never sees which nodes were tried or why.
import type { SupabaseClient } from "@supabase/supabase-js";
import { type Attempt, createPeer, type NodeTarget } from "../_shared/waylume-api.ts";

/** Nodes tried per request before giving up. */
export const MAX_ATTEMPTS = 3;
const NODE_TIMEOUT_MS = 10_000;
const KEY_RE = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** A row of `waylume_available_servers`: online, fresh, below capacity, not drained. */
export interface ServerRow extends NodeTarget {
  country: string | null;
  city: string | null;
  peer_count: number;
  max_capacity: number;
}

export interface Deps {
  /** Available nodes, optionally in one country. */
  fleet: (country: string | null) => Promise<ServerRow[]>;
  /** The secret the nodes verify request signatures with (or the fleet master, see below). */
  apiSecret: string;
  /** `apiSecret` is the fleet master; each node's secret is derived from it. */
  apiSecretIsMaster?: boolean;
  /** "https" when the node APIs sit behind TLS (recommended), else "http". */
  apiScheme: string;
  /** The user behind the request's JWT, or null. */
  userId: (jwt: string) => Promise<string | null>;
  now?: () => Date;
  /** In [0, 1); tests fix it. */
  random?: () => number;
  fetch?: typeof fetch;
}

/** The fleet view through PostgREST with the service key. */
export function fleetFrom(supabase: SupabaseClient): Deps["fleet"] {
  return async (country) => {
    let q = supabase
      .from("waylume_available_servers")
      .select("id, endpoint, api_port, country, city, peer_count, max_capacity");
    if (country) q = q.eq("country", country);
    const { data, error } = await q;
    if (error) throw new Error(`fleet query failed: ${error.code ?? ""} ${error.message}`);
    return data as ServerRow[];
  };
}

/**
 * The order to try nodes in: drawn at random, weighted by free slots (max_capacity −
 * peer_count). Peer counts reach the table only with each heartbeat, so "least loaded first"
 * would send a whole burst of requests to the same node; weighting spreads it in proportion to
 * the room each node has.
 */
export function order(servers: ServerRow[], random: () => number): ServerRow[] {
  const pool = servers
    .map((s) => ({ s, w: Math.max(0, s.max_capacity - s.peer_count) }))
    .filter((x) => x.w > 0);
  const out: ServerRow[] = [];
  while (pool.length) {
    const total = pool.reduce((a, x) => a + x.w, 0);
    let r = random() * total;
    let i = 0;
    while (i < pool.length - 1 && r >= pool[i].w) {
      r -= pool[i].w;
      i++;
    }
    out.push(pool[i].s);
    pool.splice(i, 1);
  }
  return out;
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

/** What the user gets of the node's answer: the config and the peer's own identifiers. */
function peerView(peer: Record<string, unknown>) {
  const keep = ["peer_id", "public_key", "address", "address_v6", "expires_at"];
  return Object.fromEntries(Object.entries(peer).filter(([k]) => keep.includes(k)));
}

export function makeHandler(deps: Deps): (req: Request) => Promise<Response> {
  const random = deps.random ?? Math.random;
  return async (req: Request): Promise<Response> => {
    if (req.method === "OPTIONS") return new Response("ok", { headers: cors });
    if (req.method !== "POST") return fail(405, "method", "use POST");
    const jwt = (req.headers.get("Authorization") ?? "").replace(/^Bearer\s+/i, "");
    const userId = jwt ? await deps.userId(jwt).catch(() => null) : null;
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

    let servers: ServerRow[];
    try {
      servers = order(await deps.fleet(country), random);
    } catch (e) {
      console.error(`connection-request: ${e}`);
      return fail(503, "unavailable", "the service is unavailable; try again shortly");
    }
    // One session id for every attempt: a node that did create the peer but whose answer was
    // lost returns the same peer when asked again.
    const sessionId = crypto.randomUUID();
    const body = JSON.stringify({
      session_id: sessionId,
      user_id: userId,
      ...(publicKey ? { public_key: publicKey } : {}),
    });
    let attempts = 0;
    for (const s of servers) {
      if (attempts >= MAX_ATTEMPTS) break;
      attempts++;
      const a: Attempt = await createPeer(s, body, {
        secret: deps.apiSecret,
        master: deps.apiSecretIsMaster,
        scheme: deps.apiScheme,
        timeoutMs: NODE_TIMEOUT_MS,
        now: deps.now?.(),
        fetch: deps.fetch,
      });
      if (a.ok) {
        return reply(200, {
          server_id: s.id,
          country: s.country,
          city: s.city,
          session_id: sessionId,
          config: a.peer.config,
          peer: peerView(a.peer),
        });
      }
      // Details for the operator's function log; the user gets none of them.
      console.warn(
        `connection-request: node ${s.id} failed (${a.status || "no answer"}): ${a.reason}`,
      );
      if (!a.next) {
        return fail(502, "node", "the connection could not be set up");
      }
    }
    return fail(
      503,
      "no_server",
      "no server can take the connection right now" + (country ? ` in ${country}` : ""),
    );
  };
}
