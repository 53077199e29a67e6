//! The operator's tools: the signed client for the node API (`peers …`) and the offline
//! classifier (`inspect`).
pub mod client;
pub mod inspect;
mod output;
mod peers;
pub mod qr;
pub mod table;

pub use client::Target;
pub use peers::{PeersCmd, peers};
