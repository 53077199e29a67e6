//! Test helpers shared by `tests/{api,control,classify,lab}` and the benches.
pub mod control;
pub mod netns;
pub mod node;
pub mod packets;
pub mod tunnels;
