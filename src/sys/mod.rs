//! Everything that touches the operating system.
pub mod capture;
pub mod fake;
pub mod link;
pub mod wg;
