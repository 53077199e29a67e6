//! Everything that touches the operating system.
pub mod capture;
