//! The scripted incident: the steps in order, each checked, and the
//! summary. A step that does not behave as failway promises stops the
//! script (later steps depend on it) and is named in the summary.
//!
//! The step bodies live in `steps`; this file holds their order, titles,
//! the shared checks and the waits (deadline-bounded polls of `/status`).

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::client::{Http, Reply, RequestError};
use super::narrator::Narrator;
use super::stack::Stack;

/// Pause between steps so a reader can follow (not with `--fast`).
const PAUSE: Duration = Duration::from_millis(700);
/// How often `/status` is polled while waiting for a change.
const POLL: Duration = Duration::from_millis(50);

/// Why a step did not behave as expected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StepFailed(pub String);

impl From<RequestError> for StepFailed {
    fn from(e: RequestError) -> Self {
        StepFailed(e.to_string())
    }
}

/// Fails with `what()` unless `cond` holds.
pub fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), StepFailed> {
    if cond {
        Ok(())
    } else {
        Err(StepFailed(what()))
    }
}

/// Fails unless `reply` has `status` and came from `region` (`none`: failway
/// answered itself).
pub fn expect(reply: &Reply, status: u16, region: &str, what: &str) -> Result<(), StepFailed> {
    check(reply.status == status && reply.region() == region, || {
        format!(
            "{what}: expected {status} from {region}, got {} from {}: {}",
            reply.status,
            reply.region(),
            reply.text().trim()
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    NormalTraffic,
    Drill,
    DuplicateKeys,
    Outage,
    Detection,
    ReplicaReads,
    WriteRefused,
    EnableWrites,
    ReplicaWrite,
    PrimaryReturns,
    FailbackRefused,
    ForcedFailback,
    FinalRead,
}

impl Step {
    pub const ALL: [Step; 13] = [
        Step::NormalTraffic,
        Step::Drill,
        Step::DuplicateKeys,
        Step::Outage,
        Step::Detection,
        Step::ReplicaReads,
        Step::WriteRefused,
        Step::EnableWrites,
        Step::ReplicaWrite,
        Step::PrimaryReturns,
        Step::FailbackRefused,
        Step::ForcedFailback,
        Step::FinalRead,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Step::NormalTraffic => "Normal traffic through failway",
            Step::Drill => "A drill rehearses the failover and comes back by itself",
            Step::DuplicateKeys => {
                "A duplicated key rotated on the primary only is reported out of step"
            }
            Step::Outage => "The primary region goes down",
            Step::Detection => "failway detects it and fails over, read-only",
            Step::ReplicaReads => "Reads and unwraps keep working on the replica",
            Step::WriteRefused => "A write is refused while read-only",
            Step::EnableWrites => "An operator enables writes on the replica",
            Step::ReplicaWrite => "A write lands on the replica",
            Step::PrimaryReturns => "The primary region comes back",
            Step::FailbackRefused => "Automatic failback is refused: the replica took writes",
            Step::ForcedFailback => "The operator forces the failback",
            Step::FinalRead => "Traffic is back on the primary",
        }
    }
}

/// What the steps share: the stack, the client, and what earlier steps made.
pub struct Incident<'a> {
    pub stack: &'a Stack,
    pub http: Http,
    pub n: &'a Narrator,
    /// The root key created before the outage.
    pub root_id: String,
    /// The data encryption key (base64) and its ciphertext under `root_id`.
    pub dek: String,
    pub ciphertext: String,
    /// When the outage was switched on (wall clock, as `/status` is).
    pub outage_at: Option<SystemTime>,
    pub detected_in: Option<Duration>,
    /// The key created on the replica during the incident.
    pub incident_key: String,
}

impl Incident<'_> {
    /// Polls `/status` until `done` holds; returns it and how long it took.
    pub async fn wait_status(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Duration), StepFailed> {
        let started = Instant::now();
        loop {
            let reply = self.http.status().await?;
            let status = reply.json();
            if done(&status) {
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() >= within {
                return Err(StepFailed(format!(
                    "{what}: not within {within:?}; /status says mode {}, primary {}, replica {}",
                    status["mode"],
                    status["regions"]["primary"]["health"],
                    status["regions"]["replica"]["health"]
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn run(&mut self, step: Step) -> Result<(), StepFailed> {
        match step {
            Step::NormalTraffic => self.normal_traffic().await,
            Step::Drill => self.drill().await,
            Step::DuplicateKeys => self.keys_out_of_step().await,
            Step::Outage => self.outage().await,
            Step::Detection => self.detection().await,
            Step::ReplicaReads => self.replica_reads().await,
            Step::WriteRefused => self.write_refused().await,
            Step::EnableWrites => self.enable_writes().await,
            Step::ReplicaWrite => self.replica_write().await,
            Step::PrimaryReturns => self.primary_returns().await,
            Step::FailbackRefused => self.failback_refused().await,
            Step::ForcedFailback => self.forced_failback().await,
            Step::FinalRead => self.final_read().await,
        }
    }
}

/// Plays every step; returns whether all behaved as expected.
pub async fn play(stack: &Stack, n: &Narrator, fast: bool) -> bool {
    let mut incident = Incident {
        stack,
        http: stack.http(),
        n,
        root_id: String::new(),
        dek: String::new(),
        ciphertext: String::new(),
        outage_at: None,
        detected_in: None,
        incident_key: String::new(),
    };
    let total = Step::ALL.len();
    for (i, step) in Step::ALL.into_iter().enumerate() {
        n.heading(i + 1, total, step.title());
        if let Err(e) = incident.run(step).await {
            n.fail(&e.0);
            n.plain("");
            n.banner(
                &format!(
                    "Step {}/{total} ({}) did not behave as expected, after {:.1}s.",
                    i + 1,
                    step.title(),
                    n.elapsed().as_secs_f64()
                ),
                false,
            );
            return false;
        }
        if !fast && i + 1 < total {
            tokio::time::sleep(PAUSE).await;
        }
    }
    n.plain("");
    n.banner(
        &format!(
            "All {total} steps behaved as expected in {:.1}s.",
            n.elapsed().as_secs_f64()
        ),
        true,
    );
    let detected = incident
        .detected_in
        .map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()));
    for line in [
        format!("  - the outage was detected in {detected}; reads and unwraps never stopped"),
        "  - writes were refused (409) until an operator chose to accept them on the replica"
            .to_owned(),
        "  - once the replica took a write, only an operator could fail back (force)".to_owned(),
        format!(
            "  - key {} exists only on the replica: reconcile it before relying on it",
            incident.incident_key
        ),
    ] {
        n.plain(&line);
    }
    true
}
