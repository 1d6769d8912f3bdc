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

/// Shadow mode keeps everything on the primary while the mode is primary.
fn shadow_holds(snap: &Snapshot) -> bool {
    snap.shadow.is_some() && snap.mode == Mode::Primary
}

/// The routing decision (docs/design.md §1): reads go to the mode's region, or
/// to the other one when the mode's region is known down and the other is
/// not; writes follow the mode strictly and never switch region.
pub fn route(class: Class, snap: &Snapshot) -> Route {
    // Shadow mode watches and decides but never acts: everything goes to
    // the primary, down or not, and nothing is refused. A failover already
    // in effect when shadow mode was switched on is obeyed as usual.
    if shadow_holds(snap) {
        return Route::Forward(Region::Primary);
    }
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

/// What a retry decision knows when it asks where the next attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retrying {
    /// The region of the attempt that just failed.
    pub tried: Region,
    /// The region the request was first sent to.
    pub first: Region,
    /// The retry rules suggest the other region for this failure.
    pub prefer_other: bool,
    /// The next attempt is the last one allowed.
    pub last: bool,
}

/// Where the next attempt of a retried request goes. A write stays where
/// the mode sent it. A read follows the mode when it moved on meanwhile (a
/// failover during a hung first attempt), and may try the other region
/// while the mode is still `primary`, its probes still counting failures:
/// when the failure suggests it, or for its last attempt (a read has
/// nothing to lose there), unless the other region is known down.
pub fn next_region(class: Class, snap: &Snapshot, r: Retrying) -> Region {
    if class == Class::Write || shadow_holds(snap) {
        return r.tried;
    }
    let other = r.tried.other();
    match route(class, snap) {
        Route::Forward(home) if home != r.tried => home,
        _ if (r.prefer_other || r.last)
            && r.tried == r.first
            && snap.mode == Mode::Primary
            && !snap.region(other).is_down() =>
        {
            other
        }
        _ => r.tried,
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
    fn shadow_mode_sends_everything_to_the_primary_even_down() {
        let mut s = snap(Mode::Primary, Health::Unhealthy, Health::Healthy);
        s.shadow = Some(Mode::FailoverReadOnly);
        for class in [Class::Read, Class::Write] {
            assert_eq!(route(class, &s), Route::Forward(Region::Primary));
            let r = Retrying {
                tried: Region::Primary,
                first: Region::Primary,
                prefer_other: true,
                last: true,
            };
            assert_eq!(next_region(class, &s, r), Region::Primary);
        }
    }

    #[test]
    fn shadow_mode_obeys_a_failover_already_in_effect() {
        let mut s = snap(Mode::FailoverReadWrite, Down, Up);
        s.shadow = Some(Mode::FailoverReadWrite);
        assert_eq!(route(Class::Write, &s), Route::Forward(Region::Replica));
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Replica));
    }

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

    fn retrying(tried: Region, first: Region, prefer_other: bool, last: bool) -> Retrying {
        Retrying {
            tried,
            first,
            prefer_other,
            last,
        }
    }

    #[test]
    fn next_region_table() {
        use Region::{Primary as P, Replica as R};
        // (class, mode, primary, replica, tried, first, prefer_other, last) -> next
        let table = [
            // Writes never move.
            (Class::Write, Mode::Primary, Down, Up, P, P, true, true, P),
            (
                Class::Write,
                Mode::FailoverReadWrite,
                Up,
                Up,
                R,
                R,
                true,
                true,
                R,
            ),
            // A read in primary mode: stays unless the failure or the last
            // attempt suggests the other region, and that one is not down.
            (Class::Read, Mode::Primary, Up, Up, P, P, false, false, P),
            (Class::Read, Mode::Primary, Up, Up, P, P, true, false, R),
            (Class::Read, Mode::Primary, Up, Up, P, P, false, true, R),
            (
                Class::Read,
                Mode::Primary,
                Up,
                Unknown,
                P,
                P,
                true,
                false,
                R,
            ),
            (Class::Read, Mode::Primary, Up, Down, P, P, true, true, P),
            // Once it moved away, the next one goes back to the mode's region.
            (Class::Read, Mode::Primary, Up, Up, R, P, true, true, P),
            // The mode moved on meanwhile: the read follows it.
            (
                Class::Read,
                Mode::FailoverReadOnly,
                Up,
                Up,
                P,
                P,
                false,
                false,
                R,
            ),
            (
                Class::Read,
                Mode::FailoverReadOnly,
                Up,
                Up,
                R,
                R,
                true,
                true,
                R,
            ),
            // Probes caught up: the mode's region is down, the read moves.
            (Class::Read, Mode::Primary, Down, Up, P, P, false, false, R),
            // Both down: no better place than where it is.
            (Class::Read, Mode::Primary, Down, Down, P, P, true, true, P),
        ];
        for (i, (class, mode, p, r, tried, first, prefer, last, want)) in
            table.into_iter().enumerate()
        {
            let s = snap(mode, p, r);
            let got = next_region(class, &s, retrying(tried, first, prefer, last));
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn read_write_failover_sends_writes_to_the_replica() {
        let s = snap(Mode::FailoverReadWrite, Down, Up);
        assert_eq!(route(Class::Write, &s), Route::Forward(Region::Replica));
        assert_eq!(route(Class::Read, &s), Route::Forward(Region::Replica));
    }
}
