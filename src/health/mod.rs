//! Region health: deciding whether the primary and the replica serve.
//!
//! Two signals feed the failover machine: active probes ([`probe`], run by
//! the [`prober`] tasks and judged by consecutive-count thresholds in
//! [`counter`], which the failover driver owns), and live traffic, judged by
//! an error ratio over a sliding window ([`passive`]).

pub mod counter;
pub mod passive;
pub mod probe;
pub mod prober;

pub use prober::ProbeReport;
