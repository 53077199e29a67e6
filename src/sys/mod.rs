//! Everything that touches the operating system.
pub mod dataplane;
pub mod nft;
pub mod runner;
pub mod tc;
