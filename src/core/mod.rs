//! The pure core: values and decisions, no effects.
pub mod classify;
pub mod packet;
