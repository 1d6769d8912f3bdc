//! `Retry-After` parsing and the wait-or-give-up rule (docs/design.md §4).
//!
//! [`parse`] reads a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds or
//! an HTTP-date, the latter relative to a `now` passed in. All three date forms
//! of RFC 9110 §5.6.7 are accepted: IMF-fixdate, which every current server
//! sends, and the obsolete RFC 850 and asctime forms, which recipients must
//! still read. The calendar is `httpdate`'s (hyper's own dependency), with
//! the limits named at `parse_http_date`.
//!
//! [`decide_wait`] applies the rule: the upstream's `Retry-After` is a lower
//! bound on the backoff delay, honoured up to `retry.max_retry_after`. A longer
//! one means the upstream wants more patience than a proxy should spend inside
//! one client request, so the response goes back to the client at once, where
//! the client's own retry logic (which sees the header) can wait. Likewise, a
//! retry that could not start before the request's deadline is not attempted:
//! sleeping into the deadline only to answer 504 would hide the upstream's
//! real answer and hold the client longer.
//!
//! Neither function reads a clock or sleeps; the caller passes `now` and the
//! time remaining.

use std::time::{Duration, SystemTime};

/// Parses a `Retry-After` header value into how long to wait from `now`.
///
/// Returns `None` when the value is neither delta-seconds nor an HTTP-date.
/// A date in the past yields zero; delta-seconds too large for a `Duration`
/// saturate (they are then larger than any `max_retry_after`).
pub fn parse(value: impl AsRef<[u8]>, now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value.as_ref()).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(delta_seconds(text));
    }
    let date = parse_http_date(text)?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Digits only (checked by the caller); saturates instead of failing, since
/// an absurdly long wait is still a clear request to wait long.
fn delta_seconds(digits: &str) -> Duration {
    let secs = digits.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    });
    Duration::from_secs(secs.unwrap_or(u64::MAX))
}

/// What to do before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitDecision {
    /// Sleep this long, then start the next attempt.
    Wait(Duration),
    /// Do not retry: pass the last response (or error) back to the client now.
    GiveUp(GiveUpReason),
}

/// Why [`decide_wait`] declined to retry. Closed, so it can label a metric or
/// a log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUpReason {
    /// The upstream asked for a longer pause than `retry.max_retry_after`.
    RetryAfterAboveMax,
    /// The upstream's `Retry-After` ends at or after the request's deadline.
    RetryAfterBeyondDeadline,
    /// The backoff delay leaves no time to start an attempt before the deadline.
    Deadline,
}

impl GiveUpReason {
    /// Every reason (the label values are checked against it).
    #[cfg(test)]
    pub const ALL: [GiveUpReason; 3] = [
        GiveUpReason::RetryAfterAboveMax,
        GiveUpReason::RetryAfterBeyondDeadline,
        GiveUpReason::Deadline,
    ];

    /// The snake_case label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::RetryAfterAboveMax => "retry_after_above_max",
            GiveUpReason::RetryAfterBeyondDeadline => "retry_after_beyond_deadline",
            GiveUpReason::Deadline => "deadline",
        }
    }
}

/// Decides how long to wait before the next attempt, or that there is none.
///
/// - `backoff`: the jittered delay from [`super::Backoff::delay`];
/// - `retry_after`: the parsed `Retry-After` of the failed attempt, if any;
/// - `max_retry_after`: `retry.max_retry_after`;
/// - `remaining`: time left before the request's deadline (`request_timeout`
///   from its arrival), zero when already past.
///
/// The wait is `max(backoff, retry_after)`. The next attempt must be able to
/// start strictly before the deadline; an attempt starting exactly at it
/// would have no time at all.
pub fn decide_wait(
    backoff: Duration,
    retry_after: Option<Duration>,
    max_retry_after: Duration,
    remaining: Duration,
) -> WaitDecision {
    let mut wait = backoff;
    if let Some(asked) = retry_after {
        if asked > max_retry_after {
            return WaitDecision::GiveUp(GiveUpReason::RetryAfterAboveMax);
        }
        if asked >= remaining {
            return WaitDecision::GiveUp(GiveUpReason::RetryAfterBeyondDeadline);
        }
        wait = wait.max(asked);
    }
    if !attempt_may_start(wait, remaining) {
        return WaitDecision::GiveUp(GiveUpReason::Deadline);
    }
    WaitDecision::Wait(wait)
}

/// Whether an attempt that would start after `wait` starts before a deadline
/// `remaining` away. The first attempt uses `wait = 0`: a request whose
/// deadline has already passed (say, it waited in a queue) is not forwarded.
pub fn attempt_may_start(wait: Duration, remaining: Duration) -> bool {
    wait < remaining
}

// ----- HTTP-date (RFC 9110 §5.6.7) -----

/// An HTTP-date in any of RFC 9110's three forms, read by `httpdate`
/// (hyper's own dependency), within its limits: years 1970 to 9999 (an
/// earlier date lies in the past anyway, so ignoring it leaves the backoff
/// to decide, as a zero wait would), an RFC 850 two-digit year read as 1970
/// to 2069, no leap second, single spaces, and a weekday that matches the
/// date.
fn parse_http_date(text: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(text).ok()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn at(unix_secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix_secs)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// 1994-11-06T08:49:37Z, the example date of RFC 9110.
    const RFC_EXAMPLE: u64 = 784_111_777;

    #[test]
    fn delta_seconds() {
        let now = at(1_700_000_000);
        assert_eq!(parse("120", now), Some(secs(120)));
        assert_eq!(parse("0", now), Some(Duration::ZERO));
        assert_eq!(parse("  7 ", now), Some(secs(7)));
        assert_eq!(parse(b"30".as_slice(), now), Some(secs(30)));
        assert_eq!(parse("007", now), Some(secs(7)));
    }

    #[test]
    fn delta_seconds_saturate_instead_of_failing() {
        let now = at(0);
        let huge = parse("99999999999999999999999999", now);
        assert_eq!(huge, Some(secs(u64::MAX)));
    }

    #[test]
    fn garbage_is_none() {
        let now = at(RFC_EXAMPLE);
        // httpdate's limits: before 1970, a leap second, loose spacing, and a
        // weekday that does not match the date are not read.
        for bad in [
            "",
            "   ",
            "-5",
            "+5",
            "1.5",
            "12s",
            "soon",
            "0x10",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1995 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sunday, 06-Nov-94-01 08:49:37 GMT",
            "Sunday, 06 Nov 94 08:49:37 GMT",
            "Sun Nov 106 08:49:37 1994",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov  6 08:49:37",
            "Mon, 01 Jan 1900 00:00:00 GMT",
            "Sat, 31 Dec 2016 23:59:60 GMT",
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Monday, 06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(parse(bad, now), None, "{bad:?} must not parse");
        }
        assert_eq!(parse([0xff, b'1'], now), None, "non-UTF-8");
    }

    #[test]
    fn imf_fixdate_relative_to_now() {
        let now = at(RFC_EXAMPLE - 90);
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(secs(90)));
        // Sub-second parts of `now` are honoured, not rounded away.
        let now = at(RFC_EXAMPLE - 2) + Duration::from_millis(250);
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_millis(1750))
        );
    }

    #[test]
    fn date_in_the_past_is_zero() {
        let now = at(RFC_EXAMPLE + 3600);
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn obsolete_forms() {
        let now = at(RFC_EXAMPLE - 10);
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(secs(10)));
        assert_eq!(parse("Sun Nov  6 08:49:37 1994", now), Some(secs(10)));
        assert_eq!(parse("Sun Nov 06 08:49:37 1994", now), Some(secs(10)));
    }

    #[test]
    fn known_dates_convert_exactly() {
        // Checked against `date -u -d ... +%s`.
        let cases = [
            ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("Tue, 29 Feb 2000 12:00:00 GMT", 951_825_600),
            ("Thu, 01 Mar 2001 00:00:00 GMT", 983_404_800),
            ("Tue, 14 Nov 2023 22:13:20 GMT", 1_700_000_000),
            ("Fri, 31 Dec 2100 23:59:59 GMT", 4_133_980_799),
        ];
        for (text, unix) in cases {
            assert_eq!(parse(text, UNIX_EPOCH), Some(secs(unix)), "{text}");
        }
    }

    #[test]
    fn two_digit_years_are_read_as_1970_to_2069() {
        // End to end: a date a few seconds ahead in the RFC 850 form.
        let now = at(1_700_000_000 - 5);
        assert_eq!(parse("Tuesday, 14-Nov-23 22:13:20 GMT", now), Some(secs(5)));
        assert_eq!(
            parse("Thursday, 01-Jan-70 00:00:00 GMT", UNIX_EPOCH),
            Some(Duration::ZERO)
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn wait_is_the_backoff_without_retry_after() {
        assert_eq!(
            decide_wait(ms(40), None, secs(5), secs(20)),
            WaitDecision::Wait(ms(40))
        );
    }

    #[test]
    fn retry_after_is_a_lower_bound() {
        assert_eq!(
            decide_wait(ms(40), Some(secs(2)), secs(5), secs(20)),
            WaitDecision::Wait(secs(2))
        );
        // A shorter Retry-After does not shorten the backoff.
        assert_eq!(
            decide_wait(ms(800), Some(ms(100)), secs(5), secs(20)),
            WaitDecision::Wait(ms(800))
        );
        assert_eq!(
            decide_wait(ms(10), Some(Duration::ZERO), secs(5), secs(20)),
            WaitDecision::Wait(ms(10))
        );
        // Exactly the maximum is still honoured.
        assert_eq!(
            decide_wait(ms(10), Some(secs(5)), secs(5), secs(20)),
            WaitDecision::Wait(secs(5))
        );
    }

    #[test]
    fn retry_after_above_max_is_passed_back() {
        assert_eq!(
            decide_wait(ms(10), Some(ms(5001)), secs(5), secs(20)),
            WaitDecision::GiveUp(GiveUpReason::RetryAfterAboveMax)
        );
        assert_eq!(
            decide_wait(ms(10), Some(secs(u64::MAX)), secs(5), secs(20)),
            WaitDecision::GiveUp(GiveUpReason::RetryAfterAboveMax)
        );
    }

    #[test]
    fn retry_after_beyond_deadline_is_passed_back() {
        assert_eq!(
            decide_wait(ms(10), Some(secs(3)), secs(5), secs(2)),
            WaitDecision::GiveUp(GiveUpReason::RetryAfterBeyondDeadline)
        );
        assert_eq!(
            decide_wait(ms(10), Some(secs(2)), secs(5), secs(2)),
            WaitDecision::GiveUp(GiveUpReason::RetryAfterBeyondDeadline)
        );
    }

    #[test]
    fn no_attempt_that_cannot_start_before_the_deadline() {
        assert_eq!(
            decide_wait(ms(300), None, secs(5), ms(300)),
            WaitDecision::GiveUp(GiveUpReason::Deadline)
        );
        assert_eq!(
            decide_wait(Duration::ZERO, None, secs(5), Duration::ZERO),
            WaitDecision::GiveUp(GiveUpReason::Deadline)
        );
        assert_eq!(
            decide_wait(ms(299), None, secs(5), ms(300)),
            WaitDecision::Wait(ms(299))
        );
        assert!(attempt_may_start(Duration::ZERO, ms(1)));
        assert!(!attempt_may_start(Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn reason_labels_are_distinct_snake_case() {
        let labels: std::collections::HashSet<_> =
            GiveUpReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), GiveUpReason::ALL.len());
        for l in labels {
            assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
