//! The pure core: values and decisions, no effects.
pub mod answer;
pub mod auth;
pub mod backoff;
pub mod classify;
pub mod clientconf;
pub mod lifetime;
pub mod packet;
pub mod peer;
pub mod plan;
pub mod pool;
pub mod registry;
pub mod seal;
