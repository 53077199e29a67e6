//! Waylume Server: a self-managing WireGuard VPN node.
//!
//! `core` is pure (no sockets, processes or clock); `sys` is the only code that touches the OS;
//! `app` wires the real adapters together.
pub mod config;
pub mod core;
pub mod reconcile;
pub mod sys;
