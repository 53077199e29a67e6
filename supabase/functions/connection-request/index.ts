// Supabase Edge Function entry point: `supabase functions deploy connection-request`.
// Secrets: `supabase secrets set WAYLUME_API_SECRET=...` (and WAYLUME_API_SCHEME=https when the
// node APIs are behind TLS). With per-node secrets, WAYLUME_API_MASTER holds the fleet master
// instead, and each node's secret is derived from it. SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are provided by Supabase.
// verify_jwt is off (supabase/config.toml): every request's user token is checked here with
// auth.getUser, which works with both legacy and new JWT signing keys.
/// <reference types="@supabase/functions-js/src/edge-runtime.d.ts" />
import { createClient } from "@supabase/supabase-js";
import { fleetFrom, makeHandler } from "./handler.ts";

function required(name: string): string {
  const v = Deno.env.get(name);
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const supabase = createClient(
  required("SUPABASE_URL"),
  required("SUPABASE_SERVICE_ROLE_KEY"),
  { auth: { persistSession: false, autoRefreshToken: false } },
);

const handler = makeHandler({
  fleet: fleetFrom(supabase),
  apiSecret: Deno.env.get("WAYLUME_API_MASTER") ?? required("WAYLUME_API_SECRET"),
  apiSecretIsMaster: Deno.env.has("WAYLUME_API_MASTER"),
  apiScheme: Deno.env.get("WAYLUME_API_SCHEME") ?? "http",
  userId: async (jwt) => {
    const { data, error } = await supabase.auth.getUser(jwt);
    return error || !data.user ? null : data.user.id;
  },
});

// On Supabase the runtime picks the port; PORT is for running it locally and in tests.
const port = Deno.env.get("PORT");
Deno.serve(port ? { port: Number(port), hostname: "127.0.0.1" } : {}, handler);
