//! failway: a failover-aware reverse proxy for regional HTTP APIs with
//! one-way replication (primary -> replica), such as IBM Key Protect.
//!
//! The modules, in the order a request meets them, each depending only on
//! those before it (no cycle: `tests/ci/module_graph.py`):
//! `region` (the two regions), `config` (typed, validated configuration),
//! `classify` (read or write), `rewrite` (region ID mapping), `retry`
//! (rules, backoff, budget), `upstream` (clients, pool, DNS, bodies),
//! `health` (probes, live-traffic detection), `failover` (the decision core,
//! its driver, persistence, fleet mode), `routing` (which region), `proxy`
//! (the inbound data path around a service), `tls`, `metrics`, `admin`,
//! `reload`, `audit` (the audit file and its records), `app` (wiring), and `tools` (ctl, sim, demo).
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub mod app;
pub mod audit;
pub mod classify;
pub mod config;
pub mod failover;
pub(crate) mod health;
pub mod hooks;
pub mod keycheck;
pub mod metrics;
pub mod proxy;
pub mod query;
pub mod region;
pub(crate) mod reload;
pub(crate) mod retry;
pub mod rewrite;
pub mod routing;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod tools;
pub mod upstream;
pub(crate) mod watched_file;

/// What the property tests share.
#[cfg(test)]
pub(crate) mod test_support {
    /// 256 cases, no failure files written into the tree.
    pub fn proptest_config() -> proptest::test_runner::Config {
        proptest::test_runner::Config {
            cases: 256,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        }
    }
}
