//! Operator commands in the driver: applied (fleet-wide with `[fleet]`),
//! persisted and recorded in the audit file before they are answered, or
//! taken back.

use std::time::SystemTime;

use super::driver::{CommandError, Driver};
use super::machine::{Command, CommandOutcome, Conflict};

impl Driver {
    /// Applies an operator command (fleet-wide with `[fleet]`); the answer
    /// goes out once the new state is on disk.
    pub(super) async fn on_command(
        &mut self,
        command: Command,
        audit: Option<crate::audit::Record>,
        now: SystemTime,
    ) -> Result<Result<CommandOutcome, Conflict>, CommandError> {
        let what = command.name();
        let (reason, force) = (command.reason().to_owned(), command.force());
        if let Some(refused) = self.shadow_refusal(&command) {
            tracing::warn!(action = what, force, reason = ?reason, refused = %refused, "operator action refused");
            let _ = self
                .audit_operator(audit, refused.kind.as_str(), None)
                .await;
            return Ok(Err(refused));
        }
        if let Err(e) = self.audit.check() {
            tracing::error!(action = what, error = %e, "operator action refused: it could not be recorded");
            return Err(CommandError::AuditUnwritable(e.to_string()));
        }
        // Taken back whole if the new state cannot be written.
        let before = self.machine.clone();
        let result = if self.fleet.is_some() {
            match self.fleet_command(&command).await {
                Ok(result) => result,
                Err(e) => {
                    tracing::warn!(action = what, force, reason = ?reason, error = %e, "operator action not applied");
                    self.publish();
                    return Err(e);
                }
            }
        } else {
            self.machine.command(command, now)
        };
        if self.fleet.is_none() {
            // Fleet mode leaves what follows to `reconcile`, under the
            // fleet's rules.
            self.settle();
            // The answer goes out once the new state is on disk.
            if !self.persist_if_changed().await {
                self.machine = before;
                tracing::error!(action = what, force, reason = ?reason, "operator action taken back: its state could not be written");
                self.publish();
                return Err(CommandError::NotPersisted);
            }
        }
        let by = audit.as_ref().and_then(|r| r.by.clone());
        let mut result = result;
        if let (Some(name), Ok(CommandOutcome::Changed(t))) = (&by, &mut result) {
            t.by = Some(name.clone());
            self.machine.name_last_transition(name);
        }
        if let Err(e) = self.audit_result(audit, &result).await {
            if self.fleet.is_none() && self.machine.state() != before.state() {
                self.machine = before;
                self.persist_if_changed().await;
                self.publish();
                tracing::error!(action = what, error = %e, "operator action taken back: it could not be recorded");
                return Err(CommandError::AuditUnwritable(e.to_string()));
            }
            // Fleet mode: the shared record already moved every instance.
            tracing::error!(action = what, error = %e, "operator action applied but not recorded in the audit file");
        }
        match &result {
            Ok(CommandOutcome::Changed(t)) => {
                tracing::info!(action = what, force, reason = ?reason, "operator action applied");
                if self.fleet.is_none() {
                    self.record(Some(t.clone()));
                }
            }
            Ok(other) => {
                tracing::info!(action = what, force, reason = ?reason, outcome = ?other, "operator action applied")
            }
            Err(c) => {
                tracing::warn!(action = what, force, reason = ?reason, refused = %c, "operator action refused")
            }
        }
        self.persist_if_changed().await;
        self.publish();
        Ok(result)
    }
}
