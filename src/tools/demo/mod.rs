//! `failway demo`: a scripted regional incident, narrated in the terminal,
//! against two local simulated Key Protect regions, in one process.
//!
//! [`start_stack`] starts a primary and a replica simulator (one-way
//! replication with a small lag, same key ids) and failway between them on
//! loopback ephemeral ports, with fast health checks and state in a
//! temporary folder. [`run`] then plays the incident step by step (normal
//! traffic, a drill that fails over and back by itself, a primary outage, detection, reads and unwraps on the replica, a
//! refused write, an operator enabling writes, a write on the replica, the
//! primary's return, failback refused over the replica-writes latch, a forced
//! failback, a final read) and checks each step against what failway
//! promises, so the demo doubles as a smoke test: it returns `Ok(false)`,
//! naming the step, when failway misbehaves. With `--interactive` it then
//! keeps everything running and prints commands to try by hand.
//!
//! Deliberately not here: anything a real deployment needs (TLS, tokens,
//! `[[rewrite]]` of duplicated key ids, fleet mode). The demo shows the
//! failover model, not a production setup.
// The demo narrates wall-clock time as it passes.
#![allow(clippy::disallowed_methods)]

mod client;
mod drill;
mod interactive;
mod keys;
mod narrator;
mod scenario;
mod stack;
mod steps;

use std::io::IsTerminal;

pub use client::{Http, Reply, RequestError};
pub use stack::{start_stack, Stack, DEMO_TOKEN, REPLICATION_LAG};

use crate::config::ConfigErrors;
use crate::telemetry::LogFormat;
use narrator::Narrator;

/// Options of `failway demo`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DemoArgs {
    /// After the scripted incident, keep both regions and failway running and
    /// print ready-to-paste commands (curl, failway ctl, faults) until Ctrl-C.
    #[arg(long)]
    pub interactive: bool,
    /// No pauses between steps (for scripts and CI).
    #[arg(long)]
    pub fast: bool,
}

/// Why the demo could not be set up (a misbehaving step is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the {region} simulator: {source}")]
    Simulator {
        region: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the demo configuration is invalid:\n{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot start failway: {0}")]
    Start(#[from] crate::app::StartError),
    #[error("cannot create a state folder for the demo: {0}")]
    StateDir(#[source] std::io::Error),
    #[error("cannot listen for Ctrl-C: {0}")]
    Signal(#[source] std::io::Error),
    #[error("the regions were not probed healthy within {0:?}")]
    NotReady(std::time::Duration),
}

/// Logging for the demo: failway's own events stay at `warn` (unless
/// `RUST_LOG` says otherwise) so the narration on stdout stays readable.
pub fn init_logging(format: LogFormat) {
    crate::telemetry::init_with_default(format, "warn");
}

/// Whether to colour stdout: only a terminal, and never with `NO_COLOR` set.
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Runs the scripted incident; returns whether every step behaved as
/// expected. With `interactive`, then waits for Ctrl-C before stopping.
pub async fn run(args: DemoArgs) -> Result<bool, DemoError> {
    let narrator = Narrator::new(colour());
    narrator.say("starting a primary region, a replica region and failway on 127.0.0.1");
    let stack = start_stack().await?;
    narrator.say(&format!(
        "primary  http://{}   (control http://{})",
        stack.primary.addr(),
        stack.primary.control_addr()
    ));
    narrator.say(&format!(
        "replica  http://{}   (control http://{}; replication lag {:?})",
        stack.replica.addr(),
        stack.replica.control_addr(),
        REPLICATION_LAG
    ));
    narrator.say(&format!(
        "failway  {}   (admin {})",
        stack.proxy_url(),
        stack.admin_url()
    ));
    narrator.ok("both regions probed healthy; mode primary");
    let passed = scenario::play(&stack, &narrator, args.fast).await;
    let waited = if args.interactive {
        interactive::keep_running(&stack, &narrator).await
    } else {
        Ok(())
    };
    stack.stop().await;
    waited.map(|()| passed)
}
