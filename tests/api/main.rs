//! The daemon through its front doors without privileges: the API's real routes in-process
//! with the in-memory WireGuard, and the binary's own entry points.
mod cli;
mod hostile;
mod pages;
mod peers;
mod reconcile;
mod removal;
