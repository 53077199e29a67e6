//! The pure core: values and decisions, no effects.
