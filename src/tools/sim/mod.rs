//! `failway sim`: a local, Key Protect-compatible region simulator, to
//! rehearse failover without a cloud account.
//!
//! It serves the subset of `/api/v2/keys` that applications use: create and
//! import, get, metadata, list (and `HEAD` for `Key-Total`), delete and
//! restore, versions, aliases, and the actions wrap, unwrap, rewrap, rotate,
//! enable and disable, in both the `/actions/NAME` and legacy `?action=NAME`
//! forms. Wrapping is real AES-256-GCM (`crypto`), so a ciphertext only
//! unwraps where the key material is. Errors use Key Protect's error JSON
//! (`error`). Every request needs `bluemix-instance` (the `--instance` the
//! region serves) and `Authorization: Bearer` (any token, or exactly
//! `--token`).
//!
//! Two simulators make a primary and a replica: `--replicate-to` pushes
//! every key change of the primary, after `--replication-lag`, to the
//! replica's control port (`replicate`), keeping key ids as Key Protect's
//! cross-region plan does, or giving the copies ids of their own with
//! `--remap-ids` ([`remapped_id`]) to rehearse duplicated keys and
//! `[[rewrite]]`. `--read-only` makes a region refuse writes itself.
//!
//! Faults (outage, hang, 503 with or without `Retry-After`, latency, reset
//! after N bytes) are switched on the control port or through
//! [`Simulator::faults`]; see `listener` for how each behaves.
//!
//! Keys live in memory unless `--state FILE` keeps them across restarts
//! (`saved`). Deliberately not simulated: TLS, IAM,
//! key rings, policies, registrations, import tokens, dual authorization,
//! purge and the one-rotation-per-hour limit. Ciphertexts are not
//! interchangeable with the real service's.

mod actions;
mod api;
mod control;
mod crypto;
mod error;
mod faults;
mod ids;
mod key;
mod listener;
mod region;
mod render;
mod replicate;
mod saved;
mod store;
mod wrap;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::{FaultControl, Faults};
pub use ids::remapped_id;
pub use region::Stats;

use region::Region;

/// The `bluemix-instance` a simulator serves unless `--instance` says
/// otherwise.
pub const DEFAULT_INSTANCE: &str = "5f1e6c0a-7a11-4b5e-8a43-9d0e0c551f0a";

/// Options of `failway sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address of the simulated Key Protect API.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// Address of the control port (faults, stats, replication inlet);
    /// loopback only.
    #[arg(long, default_value = "127.0.0.1:18090")]
    pub control: SocketAddr,
    /// The `bluemix-instance` this region serves; other instances get 401.
    #[arg(long, value_name = "GUID", default_value = DEFAULT_INSTANCE)]
    pub instance: String,
    /// Accept only `Authorization: Bearer <TOKEN>` (default: any bearer token).
    #[arg(long)]
    pub token: Option<String>,
    /// Replicate key changes to the replica simulator whose control port
    /// this URL names: the replica's `--control` (it cannot share the
    /// primary's default 127.0.0.1:18090 on one machine, so e.g. start it
    /// with `--listen 127.0.0.1:18081 --control 127.0.0.1:18091` and pass
    /// http://127.0.0.1:18091 here).
    #[arg(long, value_name = "URL")]
    pub replicate_to: Option<String>,
    /// Delay before a change is sent to the replica.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub replication_lag: Duration,
    /// As a replica: store replicated keys under ids of their own.
    #[arg(long)]
    pub remap_ids: bool,
    /// Refuse writes (409 READ_ONLY_REGION_ERR); replication still applies.
    #[arg(long)]
    pub read_only: bool,
    /// Label for logs and CRNs.
    #[arg(long, default_value = "region")]
    pub name: String,
    /// Keep the keys in FILE across restarts (JSON, key material included;
    /// written owner-only after every change). Default: in memory only.
    #[arg(long, value_name = "FILE")]
    pub state: Option<std::path::PathBuf>,
}

impl SimArgs {
    /// The defaults, with both ports ephemeral on 127.0.0.1 (for tests).
    pub fn ephemeral(name: &str) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        SimArgs {
            listen: any,
            control: any,
            instance: DEFAULT_INSTANCE.to_owned(),
            token: None,
            replicate_to: None,
            replication_lag: Duration::ZERO,
            remap_ids: false,
            read_only: false,
            name: name.to_owned(),
            state: None,
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A running simulator; [`Simulator::stop`] (or dropping it) ends it.
pub struct Simulator {
    addr: SocketAddr,
    control_addr: SocketAddr,
    faults: FaultControl,
    region: Arc<Region>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Binds both ports and starts serving.
    pub async fn start(args: SimArgs) -> io::Result<Simulator> {
        if !args.control.ip().is_loopback() {
            return Err(invalid(format!(
                "--control {} must be a loopback address: the control port has no authentication",
                args.control
            )));
        }
        if let Some(url) = &args.replicate_to {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| invalid(format!("--replicate-to {url:?}: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(invalid(format!(
                    "--replicate-to {url:?}: expected http://HOST:PORT of the replica's control port"
                )));
            }
        }
        let control = TcpListener::bind(args.control).await?;
        let api = TcpListener::bind(args.listen).await?;
        let addr = api.local_addr()?;
        let control_addr = control.local_addr()?;

        let (replicator, feed) = match &args.replicate_to {
            Some(_) => {
                let (r, f) = replicate::channel();
                (Some(r), Some(f))
            }
            None => (None, None),
        };
        let region = Region::new(
            args.name.clone(),
            args.instance.clone(),
            args.token.clone(),
            args.read_only,
            args.remap_ids,
            replicator,
        );
        let region = Arc::new(match &args.state {
            Some(path) => region.with_saved(path.clone())?,
            None => region,
        });
        let faults = FaultControl::default();
        let (shutdown, stop_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(listener::serve(
                api,
                addr,
                region.clone(),
                faults.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(control::serve(
                control,
                region.clone(),
                faults.clone(),
                stop_rx,
            )),
        ];
        if let (Some(feed), Some(target)) = (feed, args.replicate_to.clone()) {
            tasks.push(tokio::spawn(replicate::run(
                feed,
                target,
                args.replication_lag,
                region.clone(),
            )));
        }
        tracing::info!(
            region = %args.name, %addr, control = %control_addr, instance = %args.instance,
            read_only = args.read_only, replicate_to = ?args.replicate_to,
            "simulator started"
        );
        Ok(Simulator {
            addr,
            control_addr,
            faults,
            region,
            shutdown,
            tasks,
        })
    }

    /// The API address (kept across outages).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The fault switches the control port also sets.
    pub fn faults(&self) -> FaultControl {
        self.faults.clone()
    }

    pub fn stats(&self) -> Stats {
        self.region.counters.snapshot()
    }

    /// Stops serving and closes both ports; unsent replication is dropped.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `failway sim`: starts a simulator, prints where it listens, and runs
/// until SIGINT or SIGTERM.
pub async fn run(args: SimArgs) -> io::Result<()> {
    let (name, instance) = (args.name.clone(), args.instance.clone());
    let sim = Simulator::start(args).await?;
    println!(
        "{name}: Key Protect API on http://{} (bluemix-instance {instance}), control on http://{}",
        sim.addr(),
        sim.control_addr()
    );
    crate::shutdown::wait_for_signal().await;
    sim.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn cli_defaults_and_durations() {
        let d = Cli::try_parse_from(["sim"]).unwrap().sim;
        assert_eq!(d.listen, SocketAddr::from(([127, 0, 0, 1], 18080)));
        assert_eq!(d.control, SocketAddr::from(([127, 0, 0, 1], 18090)));
        assert_eq!(d.instance, DEFAULT_INSTANCE);
        assert_eq!(d.replication_lag, Duration::ZERO);
        assert!(!d.read_only && !d.remap_ids && d.token.is_none());
        let a = Cli::try_parse_from([
            "sim",
            "--replicate-to",
            "http://127.0.0.1:18091",
            "--replication-lag",
            "250ms",
            "--remap-ids",
            "--read-only",
        ])
        .unwrap()
        .sim;
        assert_eq!(a.replication_lag, Duration::from_millis(250));
        assert!(a.read_only && a.remap_ids);
        assert!(Cli::try_parse_from(["sim", "--replication-lag", "soon"]).is_err());
    }

    #[tokio::test]
    async fn refuses_a_non_loopback_control_port_and_bad_replica_urls() {
        let mut args = SimArgs::ephemeral("x");
        args.control = SocketAddr::from(([0, 0, 0, 0], 0));
        let e = Simulator::start(args).await.err().expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let mut args = SimArgs::ephemeral("x");
        args.replicate_to = Some("127.0.0.1:18091".into());
        let e = Simulator::start(args).await.err().expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
