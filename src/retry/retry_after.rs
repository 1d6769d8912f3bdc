//! `Retry-After` parsing and the wait-or-give-up rule (DESIGN.md §4).
//!
//! [`parse`] reads a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds or
//! an HTTP-date, the latter relative to a `now` passed in. All three date forms
//! of RFC 9110 §5.6.7 are accepted: IMF-fixdate, which every current server
//! sends, and the obsolete RFC 850 and asctime forms, which recipients must
//! still read. The calendar is `httpdate`'s (hyper's own dependency); what
//! RFC 9110 asks of a recipient beyond it is spelled out at
//! `parse_http_date`.
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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    let date = parse_http_date(text, now)?;
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
    /// Every reason, for registering label values up front.
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

/// RFC 850 day names; such a date is handed on as IMF-fixdate with the
/// first three letters.
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// httpdate reads and writes the years 1970 to 9999 only.
const FIRST_YEAR: i64 = 1970;
const LAST_YEAR: i64 = 9999;
/// 9999-12-31T23:59:59Z in unix seconds, the last instant httpdate writes.
const LAST_SECS: u64 = 253_402_300_799;
/// The Gregorian calendar repeats itself, weekdays included, every 400
/// years (146 097 days, a whole number of weeks): a date or clock outside
/// httpdate's years is read whole cycles away and moved back.
const CYCLE_YEARS: i64 = 400;
const CYCLE_SECS: u64 = 146_097 * 86_400;

/// An HTTP-date's form, put back together around a year and a time of day.
type Form<'a> = Box<dyn Fn(i64, &str) -> String + 'a>;

/// Reads an HTTP-date with httpdate, which checks the calendar, after the
/// adjustments RFC 9110 asks of a recipient and httpdate does not make:
/// runs of whitespace between the parts are accepted, an RFC 850 two-digit
/// year is widened relative to `now` (httpdate pins it to 1970-2069), and a
/// leap second or a year outside 1970-9999 is still read.
fn parse_http_date(text: &str, now: SystemTime) -> Option<SystemTime> {
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    // Each form is rebuilt with the single spaces httpdate expects.
    let (year, time, form): (i64, &str, Form<'_>) = match *tokens.as_slice() {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        [wday, day, month, year, time, zone] => (
            four_digit_year(year)?,
            time,
            Box::new(move |y, t| format!("{wday} {day} {month} {y:04} {t} {zone}")),
        ),
        // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT", handed on as the
        // IMF-fixdate it stands for.
        [wday, date, time, zone] => {
            let long = wday.strip_suffix(',')?;
            let short = LONG_DAYS.contains(&long).then(|| &long[..3])?;
            let [day, month, yy] = date.split('-').collect::<Vec<_>>()[..] else {
                return None;
            };
            if yy.len() != 2 {
                return None;
            }
            (
                expand_two_digit_year(yy.parse().ok()?, now),
                time,
                Box::new(move |y, t| format!("{short}, {day} {month} {y:04} {t} {zone}")),
            )
        }
        // asctime: "Sun Nov  6 08:49:37 1994" (the day may be space-padded)
        [wday, month, day, time, year] => (
            four_digit_year(year)?,
            time,
            Box::new(move |y, t| format!("{wday} {month} {day:>2} {t} {y:04}")),
        ),
        _ => return None,
    };
    // A leap second (:60, which RFC 5322 allows) is the second before it
    // plus one, so it rolls into the next minute.
    let (time, leap) = match time.strip_suffix(":60") {
        Some(hour_minute) => (format!("{hour_minute}:59"), Duration::from_secs(1)),
        None => (time.to_owned(), Duration::ZERO),
    };
    let cycles = if year < FIRST_YEAR {
        -((FIRST_YEAR - year + CYCLE_YEARS - 1) / CYCLE_YEARS)
    } else if year > LAST_YEAR {
        (year - LAST_YEAR + CYCLE_YEARS - 1) / CYCLE_YEARS
    } else {
        0
    };
    let date = httpdate::parse_http_date(&form(year - cycles * CYCLE_YEARS, &time)).ok()?;
    match shift(date + leap, cycles) {
        Some(t) => Some(t),
        // A pre-1970 date is in the past; if the platform cannot represent
        // it, the epoch is an equally past stand-in.
        None if cycles < 0 => Some(UNIX_EPOCH),
        None => None,
    }
}

/// Exactly four ASCII digits.
fn four_digit_year(s: &str) -> Option<i64> {
    if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `t` moved by whole Gregorian cycles, later for positive `cycles`.
fn shift(t: SystemTime, cycles: i64) -> Option<SystemTime> {
    let by = Duration::from_secs(CYCLE_SECS.checked_mul(cycles.unsigned_abs())?);
    if cycles < 0 {
        t.checked_sub(by)
    } else {
        t.checked_add(by)
    }
}

/// RFC 9110 §5.6.7: a two-digit year that would be more than 50 years in the
/// future is the most recent past year with those last two digits.
fn expand_two_digit_year(yy: u32, now: SystemTime) -> i64 {
    let this_year = year_of(now);
    let mut year = this_year.div_euclid(100) * 100 + i64::from(yy);
    if year > this_year + 50 {
        year -= 100;
    } else if year + 100 <= this_year + 50 {
        year += 100;
    }
    year
}

/// The calendar year of `t`, as httpdate writes it.
fn year_of(t: SystemTime) -> i64 {
    // httpdate panics outside 1970-9999, so `t` is first moved inside.
    let whole_cycles = |secs: u64| i64::try_from(secs / CYCLE_SECS + 1).unwrap_or(i64::MAX);
    let cycles = match t.duration_since(UNIX_EPOCH) {
        Err(before) => -whole_cycles(before.duration().as_secs()),
        Ok(after) if after.as_secs() > LAST_SECS => whole_cycles(after.as_secs() - LAST_SECS),
        Ok(_) => 0,
    };
    let inside = shift(t, -cycles).unwrap_or(UNIX_EPOCH);
    // "Sun, 06 Nov 1994 08:49:37 GMT": the year is the fourth field.
    let year = httpdate::fmt_http_date(inside)
        .split(' ')
        .nth(3)
        .and_then(|y| y.parse::<i64>().ok())
        .unwrap_or(FIRST_YEAR);
    year + cycles * CYCLE_YEARS
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            parse("Mon, 01 Jan 1900 00:00:00 GMT", now),
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
    fn leap_second_rolls_over() {
        let text = "Sat, 31 Dec 2016 23:59:60 GMT";
        assert_eq!(parse(text, UNIX_EPOCH), Some(secs(1_483_228_800)));
    }

    #[test]
    fn two_digit_years_follow_the_fifty_year_rule() {
        let jan_2026 = at(1_767_225_600); // 2026-01-01
        assert_eq!(expand_two_digit_year(94, jan_2026), 1994);
        assert_eq!(expand_two_digit_year(26, jan_2026), 2026);
        assert_eq!(expand_two_digit_year(76, jan_2026), 2076);
        assert_eq!(expand_two_digit_year(77, jan_2026), 1977);
        let y2099 = at(4_070_908_800); // 2099-01-01
        assert_eq!(expand_two_digit_year(1, y2099), 2101);
        assert_eq!(expand_two_digit_year(98, y2099), 2098);
        // End to end: a date a few seconds ahead in the RFC 850 form.
        let now = at(1_700_000_000 - 5);
        assert_eq!(parse("Tuesday, 14-Nov-23 22:13:20 GMT", now), Some(secs(5)));
    }

    #[test]
    fn year_of_matches_calendar() {
        assert_eq!(year_of(UNIX_EPOCH), 1970);
        assert_eq!(year_of(at(951_825_600)), 2000);
        assert_eq!(year_of(at(1_767_225_599)), 2025);
        assert_eq!(year_of(at(1_767_225_600)), 2026);
        assert_eq!(year_of(UNIX_EPOCH - secs(1)), 1969);
    }

    #[test]
    fn calendar_constants_are_httpdates() {
        assert_eq!(
            httpdate::fmt_http_date(UNIX_EPOCH + secs(LAST_SECS)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        let y2000 = httpdate::parse_http_date("Sat, 01 Jan 2000 00:00:00 GMT").unwrap();
        let y2400 = httpdate::parse_http_date("Sat, 01 Jan 2400 00:00:00 GMT").unwrap();
        assert_eq!(y2400.duration_since(y2000).unwrap(), secs(CYCLE_SECS));
    }

    #[test]
    fn dates_outside_httpdates_years_are_exact() {
        // 1900-01-01T00:00:00Z, the NTP epoch.
        assert_eq!(
            parse_http_date("Mon, 01 Jan 1900 00:00:00 GMT", UNIX_EPOCH),
            Some(UNIX_EPOCH - secs(2_208_988_800))
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 1900 00:00:00 GMT", UNIX_EPOCH),
            None,
            "1900 is no leap year"
        );
        // A two-digit year widened past 9999 by a clock near its end (10000
        // is a leap year).
        let late = UNIX_EPOCH + secs(LAST_SECS);
        let in_10001 = parse_http_date("Monday, 01-Jan-01 00:00:00 GMT", late).unwrap();
        assert_eq!(in_10001.duration_since(late).unwrap(), secs(31_622_401));
    }

    #[test]
    fn spacing_is_loose_but_the_weekday_must_be_right() {
        let now = at(RFC_EXAMPLE - 10);
        assert_eq!(
            parse("Sun,  06 Nov 1994\t08:49:37 GMT", now),
            Some(secs(10))
        );
        assert_eq!(parse("Sun Nov 6 08:49:37 1994", now), Some(secs(10)));
        assert_eq!(parse("Mon, 06 Nov 1994 08:49:37 GMT", now), None);
        assert_eq!(parse("Monday, 06-Nov-94 08:49:37 GMT", now), None);
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
