//! Retryability: the one place that decides whether a failed attempt may be
//! sent again (docs/design.md §1 and §4).
//!
//! The caller describes what happened as a closed [`Failure`], says whether the
//! request is a read or a write and whether its body can be sent again, and
//! [`decide`] answers with a [`Verdict`]. Keeping the rules in one pure
//! function, apart from the code that moves bytes, is what makes them
//! reviewable and testable as a table.
//!
//! The principle behind every rule: one-way replication means a write must
//! never be applied twice or in the wrong place, so a request is re-sent only
//! when the upstream provably did not act on it (nothing was written, or the
//! upstream said it did not process it), or when acting twice is harmless (a
//! read).
//!
//! Deliberately not here: how long to wait (`backoff`, `retry_after`),
//! whether the budget allows it (`budget`), `max_attempts`, the choice of
//! region (`routing`; `prefer_other_region` is only a hint), and turning
//! hyper or h2 errors into a [`Failure`] (the proxy does that where the
//! errors arise).

use std::time::Duration;

use crate::classify::Class;

/// What went wrong with one attempt, in the terms the rules need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    // Before any byte of the request was written: the upstream saw nothing.
    /// The TCP connection was refused.
    ConnectRefused,
    /// The TCP connection (or DNS) did not complete in time.
    ConnectTimeout,
    /// The TLS handshake failed, before any HTTP byte.
    TlsHandshake,
    /// A pooled connection was found closed before the request was written.
    /// The HTTP/1.1 pool re-sends such a request on a fresh connection
    /// itself, so the attempt loop does not meet it today; the rule stays
    /// for any client that reports it.
    #[allow(dead_code)]
    ClosedBeforeWrite,

    // HTTP/2 told us it did not process the stream.
    /// `RST_STREAM` with `REFUSED_STREAM` (RFC 9113 §8.7).
    RefusedStream,
    /// `GOAWAY` whose last stream id is below this request's stream id; the
    /// caller makes that comparison.
    GoAwayNotProcessed,

    // After request bytes were sent: the upstream may have acted.
    /// The connection or stream was reset before a complete response.
    ResetAfterSend,
    /// No (complete) response within `per_try_timeout`.
    TimeoutAfterSend,
    /// The response could not be parsed.
    MalformedResponse,

    /// A complete response with this status, and its parsed `Retry-After`.
    Status(u16, Option<Duration>),
}

impl Failure {
    /// True when no byte of the request reached the upstream.
    #[cfg(test)]
    pub fn before_any_byte(&self) -> bool {
        matches!(
            self,
            Failure::ConnectRefused
                | Failure::ConnectTimeout
                | Failure::TlsHandshake
                | Failure::ClosedBeforeWrite
        )
    }

    /// True when the upstream said it did not process the request.
    #[cfg(test)]
    pub fn not_processed(&self) -> bool {
        matches!(self, Failure::RefusedStream | Failure::GoAwayNotProcessed)
    }

    /// True when the request was sent and no trustworthy answer came back.
    pub fn outcome_unknown_after_send(&self) -> bool {
        matches!(
            self,
            Failure::ResetAfterSend | Failure::TimeoutAfterSend | Failure::MalformedResponse
        )
    }

    /// The upstream's `Retry-After`, for `retry_after::decide_wait`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status(_, retry_after) => *retry_after,
            _ => None,
        }
    }
}

/// The answer of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the request again (subject to budget, attempts and deadline).
    Retry {
        reason: RetryReason,
        /// A hint that the fault looks like the region's, so a read may try
        /// the replica when the routing snapshot says it is healthy. Never
        /// set for writes.
        prefer_other_region: bool,
    },
    /// Pass the response or error back to the client.
    DoNotRetry {
        /// A write whose bytes left and whose fate is unknown: the caller
        /// answers 502 (504 after a timeout) with `failway-outcome: unknown`,
        /// counts `failway_outcome_unknown_total`, and never re-sends it.
        outcome_unknown: bool,
    },
}

#[cfg(test)]
impl Verdict {
    pub fn is_retry(&self) -> bool {
        matches!(self, Verdict::Retry { .. })
    }
}

/// Why a retry happened: the `reason` label of `failway_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    ConnectError,
    NotProcessed,
    Reset,
    Timeout,
    Status5xx,
    Status429,
}

impl RetryReason {
    /// Every reason, for registering label values up front.
    pub const ALL: [RetryReason; 6] = [
        RetryReason::ConnectError,
        RetryReason::NotProcessed,
        RetryReason::Reset,
        RetryReason::Timeout,
        RetryReason::Status5xx,
        RetryReason::Status429,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::ConnectError => "connect_error",
            RetryReason::NotProcessed => "not_processed",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::Status5xx => "status_5xx",
            RetryReason::Status429 => "status_429",
        }
    }
}

/// Decides whether an attempt that ended in `failure` may be retried.
///
/// `body_replayable` means the caller can send this request's body again
/// from its first byte: true for a body buffered within `retry.buffer_body`
/// (and for no body), and for a streaming body the caller got back unpolled
/// (hyper hands an unsent request back); false for a streaming body once any
/// of it was polled, since part of it may be gone, whatever the failure.
///
/// The rules, in order:
/// 1. A write whose bytes were sent and which got no trustworthy answer
///    (reset, timeout, malformed response) has an unknown outcome: it may have
///    been applied, so it is never re-sent, here or on another region.
/// 2. A body that cannot be replayed is never retried: a retry would send a
///    truncated or empty body.
/// 3. A failure before any byte was written (connect refused or timed out,
///    TLS handshake failed, pooled connection found closed) is retried for
///    every request, writes included: the upstream saw nothing.
/// 4. HTTP/2 `REFUSED_STREAM`, or a `GOAWAY` below this stream's id, is the
///    upstream saying it did not process the request: retried for every
///    request.
/// 5. After bytes were sent, only reads are retried (acting twice on a read
///    is harmless): on reset, timeout, 502, 503, 504, and 429 when the
///    upstream said when to come back (`Retry-After`). A malformed response
///    is not retried: it is usually deterministic (a protocol mismatch or a
///    broken upstream), so a retry would only spend budget.
/// 6. Other statuses are never retried: a 4xx other than 429 belongs to the
///    request; 500 and 501 usually do too; 505 and other 5xx are not
///    transient. A write's status is passed back as it is, even 502-504: the
///    upstream answered, so the caller relays that answer.
///
/// `prefer_other_region` is set for reads on connect refused/timeout, TLS
/// handshake failure, timeout after send and 502/503/504, the faults that
/// passive health counts against a region. It is not set for a pooled
/// connection found closed (an idle connection's normal fate), for
/// "not processed" (overload or a graceful connection shutdown, same region
/// is fine on a new connection), for a reset (most often one connection's
/// fate), or for 429 (which asks to back off, not to fail over). Never for
/// writes: where a write goes is the failover mode's decision alone.
pub fn decide(class: Class, failure: &Failure, body_replayable: bool) -> Verdict {
    let is_read = class == Class::Read;
    // Rule 1, checked before replayability so it holds for every body.
    let outcome_unknown = !is_read && failure.outcome_unknown_after_send();
    // Rule 2.
    if !body_replayable {
        return Verdict::DoNotRetry { outcome_unknown };
    }
    let retry = |reason, prefer_other_region: bool| Verdict::Retry {
        reason,
        prefer_other_region: prefer_other_region && is_read,
    };
    match *failure {
        // Rule 3.
        Failure::ConnectRefused | Failure::ConnectTimeout | Failure::TlsHandshake => {
            retry(RetryReason::ConnectError, true)
        }
        Failure::ClosedBeforeWrite => retry(RetryReason::ConnectError, false),
        // Rule 4.
        Failure::RefusedStream | Failure::GoAwayNotProcessed => {
            retry(RetryReason::NotProcessed, false)
        }
        // Rule 5.
        Failure::ResetAfterSend if is_read => retry(RetryReason::Reset, false),
        Failure::TimeoutAfterSend if is_read => retry(RetryReason::Timeout, true),
        Failure::Status(502..=504, _) if is_read => retry(RetryReason::Status5xx, true),
        Failure::Status(429, Some(_)) if is_read => retry(RetryReason::Status429, false),
        // Rules 1 (writes), 5 (malformed) and 6.
        Failure::ResetAfterSend
        | Failure::TimeoutAfterSend
        | Failure::MalformedResponse
        | Failure::Status(..) => Verdict::DoNotRetry { outcome_unknown },
    }
}

#[cfg(test)]
mod tests;
