//! What the failover driver tells the audit file and the hooks: each
//! transition (whatever its trigger), the replica-writes latch set or
//! cleared, drill starts and ends (with the drill report), and each
//! operator action with its outcome.

use std::time::SystemTime;

use crate::audit::{Kind, Record};

use super::drill::DrillEvent;
use super::driver::Driver;
use super::machine::{CommandOutcome, Conflict, Transition};

impl Driver {
    /// The shared record's epoch in fleet mode.
    fn epoch(&self) -> Option<u64> {
        self.fleet.as_ref().and_then(|f| f.epoch)
    }

    fn record_of(&self, kind: Kind, at: SystemTime) -> Record {
        Record {
            service: Some(self.service.clone()),
            epoch: self.epoch(),
            ..Record::new(kind, at)
        }
    }

    /// A transition applied here (or, in fleet mode, agreed by the fleet).
    pub(super) fn audit_transition(&self, t: &Transition) {
        let mut r = self.record_of(Kind::Transition, t.at);
        r.from = Some(t.from.as_str().to_owned());
        r.to = Some(t.to.as_str().to_owned());
        r.trigger = Some(t.trigger.as_str().to_owned());
        r.reason = Some(t.reason.clone());
        r.by = t.by.clone();
        self.audit.note(r);
        if t.latch_cleared {
            self.audit_latch(false, t.at);
        }
    }

    pub(super) fn audit_latch(&self, set: bool, at: SystemTime) {
        let mut r = self.record_of(Kind::Latch, at);
        r.action = Some(if set { "set" } else { "cleared" }.to_owned());
        r.reason = Some(
            if set {
                "a write was accepted by the replica: automatic failback is refused"
            } else {
                "a forced failback discarded the replica-writes latch"
            }
            .to_owned(),
        );
        self.audit.note(r);
    }

    pub(super) fn audit_drill(&self, event: &DrillEvent) {
        let (drill, action, at, report) = match event {
            DrillEvent::Started(d) => (d, "started", d.started, None),
            DrillEvent::Ended { end, report } => (
                &end.drill,
                "ended",
                end.at,
                Some(serde_json::json!({
                    "result": end.result.as_str(),
                    "replica_reads": report.replica_reads,
                    "writes_refused": report.writes_refused,
                    "errors": report.errors,
                })),
            ),
        };
        let mut r = self.record_of(Kind::Drill, at);
        r.action = Some(action.to_owned());
        r.reason = Some(drill.reason.clone());
        r.by = drill.by.clone();
        r.report = report;
        self.audit.note(r);
    }

    /// The operator action's line for `result`.
    pub(super) async fn audit_result(
        &self,
        record: Option<Record>,
        result: &Result<CommandOutcome, Conflict>,
    ) -> Result<(), crate::audit::AuditWriteError> {
        match result {
            Ok(CommandOutcome::Changed(t)) => {
                self.audit_operator(record, "accepted", Some(t)).await
            }
            Ok(CommandOutcome::NoOp) => self.audit_operator(record, "no_op", None).await,
            Ok(CommandOutcome::HoldSet) => self.audit_operator(record, "hold_set", None).await,
            Err(c) => self.audit_operator(record, c.kind.as_str(), None).await,
        }
    }

    /// The operator action's line, completed with its outcome; `Ok` once
    /// it is on disk (or when no audit file is kept).
    pub(super) async fn audit_operator(
        &self,
        record: Option<Record>,
        outcome: &str,
        transition: Option<&Transition>,
    ) -> Result<(), crate::audit::AuditWriteError> {
        let Some(mut r) = record else {
            return Ok(());
        };
        r.service = Some(self.service.clone());
        r.epoch = self.epoch();
        r.outcome = Some(outcome.to_owned());
        if let Some(t) = transition {
            r.from = Some(t.from.as_str().to_owned());
            r.to = Some(t.to.as_str().to_owned());
            r.trigger = Some(t.trigger.as_str().to_owned());
        } else {
            r.from = Some(self.machine.mode().as_str().to_owned());
        }
        self.audit.commit(vec![r]).await
    }
}
