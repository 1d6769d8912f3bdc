//! failway: a failover-aware reverse proxy for regional HTTP APIs with
//! one-way replication (primary -> replica), such as IBM Key Protect.
//!
//! The crate is laid out along the request path; see `STYLE.md`-style layout:
//! `config` (typed, validated configuration), `proxy` (the data path),
//! `classify` (read or write), `routing` (which region), `retry`,
//! `health` and `failover` (the decision cores), `metrics`, `admin`, `app`
//! (wiring).
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod classify;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod failover;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod region;
pub mod reload;
pub mod retry;
pub mod rewrite;
pub mod routing;
pub mod shutdown;
pub mod sim;
pub mod telemetry;
pub mod tls;
pub mod upstream;
