//! failway end to end: the real proxy, in process or as the built binary,
//! against scriptable fake upstreams, simulators, etcd and Prometheus on
//! loopback. One test binary (each one links the whole crate); its modules
//! follow `src/`. Only `tests/redaction.rs` runs apart: it installs a
//! global trace-level subscriber.

// Real sockets, real time: these measure the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

mod admin;
mod failover;
mod faults;
mod fleet;
mod harness;
mod keys;
mod metrics;
mod proxy;
mod tools;
