//! Passive health: judging a region down from the live requests it served.
//!
//! Active probes see a region every few seconds; live traffic sees it on every
//! request. A region is judged down when, over the last `window`, at least
//! `min_requests` requests reached it and the share of them that failed is at
//! least `error_ratio` (`[health.passive]`).
//!
//! Only failures that speak about the region count as errors: connect errors,
//! timeouts, resets and 502/503/504. A 4xx (429 included: it means "back
//! off", not "down") is the client's or the quota's business, and 500/501
//! usually belong to one request, not to the region (docs/design.md §1).
//!
//! Memory is fixed whatever the traffic: the window is cut into
//! [`BUCKETS`] time buckets of counters, reused as a ring. The cost is
//! granularity: an outcome leaves the window between `window - window/BUCKETS`
//! and `window` after it was recorded, when its bucket is reused.
//!
//! This module does not decide failover (the failover machine does, with
//! the replica's health) and does not clear itself: a region that gets no
//! traffic drops below `min_requests` and is no longer judged down. Its
//! owner resets it when traffic moves to the region (failover, failback).

use std::time::{Duration, Instant};

/// How many counter buckets span one window.
pub const BUCKETS: usize = 10;

/// What happened to one live request on a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The region answered; see [`Outcome::Status`] for answers that count.
    Success,
    ConnectError,
    Timeout,
    /// The connection was reset or closed before a full response.
    Reset,
    /// The region answered with this status.
    Status(u16),
}

impl Outcome {
    /// Whether this outcome counts against the region.
    pub fn is_error(self) -> bool {
        match self {
            Outcome::ConnectError | Outcome::Timeout | Outcome::Reset => true,
            Outcome::Status(status) => matches!(status, 502..=504),
            Outcome::Success => false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Absolute bucket number (time since origin / bucket width).
    epoch: u64,
    requests: u32,
    errors: u32,
}

/// Requests and errors seen over the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowCounts {
    pub requests: u64,
    pub errors: u64,
}

/// Sliding-window error-ratio detector for one region.
#[derive(Debug, Clone)]
pub struct PassiveDetector {
    bucket_nanos: u128,
    min_requests: u32,
    error_ratio: f64,
    /// Time of the first observation; bucket numbers count from here.
    origin: Option<Instant>,
    buckets: [Bucket; BUCKETS],
}

impl PassiveDetector {
    /// A detector with an empty window. A zero `window` is taken as the
    /// smallest measurable one; a `min_requests` of 0 still needs one request,
    /// and a NaN `error_ratio` never judges the region down.
    pub fn new(window: Duration, min_requests: u32, error_ratio: f64) -> Self {
        PassiveDetector {
            bucket_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            min_requests,
            error_ratio,
            origin: None,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// Forgets every outcome: traffic moved to the region, and what it
    /// answered before (as the region not served from) says nothing of now.
    pub fn reset(&mut self) {
        self.origin = None;
        self.buckets = [Bucket::default(); BUCKETS];
    }

    /// New limits (a configuration reload) that keep what the window holds,
    /// so a verdict in progress goes on. A new `window` changes the bucket
    /// width: the outcomes of the old window are carried into the current
    /// bucket of the new one and leave it one new window from `now`.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        window: Duration,
        min_requests: u32,
        error_ratio: f64,
    ) {
        let fresh = PassiveDetector::new(window, min_requests, error_ratio);
        self.min_requests = fresh.min_requests;
        self.error_ratio = fresh.error_ratio;
        if fresh.bucket_nanos == self.bucket_nanos {
            return;
        }
        let held = self.counts(now);
        let had_origin = self.origin.is_some();
        *self = fresh;
        if had_origin {
            self.origin = Some(now);
            self.buckets[0] = Bucket {
                epoch: 0,
                requests: u32::try_from(held.requests).unwrap_or(u32::MAX),
                errors: u32::try_from(held.errors).unwrap_or(u32::MAX),
            };
        }
    }

    /// Counts one live request's outcome observed at `now`.
    pub fn record(&mut self, now: Instant, outcome: Outcome) {
        let origin = *self.origin.get_or_insert(now);
        let epoch = self.epoch(origin, now);
        let bucket = &mut self.buckets[slot(epoch)];
        if bucket.epoch != epoch {
            if bucket.epoch > epoch {
                // Older than the window the ring already moved past: drop it.
                return;
            }
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.requests = bucket.requests.saturating_add(1);
        if outcome.is_error() {
            bucket.errors = bucket.errors.saturating_add(1);
        }
    }

    /// Requests and errors recorded within the window ending at `now`.
    pub fn counts(&self, now: Instant) -> WindowCounts {
        let Some(origin) = self.origin else {
            return WindowCounts::default();
        };
        let current = self.epoch(origin, now);
        self.buckets
            .iter()
            // Buckets slightly ahead of `now` (recorded by another task with
            // a later clock reading) still count.
            .filter(|b| current < b.epoch.saturating_add(BUCKETS as u64))
            .fold(WindowCounts::default(), |acc, b| WindowCounts {
                requests: acc.requests + u64::from(b.requests),
                errors: acc.errors + u64::from(b.errors),
            })
    }

    /// Whether the region is judged down at `now`.
    pub fn is_down(&self, now: Instant) -> bool {
        let WindowCounts { requests, errors } = self.counts(now);
        requests > 0
            && requests >= u64::from(self.min_requests)
            && errors as f64 >= self.error_ratio * requests as f64
    }

    fn epoch(&self, origin: Instant, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        u64::try_from(elapsed / self.bucket_nanos).unwrap_or(u64::MAX)
    }
}

fn slot(epoch: u64) -> usize {
    // The remainder is below BUCKETS, so it fits a usize.
    (epoch % BUCKETS as u64) as usize
}

#[cfg(test)]
mod tests;
