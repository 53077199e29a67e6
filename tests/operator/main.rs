//! What the operator reads: `peers …` against the node's real API routes (served in-process on
//! loopback, with the in-memory WireGuard), as a table through a pseudo-terminal and as JSON
//! through a pipe; QR codes and config files for new peers; completions and the manual page.
//! None of these needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod docs;
mod peers;
