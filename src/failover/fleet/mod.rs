//! Fleet mode's etcd side: one shared failover record for every instance,
//! changed only by compare-and-swap on its epoch, plus a per-instance report
//! kept alive by the instance's own lease.
//!
//! Layout in etcd, for `fleet.key = K`:
//! - `K`: the [`FleetRecord`] (JSON, not tied to any lease, so it outlives
//!   every instance);
//! - `K/instances/<instance_id>`: each instance's [`InstanceReport`] (JSON),
//!   put with that instance's lease, so it vanishes `lease_ttl` after the
//!   instance stops renewing.
//!
//! [`Fleet`] connects, keeps its lease alive, and follows the record with an
//! etcd watch; it reconnects on its own and never fails because etcd is
//! down. While etcd is unreachable it keeps the last record it saw.
//!
//! What it deliberately does not do: decide. Which transition to attempt,
//! counting reports against `fleet.failover_quorum`, and refusing writes when
//! [`Fleet::lease_alive`] turns false are the failover driver's job; this
//! module only tells it what the fleet agreed on and lets it propose changes.
//! etcd is reached through its v3 JSON gateway (`client.rs`), with
//! optional authentication (`fleet.username`, `fleet.password_file`) and TLS
//! (`fleet.tls`: a CA and a client certificate; `https` endpoints are
//! verified against the system's roots plus that CA).

mod client;
pub(crate) use client::parse_endpoints;
mod etcd;
mod metrics;
mod record;
mod shared;
mod tasks;

pub use self::client::EtcdError;
pub use self::etcd::{Fleet, FleetStatus};
pub use self::metrics::{CasResult, FleetMetrics};
pub use self::record::{unix_ms, CasOutcome, FleetRecord, InstanceReport, RecordError};

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The `[fleet]` section cannot be used as given.
    #[error("{key}: {message}")]
    Config {
        key: &'static str,
        message: &'static str,
    },
    /// The TLS files for etcd cannot be used.
    #[error("fleet: cannot set up the etcd client: {0}")]
    Client(#[source] crate::upstream::client::ClientError),
    /// etcd answered with an error, or the connection failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// etcd did not answer in time.
    #[error("etcd did not answer {op} within {timeout:?}")]
    Timeout {
        op: &'static str,
        timeout: std::time::Duration,
    },
    /// The value stored under `key` is not readable by this build.
    #[error("etcd key {key:?} holds an unreadable value")]
    BadValue {
        key: String,
        #[source]
        source: RecordError,
    },
    #[error("cannot encode the value for etcd")]
    Encode(#[from] serde_json::Error),
    /// This instance holds no lease right now (etcd unreachable, or the lease
    /// lapsed and is being renewed); the report is kept and put once it does.
    #[error("no etcd lease held right now")]
    NoLease,
    /// The stored epoch is at its maximum and cannot grow.
    #[error("fleet epoch {0} cannot grow")]
    EpochExhausted(u64),
    /// A watch or keep-alive stream ended; used internally to reconnect.
    #[error("etcd {0} stream ended")]
    StreamEnded(&'static str),
    /// The lease expired at etcd; used internally to grant a new one.
    #[error("etcd lease expired")]
    LeaseExpired,
}

/// The instance ID used when `fleet.instance_id` is unset: `$POD_NAME` when
/// set (a Kubernetes pod), else `<hostname>:<admin port>`, so two instances
/// on one host differ.
pub fn default_instance_id(admin_port: u16) -> String {
    if let Ok(pod) = std::env::var("POD_NAME") {
        let pod = pod.trim();
        if !pod.is_empty() {
            return pod.to_owned();
        }
    }
    format!("{}:{admin_port}", hostname())
}

fn hostname() -> String {
    let from_file = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_id_names_host_and_port_without_pod_name() {
        // POD_NAME is read at call time; only assert the shape that holds
        // either way.
        let id = super::default_instance_id(9901);
        match std::env::var("POD_NAME") {
            Ok(pod) if !pod.trim().is_empty() => assert_eq!(id, pod.trim()),
            _ => {
                assert!(id.ends_with(":9901"), "{id}");
                assert!(id.len() > ":9901".len(), "{id}");
            }
        }
    }
}
