//! Everything that touches the operating system.
pub mod capture;
pub mod clock;
pub mod dataplane;
pub mod durable;
pub mod fake;
pub mod flows;
pub mod inspection;
pub mod journal;
pub mod link;
pub mod nft;
pub mod notify;
pub mod pcapfile;
pub mod policy;
pub mod runner;
pub mod tc;
pub mod wg;
