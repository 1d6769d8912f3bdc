//! The demo's stack: a primary and a replica simulator (one-way
//! replication, same key ids) and failway between them, all on loopback
//! ephemeral ports, with a configuration built here rather than read from a
//! file.
//!
//! Health checks are fast (a region is judged down after two failed probes
//! 500 ms apart) so the incident plays in seconds; `read_only_window =
//! "never"` leaves enabling writes to the operator, the step the demo shows.
//! State lives in a fresh temporary folder, removed when the stack stops.
//! End-to-end tests reuse [`start_stack`] to put real clients in front of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::app::Running;
use crate::config::Config;
use crate::failover::machine::Health;
use crate::tools::sim::{SimArgs, Simulator, DEFAULT_INSTANCE};

use super::client::Http;
use super::DemoError;

/// The bearer token the demo's clients send (the simulators take any).
pub const DEMO_TOKEN: &str = "demo-token";
/// How long the primary waits before pushing a change to the replica.
pub const REPLICATION_LAG: Duration = Duration::from_millis(200);
/// `failover.failback_after` of the demo configuration.
pub const FAILBACK_AFTER: Duration = Duration::from_secs(2);
/// How long both regions may take to be probed healthy at start.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// Two simulated regions and failway in front of them.
pub struct Stack {
    pub primary: Simulator,
    pub replica: Simulator,
    pub failway: Running,
    /// The `bluemix-instance` both regions serve.
    pub instance: String,
    state_dir: StateDir,
}

/// A temporary folder for failway's state file, removed on drop.
struct StateDir(PathBuf);

impl StateDir {
    fn create() -> std::io::Result<StateDir> {
        let path = std::env::temp_dir().join(format!(
            "failway-demo-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir(&path)?;
        Ok(StateDir(path))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TOML string literal (quoted and escaped).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The demo configuration for failway between `primary` and `replica`.
pub fn demo_config(
    primary: &str,
    replica: &str,
    instance: &str,
    state_dir: &Path,
) -> Result<Config, DemoError> {
    let state = state_dir.join("state.json");
    let token_file = state_dir.join("kp-token");
    std::fs::write(&token_file, DEMO_TOKEN).map_err(DemoError::StateDir)?;
    let text = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
max_connections = 256
shutdown_grace = "2s"

[admin]
listen = "127.0.0.1:0"

[upstreams.primary]
url = {primary}

[upstreams.replica]
url = {replica}

[health]
path = "/api/v2/keys?limit=1"
interval = "500ms"
timeout = "300ms"
unhealthy_threshold = 2
healthy_threshold = 2
headers = {{ "bluemix-instance" = {instance}, "authorization" = {auth} }}

[failover]
read_only_window = "never"
failback_after = "{failback_after}s"

[state]
path = {state}

[classify]
profile = "key-protect"

[[key_pairs]]
name = {pair}
primary = {pair_primary}
replica = {pair_replica}

[key_check]
# The demo's step runs the check itself (keys verify).
interval = "1h"
authorization_file = {token_file}
"#,
        primary = quoted(primary),
        replica = quoted(replica),
        instance = quoted(instance),
        auth = quoted(&format!("Bearer {DEMO_TOKEN}")),
        failback_after = FAILBACK_AFTER.as_secs(),
        state = quoted(&state.to_string_lossy()),
        pair = quoted(super::keys::PAIR),
        pair_primary = quoted(super::keys::PRIMARY_ALIAS),
        pair_replica = quoted(super::keys::REPLICA_ALIAS),
        token_file = quoted(&token_file.to_string_lossy()),
    );
    Ok(Config::from_toml_str(&text, state_dir)?)
}

/// Starts the replica, then the primary replicating to it, then failway,
/// and waits until failway has probed both regions healthy.
pub async fn start_stack() -> Result<Stack, DemoError> {
    let replica = Simulator::start(SimArgs::ephemeral("replica"))
        .await
        .map_err(|source| DemoError::Simulator {
            region: "replica",
            source,
        })?;
    let mut args = SimArgs::ephemeral("primary");
    args.replicate_to = Some(format!("http://{}", replica.control_addr()));
    args.replication_lag = REPLICATION_LAG;
    let primary = Simulator::start(args)
        .await
        .map_err(|source| DemoError::Simulator {
            region: "primary",
            source,
        })?;
    let state_dir = StateDir::create().map_err(DemoError::StateDir)?;
    let config = demo_config(
        &format!("http://{}", primary.addr()),
        &format!("http://{}", replica.addr()),
        DEFAULT_INSTANCE,
        &state_dir.0,
    )?;
    let failway = crate::app::start(config).await?;
    let stack = Stack {
        primary,
        replica,
        failway,
        instance: DEFAULT_INSTANCE.to_owned(),
        state_dir,
    };
    let deadline = tokio::time::Instant::now() + READY_DEADLINE;
    while !stack.both_healthy() {
        if tokio::time::Instant::now() >= deadline {
            stack.stop().await;
            return Err(DemoError::NotReady(READY_DEADLINE));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(stack)
}

impl Stack {
    fn both_healthy(&self) -> bool {
        let snap = self.failway.failover.snapshot();
        snap.regions.iter().all(|r| r.health == Health::Healthy)
    }

    /// failway's proxy listener, e.g. `http://127.0.0.1:40123`.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.failway.proxy_addr)
    }

    /// failway's admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.failway.admin_addr)
    }

    /// The primary simulator's control port (faults).
    pub fn primary_control_url(&self) -> String {
        format!("http://{}", self.primary.control_addr())
    }

    /// The replica simulator's control port.
    pub fn replica_control_url(&self) -> String {
        format!("http://{}", self.replica.control_addr())
    }

    /// Where failway persists its state.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir.0
    }

    /// A client for this stack's failway.
    pub fn http(&self) -> Http {
        Http::new(
            self.proxy_url(),
            self.admin_url(),
            self.instance.clone(),
            DEMO_TOKEN.to_owned(),
        )
    }

    /// Stops failway, then both simulators, and removes the state folder.
    pub async fn stop(self) {
        let Stack {
            primary,
            replica,
            failway,
            state_dir,
            ..
        } = self;
        failway.shutdown().await;
        primary.stop().await;
        replica.stop().await;
        drop(state_dir);
    }
}
