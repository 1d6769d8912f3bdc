//! Operator actions in fleet mode (docs/design.md §1): an action sent to any
//! instance changes the shared record, whatever that instance's own probes
//! make of the regions.
//!
//! The action applies to the record as stored (read from etcd first, not
//! taken from a watch that may lag), never to a local change the fleet has
//! not agreed on: an instance whose probes see the primary healthy keeps
//! proposing a failback that the fleet holds back while another instance
//! sees the primary down, and that proposal is no base for an operator's
//! `enable-writes`. The action alone goes into one compare-and-swap; what
//! it makes possible locally (a failback, the read-only window) is left to
//! the next `reconcile`, under the fleet's rules for automatic changes.
//! Lost to another instance's change, the action is applied again to the
//! winner's record. Each failure names its cause: etcd unreachable, a lapsed
//! lease, an error etcd answered, or other instances changing the record
//! first every time.
//!
//! What it deliberately does not do: change the record without a live
//! lease, or relax any rule for automatic changes.

use super::driver::{CommandError, Driver};
use super::fleet_sync::NotStored;
use super::machine::{Command, CommandOutcome, Conflict};
use crate::failover::fleet::{EtcdError, FleetError};

/// How many times an action is applied to a record another instance has
/// just stored before giving up.
const ATTEMPTS: u32 = 3;

impl Driver {
    /// Applies `command` to the shared record; see the module docs. `Ok`
    /// carries what the machine answered, once the record holds the change.
    pub(super) async fn fleet_command(
        &mut self,
        command: &Command,
    ) -> Result<Result<CommandOutcome, Conflict>, CommandError> {
        let Some(fleet) = self.fleet.as_ref().map(|f| f.fleet.clone()) else {
            return Err(CommandError::Stopped);
        };
        for _ in 0..ATTEMPTS {
            fleet.refresh().await.map_err(not_changed)?;
            self.follow_record();
            // A local change the fleet has not agreed on is no base.
            self.take_back();
            if !fleet.lease_alive() {
                return Err(CommandError::LeaseLapsed);
            }
            let result = self.machine.command(command.clone(), self.clock.now());
            let reason = match &result {
                Ok(CommandOutcome::Changed(t)) => {
                    self.pending.push(t.clone());
                    t.reason.clone()
                }
                Ok(CommandOutcome::HoldSet) => format!("{} (operator hold set)", reason(command)),
                // Nothing to store: the answer is the record's as it stands.
                Ok(CommandOutcome::NoOp) | Err(_) => return Ok(result),
            };
            let state = self.machine.state().clone();
            match self.store(state, &reason).await {
                Ok(()) => return Ok(result),
                // The winner's record (or its absence) is the next base.
                Err(NotStored::Lost | NotStored::Vanished) => {}
                Err(NotStored::Failed(e)) => {
                    self.take_back();
                    return Err(not_changed(e));
                }
            }
        }
        self.take_back();
        Err(CommandError::Contended(ATTEMPTS))
    }
}

fn reason(command: &Command) -> &str {
    command.reason()
}

/// What the operator is told about `e`: whether etcd was reached at all.
fn not_changed(e: FleetError) -> CommandError {
    match e {
        FleetError::Etcd(EtcdError::Connect { .. } | EtcdError::Body { .. })
        | FleetError::Timeout { .. } => CommandError::EtcdUnreachable(e.to_string()),
        e => CommandError::Etcd(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transport_failures_are_called_unreachable() {
        let timeout = FleetError::Timeout {
            op: "read",
            timeout: std::time::Duration::from_secs(2),
        };
        let e = not_changed(timeout).to_string();
        assert!(
            e.starts_with("etcd unreachable: etcd did not answer read"),
            "{e}"
        );
        let refused = FleetError::Etcd(EtcdError::Status {
            endpoint: "http://127.0.0.1:2379".to_owned(),
            status: http::StatusCode::UNAUTHORIZED,
            message: "invalid auth token".to_owned(),
        });
        let e = not_changed(refused).to_string();
        assert!(!e.contains("unreachable"), "{e}");
        assert!(
            e.contains("answered 401 Unauthorized: invalid auth token"),
            "{e}"
        );
        let e = not_changed(FleetError::EpochExhausted(u64::MAX)).to_string();
        assert!(!e.contains("unreachable"), "{e}");
        assert!(e.contains("cannot grow"), "{e}");
    }
}
