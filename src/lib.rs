//! Waylume Server: a self-managing WireGuard VPN node.
//!
//! `core` is pure (no sockets, processes or clock); `sys` is the only code that touches the OS;
//! `app` wires the real adapters together.
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod core;
pub mod node;
pub mod progress;
pub mod store;
pub mod sys;
