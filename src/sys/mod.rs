//! Everything that touches the operating system.
pub mod capture;
pub mod dataplane;
pub mod durable;
pub mod fake;
pub mod flows;
pub mod link;
pub mod nft;
pub mod policy;
pub mod runner;
pub mod tc;
pub mod wg;
