//! Where a request goes: the pure decision (request class, failover
//! snapshot) -> target region or refusal. No I/O here.

use crate::classify::Class;
use crate::failover::machine::Mode;
use crate::failover::Snapshot;
use crate::region::Region;

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Forward to this region. A write to the replica still needs the
    /// latch (`Failover::begin_replica_write`) before it leaves.
    Forward(Region),
    /// A write in `failover_read_only`: answered by failway, never forwarded.
    BlockWrite,
    /// The region writes must go to in this mode is down.
    WriteRegionDown(Region),
    /// Neither region can serve.
    Unavailable,
}

/// The routing decision (DESIGN.md §1): reads go to the mode's region, or
/// to the other one when the mode's region is known down and the other is
/// not; writes follow the mode strictly and never switch region.
pub fn route(class: Class, snap: &Snapshot) -> Route {
    let home = match snap.mode {
        Mode::Primary => Region::Primary,
        Mode::FailoverReadOnly | Mode::FailoverReadWrite => Region::Replica,
    };
    let down = |r: Region| snap.region(r).is_down();
    match class {
        Class::Read => {
            if !down(home) {
                Route::Forward(home)
            } else if !down(home.other()) {
                Route::Forward(home.other())
            } else {
                Route::Unavailable
            }
        }
        Class::Write => match snap.mode {
            Mode::FailoverReadOnly => Route::BlockWrite,
            // Fleet mode, lease lapsed: refused exactly as in read-only mode.
            Mode::FailoverReadWrite if snap.writes_suspended => Route::BlockWrite,
            _ if down(home) => Route::WriteRegionDown(home),
            _ => Route::Forward(home),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::machine::Health;
    use std::time::SystemTime;

    fn snap(mode: Mode, primary: Health, replica: Health) -> Snapshot {
        let mut s = Snapshot::initial(SystemTime::UNIX_EPOCH);
        s.mode = mode;
        s.regions[0].health = primary;
        s.regions[1].health = replica;
        s
    }

    use Health::{Healthy as Up, Unhealthy as Down, Unknown};

    #[test]
    fn primary_mode_reads_and_writes_go_to_the_primary() {
        let s = snap(Mode::Primary, Up, Up);
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Primary));
        assert_eq!(route(Class::Write, &s), Route::Forward(Region::Primary));
        let s = snap(Mode::Primary, Unknown, Unknown);
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Primary));
    }

    #[test]
    fn reads_move_to_the_healthy_region_writes_never_do() {
        let s = snap(Mode::Primary, Down, Up);
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Replica));
        assert_eq!(
            route(Class::Write, &s),
            Route::WriteRegionDown(Region::Primary)
        );
        let s = snap(Mode::FailoverReadWrite, Up, Down);
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Primary));
        assert_eq!(
            route(Class::Write, &s),
            Route::WriteRegionDown(Region::Replica)
        );
    }

    #[test]
    fn read_only_failover_blocks_every_write_whatever_the_health() {
        for (p, r) in [
            (Up, Up),
            (Down, Up),
            (Up, Down),
            (Down, Down),
            (Unknown, Unknown),
        ] {
            let s = snap(Mode::FailoverReadOnly, p, r);
            assert_eq!(route(Class::Write, &s), Route::BlockWrite);
        }
        let s = snap(Mode::FailoverReadOnly, Down, Up);
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Replica));
    }

    #[test]
    fn suspended_writes_are_blocked_reads_still_go() {
        let mut s = snap(Mode::FailoverReadWrite, Down, Up);
        s.writes_suspended = true;
        assert_eq!(route(Class::Write, &s), Route::BlockWrite);
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Replica));
    }

    #[test]
    fn both_down_is_unavailable_for_reads() {
        for mode in [
            Mode::Primary,
            Mode::FailoverReadOnly,
            Mode::FailoverReadWrite,
        ] {
            let s = snap(mode, Down, Down);
            assert_eq!(route(Class::Read, &s), Route::Unavailable);
        }
        let mut s = snap(Mode::Primary, Up, Up);
        s.regions[0].passive_down = true;
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Replica));
    }

    #[test]
    fn read_write_failover_sends_writes_to_the_replica() {
        let s = snap(Mode::FailoverReadWrite, Down, Up);
        assert_eq!(route(Class::Write, &s), Route::Forward(Region::Replica));
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Replica));
    }
}
