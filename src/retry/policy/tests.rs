use super::*;
use Class::{Read, Write};

const RA: Option<Duration> = Some(Duration::from_secs(2));

fn retry(reason: RetryReason, prefer_other_region: bool) -> Verdict {
    Verdict::Retry {
        reason,
        prefer_other_region,
    }
}

const NO: Verdict = Verdict::DoNotRetry {
    outcome_unknown: false,
};
const UNKNOWN: Verdict = Verdict::DoNotRetry {
    outcome_unknown: true,
};

/// Every non-status failure, for both classes, with a replayable body.
#[test]
fn transport_failures_table() {
    use Failure::*;
    use RetryReason as R;
    let table: [(Failure, Verdict, Verdict); 9] = [
        // (failure, read, write)
        (
            ConnectRefused,
            retry(R::ConnectError, true),
            retry(R::ConnectError, false),
        ),
        (
            ConnectTimeout,
            retry(R::ConnectError, true),
            retry(R::ConnectError, false),
        ),
        (
            TlsHandshake,
            retry(R::ConnectError, true),
            retry(R::ConnectError, false),
        ),
        (
            ClosedBeforeWrite,
            retry(R::ConnectError, false),
            retry(R::ConnectError, false),
        ),
        (
            RefusedStream,
            retry(R::NotProcessed, false),
            retry(R::NotProcessed, false),
        ),
        (
            GoAwayNotProcessed,
            retry(R::NotProcessed, false),
            retry(R::NotProcessed, false),
        ),
        (ResetAfterSend, retry(R::Reset, false), UNKNOWN),
        (TimeoutAfterSend, retry(R::Timeout, true), UNKNOWN),
        (MalformedResponse, NO, UNKNOWN),
    ];
    for (failure, read, write) in table {
        assert_eq!(decide(Read, &failure, true), read, "read, {failure:?}");
        assert_eq!(decide(Write, &failure, true), write, "write, {failure:?}");
    }
}

/// Status answers that matter, with and without `Retry-After`.
#[test]
fn status_table() {
    use RetryReason as R;
    let table: [(u16, Option<Duration>, Verdict, Verdict); 20] = [
        // (status, retry-after, read, write)
        (200, None, NO, NO),
        (204, None, NO, NO),
        (304, None, NO, NO),
        (400, None, NO, NO),
        (401, None, NO, NO),
        (404, None, NO, NO),
        (409, None, NO, NO),
        (422, None, NO, NO),
        (429, None, NO, NO),
        (429, RA, retry(R::Status429, false), NO),
        (429, Some(Duration::ZERO), retry(R::Status429, false), NO),
        (500, None, NO, NO),
        (500, RA, NO, NO),
        (501, None, NO, NO),
        (502, None, retry(R::Status5xx, true), NO),
        (503, None, retry(R::Status5xx, true), NO),
        (503, RA, retry(R::Status5xx, true), NO),
        (504, None, retry(R::Status5xx, true), NO),
        (505, None, NO, NO),
        (599, RA, NO, NO),
    ];
    for (status, retry_after, read, write) in table {
        let failure = Failure::Status(status, retry_after);
        assert_eq!(decide(Read, &failure, true), read, "read, {failure:?}");
        assert_eq!(decide(Write, &failure, true), write, "write, {failure:?}");
    }
}

/// Every status code, checked against the rule stated independently.
#[test]
fn every_status_code() {
    for status in 0..=999u16 {
        for retry_after in [None, RA] {
            let failure = Failure::Status(status, retry_after);
            let read_retried =
                matches!(status, 502..=504) || (status == 429 && retry_after.is_some());
            assert_eq!(
                decide(Read, &failure, true).is_retry(),
                read_retried,
                "read, {failure:?}"
            );
            assert_eq!(decide(Write, &failure, true), NO, "write, {failure:?}");
            assert_eq!(
                decide(Read, &failure, false),
                NO,
                "unreplayable, {failure:?}"
            );
        }
    }
}

fn every_failure() -> Vec<Failure> {
    use Failure::*;
    let mut all = vec![
        ConnectRefused,
        ConnectTimeout,
        TlsHandshake,
        ClosedBeforeWrite,
        RefusedStream,
        GoAwayNotProcessed,
        ResetAfterSend,
        TimeoutAfterSend,
        MalformedResponse,
    ];
    for status in [200, 400, 404, 429, 500, 501, 502, 503, 504, 505] {
        all.push(Status(status, None));
        all.push(Status(status, RA));
    }
    all
}

#[test]
fn an_unreplayable_body_is_never_retried() {
    for failure in every_failure() {
        for class in [Read, Write] {
            let expected = Verdict::DoNotRetry {
                outcome_unknown: class == Write && failure.outcome_unknown_after_send(),
            };
            assert_eq!(
                decide(class, &failure, false),
                expected,
                "{class:?}, {failure:?}"
            );
        }
    }
}

#[test]
fn a_write_with_unknown_outcome_stays_unknown_without_a_replayable_body() {
    for failure in [
        Failure::ResetAfterSend,
        Failure::TimeoutAfterSend,
        Failure::MalformedResponse,
    ] {
        assert_eq!(decide(Write, &failure, false), UNKNOWN, "{failure:?}");
        assert_eq!(decide(Read, &failure, false), NO, "{failure:?}");
    }
}

#[test]
fn invariants_over_every_case() {
    for failure in every_failure() {
        for replayable in [true, false] {
            let write = decide(Write, &failure, replayable);
            // A write is retried only when the upstream provably did not act.
            if write.is_retry() {
                assert!(
                    failure.before_any_byte() || failure.not_processed(),
                    "write retried after send: {failure:?}"
                );
            }
            // A write never asks to change region.
            assert!(
                !matches!(
                    write,
                    Verdict::Retry {
                        prefer_other_region: true,
                        ..
                    }
                ),
                "{failure:?}"
            );
            // Reads never have an unknown outcome.
            assert!(
                !matches!(
                    decide(Read, &failure, replayable),
                    Verdict::DoNotRetry {
                        outcome_unknown: true
                    }
                ),
                "{failure:?}"
            );
            // Whatever a write may retry, a read may too.
            if write.is_retry() {
                assert!(decide(Read, &failure, replayable).is_retry(), "{failure:?}");
            }
        }
    }
}

#[test]
fn failure_groups() {
    assert_eq!(Failure::Status(503, RA).retry_after(), RA);
    assert_eq!(Failure::Status(503, None).retry_after(), None);
    assert_eq!(Failure::ResetAfterSend.retry_after(), None);
    let groups: Vec<_> = every_failure()
        .iter()
        .map(|f| {
            u8::from(f.before_any_byte())
                + u8::from(f.not_processed())
                + u8::from(f.outcome_unknown_after_send())
        })
        .collect();
    assert!(groups.iter().all(|&n| n <= 1), "groups overlap");
}

#[test]
fn reason_labels() {
    let labels: Vec<_> = RetryReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        [
            "connect_error",
            "not_processed",
            "reset",
            "timeout",
            "status_5xx",
            "status_429"
        ]
    );
}
