//! The attempt loop: reserve, send, judge, decide, choose, wait.
//!
//! - reserve: room for the attempt under the region's connection cap,
//!   waited for before the per-try timer starts (the wait is failway's,
//!   not the region's: a wait that runs out is answered 503 and counts
//!   against no region);
//! - send: one attempt to a region, bounded by `retry.per_try_timeout` and
//!   the request's deadline;
//! - judge: what the attempt's result means (`error::judge`: the retry
//!   rules' `Failure`, the passive-health outcome, the client's error);
//! - decide: `retry::decide` (reads, or nothing sent yet; replayable bodies
//!   only), then `retry.max_attempts`;
//! - choose: `routing::next_region`;
//! - wait: backoff with full jitter, `Retry-After` from the region retried,
//!   the deadline, and the retry budget.
//!
//! The regions are behind [`Upstreams`], so this loop is tested under paused
//! time without sockets; the proxy's implementation builds each attempt's
//! request and sends it through the region's client. Which answer the
//! client gets in the end is [`Answers`]'s rule.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header;
use http::Response;
use tokio::time::Instant;

use super::super::error::{self, Judged, ProxyError};
use super::super::refusal::Refusal;
use super::answer::{Answers, Attempted};
use super::{body_error, BodySource};
use crate::classify::Class;
use crate::failover::Snapshot;
use crate::health::passive::Outcome;
use crate::proxy::metrics::ProxyMetrics;
use crate::region::Region;
use crate::retry::{self, Backoff, Failure, RetryBudget, Verdict, WaitDecision};
use crate::routing::{self, Retrying};
use crate::upstream::body::{BodyFailure, BodyProgress};
use crate::upstream::client::{RequestBody, UpstreamFailure};

/// Why an attempt got no response.
pub(crate) enum AttemptError {
    /// It could not be made at all; the request ends with this answer.
    Refused(Refusal),
    /// The region (or the connection to it) failed it.
    Upstream(UpstreamFailure),
}

/// The two regions, as the attempt loop sees them.
pub(crate) trait Upstreams {
    type Body;
    /// Room for one attempt to a region.
    type Ticket;

    /// Waits for room to send to `region` (a connection under its cap),
    /// until `deadline` at most.
    async fn reserve(
        &self,
        region: Region,
        deadline: Instant,
    ) -> Result<Self::Ticket, AttemptError>;

    /// Sends attempt number `attempt` (from 1) to `region` on `ticket`.
    async fn send(
        &self,
        region: Region,
        attempt: u32,
        body: RequestBody,
        ticket: Self::Ticket,
    ) -> Result<Response<Self::Body>, AttemptError>;

    /// The failover state now (a read's retry follows it).
    fn snapshot(&self) -> Arc<Snapshot>;

    /// What `region` did with an attempt, for passive health.
    fn record_outcome(&self, region: Region, outcome: Outcome);

    /// Why the client's request body failed, if it did: then no region is
    /// to blame for the attempt.
    fn body_failure(&self) -> Option<BodyFailure>;

    /// Where the client's request body stands.
    fn body_progress(&self) -> BodyProgress;

    /// Resolves once the client's request body is complete.
    async fn body_completed(&self);
}

/// What the loop needs to know about the request and the retry settings.
pub(crate) struct Plan<'a> {
    pub class: Class,
    pub first: Region,
    pub deadline: Instant,
    pub per_try_timeout: Duration,
    pub max_attempts: u32,
    pub backoff: &'a Backoff,
    pub max_retry_after: Duration,
    /// For the 413 of a body that grew past it while streaming.
    pub max_body: u64,
    pub budget: &'a RetryBudget,
    pub metrics: &'a ProxyMetrics,
}

/// What became of one attempt within its time.
enum Sent<B> {
    Answered(Result<Response<B>, AttemptError>),
    /// No answer in time. `client_slow`: the client's body was still
    /// arriving, so the time was the client's, not the region's.
    TimedOut {
        client_slow: bool,
    },
}

/// How an attempt ended.
enum Judgement<B> {
    /// A response to relay as it is.
    Done(Response<B>),
    /// A failure the retry rules look at, and the answer if none follows.
    Failed(Failure, Attempted<B>),
}

/// Runs attempts until one answers, the rules say stop, or time, attempts
/// or budget run out.
pub(crate) async fn run<U: Upstreams>(
    up: &U,
    plan: &Plan<'_>,
    source: &mut BodySource,
    rng: &mut fastrand::Rng,
) -> Result<(Response<U::Body>, Region), Refusal> {
    plan.budget.deposit(Instant::now().into_std());
    let mut answers = Answers::new(plan.first);
    let mut region = plan.first;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let Some(body) = source.take() else {
            // A streamed body cannot be sent twice; the rules never ask.
            return Err(ProxyError::UpstreamReset.into());
        };
        let (sent, attempt_deadline) = match up.reserve(region, plan.deadline).await {
            Ok(ticket) => {
                // Pinned here and lent: the attempt's future (and the body
                // and ticket it holds) is stored once, not again as
                // `send_within`'s arguments.
                let send = std::pin::pin!(up.send(region, attempt, body, ticket));
                send_within(up, plan, send).await
            }
            Err(e) => (Sent::Answered(Err(e)), Instant::now()),
        };
        let (failure, answer) = match judge(up, plan, region, attempt_deadline, sent)? {
            Judgement::Done(resp) => return answers.finish(region, resp),
            Judgement::Failed(failure, answer) => (failure, answer),
        };
        let (reason, prefer_other) = match retry::decide(plan.class, &failure, source.replayable())
        {
            Verdict::Retry {
                reason,
                prefer_other_region,
            } => (reason, prefer_other_region),
            Verdict::DoNotRetry { outcome_unknown } => {
                return answers.give_up(answer, outcome_unknown, region, plan.metrics);
            }
        };
        if attempt >= plan.max_attempts {
            return answers.give_up(answer, false, region, plan.metrics);
        }
        let retrying = Retrying {
            tried: region,
            first: plan.first,
            prefer_other,
            last: attempt + 1 >= plan.max_attempts,
        };
        let next = routing::next_region(plan.class, &up.snapshot(), retrying);
        let Some(wait) = wait_before(plan, attempt, &failure, next == region, rng) else {
            return answers.give_up(answer, false, region, plan.metrics);
        };
        answers.retrying(next, answer);
        plan.metrics.retry(next, reason);
        tracing::debug!(
            from = region.as_str(),
            to = next.as_str(),
            attempt,
            reason = reason.as_str(),
            wait_ms = wait.as_millis() as u64,
            "retrying"
        );
        region = next;
        tokio::time::sleep(wait).await;
    }
}

/// Sends one attempt, bounded by `per_try_timeout` and the request's
/// deadline. The per-try timer measures the region: while the client's
/// body is still arriving when it fires, it restarts once the body is in.
/// Returns the attempt's deadline as it ended.
async fn send_within<U, F>(
    up: &U,
    plan: &Plan<'_>,
    mut send: Pin<&mut F>,
) -> (Sent<U::Body>, Instant)
where
    U: Upstreams,
    F: Future<Output = Result<Response<U::Body>, AttemptError>>,
{
    let mut until = plan.deadline.min(Instant::now() + plan.per_try_timeout);
    loop {
        tokio::select! {
            biased;
            r = send.as_mut() => return (Sent::Answered(r), until),
            () = tokio::time::sleep_until(until) => {}
        }
        if up.body_progress() != BodyProgress::WaitingOnClient {
            return (Sent::TimedOut { client_slow: false }, until);
        }
        if until >= plan.deadline {
            return (Sent::TimedOut { client_slow: true }, until);
        }
        tokio::select! {
            biased;
            r = send.as_mut() => return (Sent::Answered(r), until),
            () = up.body_completed() => {}
            () = tokio::time::sleep_until(plan.deadline) => {
                return (Sent::TimedOut { client_slow: true }, plan.deadline);
            }
        }
        until = plan.deadline.min(Instant::now() + plan.per_try_timeout);
    }
}

/// What one attempt's result means; `Err` ends the request at once (the
/// client's body failed, or the attempt could not be made).
#[inline(always)]
fn judge<U: Upstreams>(
    up: &U,
    plan: &Plan<'_>,
    region: Region,
    attempt_deadline: Instant,
    sent: Sent<U::Body>,
) -> Result<Judgement<U::Body>, Refusal> {
    let failed = match sent {
        Sent::Answered(Ok(resp)) => {
            let status = resp.status().as_u16();
            up.record_outcome(region, Outcome::Status(status));
            if !matches!(status, 429 | 502..=504) {
                return Ok(Judgement::Done(resp));
            }
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| retry::retry_after::parse(v.as_bytes(), SystemTime::now()));
            return Ok(Judgement::Failed(
                Failure::Status(status, retry_after),
                Ok(resp),
            ));
        }
        Sent::Answered(Err(AttemptError::Refused(refusal))) => return Err(refusal),
        Sent::Answered(Err(AttemptError::Upstream(kind))) => Some(kind),
        Sent::TimedOut { client_slow: true } => {
            // The client did not send its body within the request's time.
            return Err(ProxyError::BodyTimeout.into());
        }
        Sent::TimedOut { client_slow: false } => None,
    };
    if let Some(f) = up.body_failure() {
        return Err(body_error(f, plan.max_body).into());
    }
    let Some(kind) = failed else {
        up.record_outcome(region, Outcome::Timeout);
        let e = if attempt_deadline >= plan.deadline {
            ProxyError::RequestTimeout
        } else {
            ProxyError::UpstreamTimeout
        };
        return Ok(Judgement::Failed(Failure::TimeoutAfterSend, Err(e.into())));
    };
    // A reset while the client's body was still arriving may be the
    // client's doing (a region that gave up on a slow upload): neutral for
    // passive health. Connect errors and bad responses stay the region's.
    let clients_pace =
        kind == UpstreamFailure::Reset && up.body_progress() == BodyProgress::WaitingOnClient;
    match error::judge(kind) {
        Judged::Client => Err(body_error(BodyFailure::Client, plan.max_body).into()),
        Judged::Local(error) => {
            if let UpstreamFailure::LocalResources(k) = kind {
                plan.metrics.local_error(k);
            }
            Err(error.into())
        }
        Judged::Upstream {
            failure,
            outcome,
            error,
        } => {
            if !clients_pace {
                up.record_outcome(region, outcome);
            }
            Ok(Judgement::Failed(failure, Err(error.into())))
        }
    }
}

/// How long to wait before the next attempt, or `None` when it should not
/// be made: `Retry-After` above `retry.max_retry_after`, no time left
/// before the deadline, or the budget spent.
fn wait_before(
    plan: &Plan<'_>,
    attempt: u32,
    failure: &Failure,
    same_region: bool,
    rng: &mut fastrand::Rng,
) -> Option<Duration> {
    let backoff = plan.backoff.delay(attempt - 1, rng);
    let remaining = plan.deadline.saturating_duration_since(Instant::now());
    // Retry-After speaks for the region that sent it.
    let retry_after = failure.retry_after().filter(|_| same_region);
    let wait = match retry::decide_wait(backoff, retry_after, plan.max_retry_after, remaining) {
        WaitDecision::Wait(w) => w,
        WaitDecision::GiveUp(why) => {
            tracing::debug!(reason = why.as_str(), "not retrying");
            return None;
        }
    };
    if !plan.budget.try_withdraw(Instant::now().into_std()) {
        plan.metrics.retry_budget_exhausted.inc();
        return None;
    }
    Some(wait)
}

#[cfg(test)]
mod tests;
