//! The control plane against a real PostgreSQL behind the PostgREST-compatible test server:
//! registration, heartbeats, usage, faults, the daemon feeding it, and the connection-request
//! Edge Function under Deno.
mod daemon;
mod edge_function;
mod fake;
mod faults;
mod migration;
mod outbox;
mod register;
mod usage;
