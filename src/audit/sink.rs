//! Where every audited event goes: one ordered queue, drained by one task
//! that appends each record to the audit file (when `[audit] path` is set)
//! and then offers it to the hooks. Automatic events are queued and never
//! wait; an operator action awaits its record's fsync before it is
//! answered, and a record that could not be written is not offered to the
//! hooks (the action is taken back).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{AuditLog, AuditWriteError, Kind, Record};
use crate::config::HookEvent;
use crate::hooks::Hooks;

type Ack = oneshot::Sender<Result<(), AuditWriteError>>;

/// A cheap, cloneable handle on the audit queue.
#[derive(Clone)]
pub struct Sink {
    tx: Option<mpsc::UnboundedSender<(Record, Option<Ack>)>>,
    log: Option<Arc<AuditLog>>,
}

fn hook_event(kind: Kind) -> HookEvent {
    match kind {
        Kind::Transition => HookEvent::Transition,
        Kind::Operator => HookEvent::Operator,
        Kind::Drill => HookEvent::Drill,
        Kind::Latch => HookEvent::Latch,
        Kind::Reload => HookEvent::Reload,
    }
}

impl Sink {
    /// Records nowhere (tests, tools).
    pub fn none() -> Sink {
        Sink {
            tx: None,
            log: None,
        }
    }

    /// Starts the writer task; without an audit file and without hooks,
    /// records go nowhere.
    pub fn start(log: Option<AuditLog>, hooks: Hooks) -> Sink {
        if log.is_none() && hooks.is_empty() {
            return Sink::none();
        }
        let log = log.map(Arc::new);
        let (tx, mut rx) = mpsc::unbounded_channel::<(Record, Option<Ack>)>();
        let writer = log.clone();
        tokio::spawn(async move {
            while let Some((record, ack)) = rx.recv().await {
                let written = match &writer {
                    Some(log) => log.write(record.clone()).await,
                    None => Ok(()),
                };
                match (&written, ack.is_some()) {
                    // An operator action without a record is taken back:
                    // nothing to tell the hooks.
                    (Err(_), true) => {}
                    (Err(e), false) => {
                        tracing::error!(error = %e, kind = ?record.kind, "audit record not written (the event itself went ahead)");
                        hooks.offer(hook_event(record.kind), &json(&record));
                    }
                    (Ok(()), _) => hooks.offer(hook_event(record.kind), &json(&record)),
                }
                if let Some(ack) = ack {
                    let _ = ack.send(written);
                }
            }
        });
        Sink { tx: Some(tx), log }
    }

    /// Whether an audit file is kept (operator actions then need it).
    pub fn has_file(&self) -> bool {
        self.log.is_some()
    }

    /// The audit file, for `GET /history`.
    pub fn log(&self) -> Option<&Arc<AuditLog>> {
        self.log.as_ref()
    }

    /// Whether the audit file can be written now (always, without one).
    pub fn check(&self) -> Result<(), AuditWriteError> {
        self.log.as_ref().map_or(Ok(()), |log| log.check())
    }

    /// Queues an automatic event; never waits.
    pub fn note(&self, record: Record) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((record, None));
        }
    }

    /// Queues `records` and waits until they are on disk (in order, after
    /// everything queued before them); the first failure is returned.
    pub async fn commit(&self, records: Vec<Record>) -> Result<(), AuditWriteError> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let mut acks = Vec::new();
        for record in records {
            let (ack, done) = oneshot::channel();
            if tx.send((record, Some(ack))).is_ok() {
                acks.push(done);
            }
        }
        let mut result = Ok(());
        for done in acks {
            if let Ok(Err(e)) = done.await {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }
}

fn json(record: &Record) -> serde_json::Value {
    serde_json::to_value(record).unwrap_or(serde_json::Value::Null)
}
