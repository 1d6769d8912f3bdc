//! `failover.mode = "shadow"`: a second machine, fed the same probe results
//! and live-traffic verdicts as the real one, decides with automatic
//! failover on; its mode is only logged, exported
//! (`failway_shadow_mode{mode}`, `failway_shadow_transitions_total{from,to}`)
//! and shown in `/status`. The real machine, which routing obeys, never
//! fails over on its own in this mode, so traffic stays on the primary.
//!
//! Operator failover and drills are refused in this mode (they would change
//! the mode without moving traffic); a state that is already failed over
//! when shadow mode is switched on (at a start or a reload) is obeyed until
//! an operator fails back, since sending traffic back to the primary on its
//! own could strand writes that landed on the replica. The shadow machine
//! starts afresh at each start (it is not persisted).

use std::time::SystemTime;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::driver::Driver;
use super::machine::{
    Command, Conflict, ConflictKind, Health, Machine, Mode, Settings, Transition,
};
use crate::region::Region;

#[derive(Clone)]
pub struct ShadowMetrics {
    mode: IntGaugeVec,
    transitions: IntCounterVec,
}

impl ShadowMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<ShadowMetrics> {
        let mode = IntGaugeVec::new(
            Opts::new(
                "failway_shadow_mode",
                "Shadow mode: 1 for the mode failway would be in, 0 for the others; absent outside shadow mode.",
            ),
            &["mode"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "failway_shadow_transitions_total",
                "Shadow mode: the transitions failway would have made, by from and to.",
            ),
            &["from", "to"],
        )?;
        registry.register(Box::new(mode.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        Ok(ShadowMetrics { mode, transitions })
    }

    /// Outside shadow mode the gauge is absent.
    fn clear(&self) {
        self.mode.reset();
    }

    fn publish(&self, current: Mode) {
        for m in [
            Mode::Primary,
            Mode::FailoverReadOnly,
            Mode::FailoverReadWrite,
        ] {
            self.mode
                .with_label_values(&[m.as_str()])
                .set(i64::from(m == current));
        }
    }
}

/// The shadow machine's settings: the configured ones, failover automatic.
pub(super) fn shadow_settings(real: Settings) -> Settings {
    Settings {
        auto_failover: true,
        ..real
    }
}

pub(super) fn shadow_machine(real: Settings, now: SystemTime) -> Machine {
    Machine::new(shadow_settings(real), now)
}

impl Driver {
    /// Shadow mode never routes away from the primary, so a failover or a
    /// drill would change the mode without moving any traffic: refused.
    pub(super) fn shadow_refusal(&self, command: &Command) -> Option<Conflict> {
        self.shadow.as_ref()?;
        let what = match command {
            Command::Failover { .. } => "failover",
            Command::Drill { .. } => "a drill",
            _ => return None,
        };
        Some(Conflict {
            current: self.machine.mode(),
            kind: ConflictKind::ShadowMode,
            message: format!(
                "{what} refused: failover.mode is \"shadow\", which only reports what failway would do and never routes away from the primary; set failover.mode to \"auto\" or \"manual\" and reload to act"
            ),
        })
    }

    /// A reload into or out of shadow mode. The shadow machine starts
    /// afresh when shadow mode is switched on; while on, it follows the
    /// reloaded settings.
    pub(super) fn reconfigure_shadow(&mut self, on: bool, now: SystemTime) {
        let settings = self.machine.settings().to_owned();
        match (on, self.shadow.as_mut()) {
            (true, Some(m)) => m.set_settings(shadow_settings(settings)),
            (true, None) => {
                tracing::info!("shadow mode on: failway reports what it would do and keeps traffic on the primary");
                self.shadow = Some(shadow_machine(settings, now));
            }
            (false, Some(_)) => {
                tracing::info!("shadow mode off: failway acts on its decisions again");
                self.shadow = None;
                self.metrics.shadow.clear();
            }
            (false, None) => {}
        }
        self.publish();
    }

    /// Feeds a probe verdict to the shadow machine, if any.
    pub(super) fn shadow_probe(&mut self, region: Region, health: Health, now: SystemTime) {
        let Some(m) = self.shadow.as_mut() else {
            return;
        };
        let t = match region {
            Region::Primary => m.observe_primary(health, now),
            Region::Replica => m.observe_replica(health, now),
        };
        self.shadow_record(t);
    }

    pub(super) fn shadow_passive(&mut self, down: bool, now: SystemTime) {
        if let Some(m) = self.shadow.as_mut() {
            let t = m.observe_primary_passive(down, now);
            self.shadow_record(t);
        }
    }

    /// The clock moved for the shadow machine too.
    pub(super) fn shadow_settle(&mut self, now: SystemTime) {
        for _ in 0..8 {
            let Some(t) = self.shadow.as_mut().and_then(|m| m.tick(now)) else {
                break;
            };
            self.shadow_record(Some(t));
        }
    }

    fn shadow_record(&self, t: Option<Transition>) {
        let Some(t) = t else {
            return;
        };
        tracing::info!(
            from = t.from.as_str(),
            to = t.to.as_str(),
            trigger = t.trigger.as_str(),
            reason = %t.reason,
            "shadow mode: failway would have made this transition (traffic stays on the primary)"
        );
        self.metrics
            .shadow
            .transitions
            .with_label_values(&[t.from.as_str(), t.to.as_str()])
            .inc();
    }

    /// The mode the shadow machine is in, exported as it is published.
    pub(super) fn shadow_mode(&self) -> Option<Mode> {
        let mode = self.shadow.as_ref()?.mode();
        self.metrics.shadow.publish(mode);
        Some(mode)
    }
}
