//! The tools beside the proxy, in the same binary: `check` (loads what a
//! start loads, without starting), `ctl` (the operator's
//! client for the admin API), `sim` (a Key Protect-compatible region
//! simulator with fault controls) and `demo` (an outage played through
//! failway between two simulated regions). None of them is on the data
//! path; they use the proxy only as any client would.

pub mod check;
pub mod ctl;
pub mod demo;
pub mod sim;
