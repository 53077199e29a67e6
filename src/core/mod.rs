//! The pure core: values and decisions, no effects.
pub mod plan;
