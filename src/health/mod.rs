//! Region health: deciding whether the primary and the replica serve.
//!
//! Two signals feed the failover machine: active probes, judged by
//! consecutive-count thresholds ([`counter`]), and live traffic, judged by an
//! error ratio over a sliding window ([`passive`]). Both cores are pure (time
//! is passed in); the tasks that probe and observe own them.

pub mod counter;
pub mod passive;
