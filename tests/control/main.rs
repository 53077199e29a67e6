//! The control plane against a real PostgreSQL behind the PostgREST-compatible test server:
//! registration, heartbeats, usage, faults, the daemon feeding it, and the reference Edge
//! Function under Deno.
mod daemon;
mod edge_function;
mod fake;
mod faults;
mod register;
mod usage;
