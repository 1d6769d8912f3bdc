// The detector is pure: tests make their own instants from any base.
#![allow(clippy::disallowed_methods)]

use super::*;

const WINDOW: Duration = Duration::from_secs(10);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn detector() -> PassiveDetector {
    PassiveDetector::new(WINDOW, 20, 0.5)
}

fn record_n(d: &mut PassiveDetector, now: Instant, n: usize, outcome: Outcome) {
    for _ in 0..n {
        d.record(now, outcome);
    }
}

#[test]
fn only_region_failures_count_as_errors() {
    for o in [
        Outcome::ConnectError,
        Outcome::Timeout,
        Outcome::Reset,
        Outcome::Status(502),
        Outcome::Status(503),
        Outcome::Status(504),
    ] {
        assert!(o.is_error(), "{o:?} should count");
    }
    for o in [
        Outcome::Success,
        Outcome::Status(200),
        Outcome::Status(301),
        Outcome::Status(400),
        Outcome::Status(404),
        Outcome::Status(408),
        Outcome::Status(429),
        Outcome::Status(499),
        Outcome::Status(500),
        Outcome::Status(501),
        Outcome::Status(505),
        Outcome::Status(599),
    ] {
        assert!(!o.is_error(), "{o:?} should not count");
    }
}

#[test]
fn empty_detector_is_not_down() {
    let d = detector();
    assert!(!d.is_down(Instant::now()));
    assert_eq!(d.counts(Instant::now()), WindowCounts::default());
}

#[test]
fn down_at_ratio_with_enough_requests() {
    let t0 = Instant::now();
    let mut d = detector();
    record_n(&mut d, t0, 10, Outcome::Success);
    record_n(&mut d, t0, 9, Outcome::Timeout);
    assert!(!d.is_down(t0), "19 requests are below min_requests");
    d.record(t0, Outcome::ConnectError);
    assert_eq!(
        d.counts(t0),
        WindowCounts {
            requests: 20,
            errors: 10
        }
    );
    assert!(d.is_down(t0), "10/20 errors reaches a 0.5 ratio");
}

#[test]
fn below_ratio_is_not_down() {
    let t0 = Instant::now();
    let mut d = detector();
    record_n(&mut d, t0, 11, Outcome::Success);
    record_n(&mut d, t0, 9, Outcome::Status(503));
    assert!(!d.is_down(t0));
}

#[test]
fn a_storm_of_429_and_500_is_not_down() {
    let t0 = Instant::now();
    let mut d = detector();
    record_n(&mut d, t0, 500, Outcome::Status(429));
    record_n(&mut d, t0, 500, Outcome::Status(500));
    record_n(&mut d, t0, 500, Outcome::Status(404));
    assert!(!d.is_down(t0));
    assert_eq!(d.counts(t0).requests, 1500);
    assert_eq!(d.counts(t0).errors, 0);
}

#[test]
fn errors_age_out_of_the_window() {
    let t0 = Instant::now();
    let mut d = detector();
    record_n(&mut d, t0, 30, Outcome::Reset);
    assert!(d.is_down(t0 + secs(5.0)));
    assert!(d.is_down(t0 + secs(9.5)), "still inside the 10 s window");
    assert!(!d.is_down(t0 + secs(10.0)), "gone once the window passed");
    assert_eq!(d.counts(t0 + secs(10.0)).requests, 0);
}

#[test]
fn the_window_slides_bucket_by_bucket() {
    let t0 = Instant::now();
    let mut d = detector();
    // 10 errors at t=0, 10 successes at t=5, 10 errors at t=9.
    record_n(&mut d, t0, 10, Outcome::Timeout);
    record_n(&mut d, t0 + secs(5.0), 10, Outcome::Success);
    record_n(&mut d, t0 + secs(9.0), 10, Outcome::Timeout);
    assert_eq!(
        d.counts(t0 + secs(9.0)),
        WindowCounts {
            requests: 30,
            errors: 20
        }
    );
    // At t=10 the t=0 bucket expired: 10 successes, 10 errors remain.
    assert_eq!(
        d.counts(t0 + secs(10.0)),
        WindowCounts {
            requests: 20,
            errors: 10
        }
    );
    assert!(d.is_down(t0 + secs(10.0)));
    // At t=15 only the t=9 errors remain: 10 requests < min_requests.
    assert!(!d.is_down(t0 + secs(15.0)));
}

#[test]
fn a_bucket_reused_after_a_full_turn_starts_empty() {
    let t0 = Instant::now();
    let mut d = detector();
    record_n(&mut d, t0, 30, Outcome::Timeout);
    // Same slot, one window later.
    record_n(&mut d, t0 + WINDOW, 30, Outcome::Success);
    assert_eq!(
        d.counts(t0 + WINDOW),
        WindowCounts {
            requests: 30,
            errors: 0
        }
    );
}

#[test]
fn late_records_older_than_the_ring_are_dropped() {
    let t0 = Instant::now();
    let mut d = detector();
    d.record(t0, Outcome::Success);
    record_n(&mut d, t0 + secs(20.0), 5, Outcome::Success);
    // A record stamped with an old reading lands on a slot that already holds
    // a newer bucket: dropped rather than mixed into the present.
    record_n(&mut d, t0 + secs(10.0), 50, Outcome::Timeout);
    assert_eq!(
        d.counts(t0 + secs(20.0)),
        WindowCounts {
            requests: 5,
            errors: 0
        }
    );
}

#[test]
fn heavy_traffic_counts_only_the_window() {
    let t0 = Instant::now();
    let mut d = detector();
    // A minute of 1000 requests a second, in 1 ms steps.
    for ms in 0..60_000u64 {
        let o = if ms % 2 == 0 {
            Outcome::Status(503)
        } else {
            Outcome::Success
        };
        d.record(t0 + Duration::from_millis(ms), o);
    }
    let now = t0 + Duration::from_millis(59_999);
    let c = d.counts(now);
    // The window holds between 9 and 10 seconds of traffic.
    assert!((9_000..=10_000).contains(&c.requests), "{c:?}");
    assert!(d.is_down(now));
}

#[test]
fn min_requests_zero_still_needs_one_request() {
    let t0 = Instant::now();
    let mut d = PassiveDetector::new(WINDOW, 0, 0.5);
    assert!(!d.is_down(t0));
    d.record(t0, Outcome::Timeout);
    assert!(d.is_down(t0));
}

#[test]
fn ratio_one_needs_every_request_failed() {
    let t0 = Instant::now();
    let mut d = PassiveDetector::new(WINDOW, 5, 1.0);
    record_n(&mut d, t0, 9, Outcome::Timeout);
    d.record(t0, Outcome::Success);
    assert!(!d.is_down(t0));
    let mut d = PassiveDetector::new(WINDOW, 5, 1.0);
    record_n(&mut d, t0, 5, Outcome::Timeout);
    assert!(d.is_down(t0));
}

#[test]
fn nan_ratio_never_judges_down() {
    let t0 = Instant::now();
    let mut d = PassiveDetector::new(WINDOW, 1, f64::NAN);
    record_n(&mut d, t0, 10, Outcome::Timeout);
    assert!(!d.is_down(t0));
}

#[test]
fn zero_window_does_not_panic() {
    let t0 = Instant::now();
    let mut d = PassiveDetector::new(Duration::ZERO, 1, 0.5);
    d.record(t0, Outcome::Timeout);
    assert!(d.is_down(t0));
    assert!(!d.is_down(t0 + secs(1.0)));
}

#[test]
fn a_reading_before_the_origin_counts_in_the_first_bucket() {
    let t0 = Instant::now() + secs(1.0);
    let mut d = PassiveDetector::new(WINDOW, 2, 0.5);
    d.record(t0, Outcome::Timeout);
    d.record(t0 - secs(0.5), Outcome::Timeout);
    assert_eq!(d.counts(t0).errors, 2);
}

#[test]
fn reset_forgets_every_outcome() {
    let t0 = Instant::now();
    let mut d = detector();
    record_n(&mut d, t0, 30, Outcome::Timeout);
    assert!(d.is_down(t0));
    d.reset();
    assert_eq!(d.counts(t0), WindowCounts::default());
    record_n(&mut d, t0 + secs(1.0), 5, Outcome::Success);
    assert_eq!(
        d.counts(t0 + secs(1.0)),
        WindowCounts {
            requests: 5,
            errors: 0
        }
    );
}

#[test]
fn reconfigure_keeps_the_window_and_applies_the_new_limits() {
    let t0 = Instant::now();
    let mut d = detector();
    record_n(&mut d, t0, 15, Outcome::Timeout);
    assert!(!d.is_down(t0), "15 < min_requests");
    d.reconfigure(t0 + secs(1.0), WINDOW, 10, 0.5);
    assert!(
        d.is_down(t0 + secs(1.0)),
        "the counts survive, the limit moved"
    );
    assert_eq!(d.counts(t0 + secs(1.0)).errors, 15);
}

#[test]
fn reconfigure_with_a_new_window_carries_the_counts_for_one_new_window() {
    let t0 = Instant::now();
    let mut d = detector();
    record_n(&mut d, t0, 25, Outcome::Timeout);
    let t1 = t0 + secs(5.0);
    d.reconfigure(t1, secs(4.0), 20, 0.5);
    assert!(d.is_down(t1));
    d.record(t1 + secs(1.0), Outcome::Success);
    assert_eq!(d.counts(t1 + secs(1.0)).requests, 26);
    // One new window later, only what came after the change is left.
    assert_eq!(d.counts(t1 + secs(4.5)).requests, 1);
    assert!(!d.is_down(t1 + secs(4.5)));
}

#[test]
fn reconfigure_of_an_empty_detector_stays_empty() {
    let t0 = Instant::now();
    let mut d = detector();
    d.reconfigure(t0, secs(3.0), 1, 0.5);
    assert_eq!(d.counts(t0), WindowCounts::default());
    d.record(t0 + secs(1.0), Outcome::Timeout);
    assert!(d.is_down(t0 + secs(1.0)));
}
