//! Retries (docs/design.md §4): the pure decisions, with time passed in.
//!
//! - [`policy`]: whether a failed attempt may be sent again, and why; the one
//!   place that decides retryability.
//! - [`backoff`]: exponential backoff with full jitter.
//! - [`retry_after`]: `Retry-After` parsing, and wait-or-give-up against
//!   `max_retry_after` and the request's deadline.
//! - [`budget`]: a lock-free retry budget that stops retry storms.
//!
//! The proxy's retry layer combines them for each failed attempt: `decide`,
//! then `max_attempts`, then `RetryBudget::try_withdraw`, then
//! `Backoff::delay` and `decide_wait`, then sleep and re-send. Nothing here
//! performs I/O, sleeps, reads a clock or records metrics; that is the
//! layer's job, which keeps these rules testable as plain functions.

pub mod backoff;
pub mod budget;
pub mod policy;
pub mod retry_after;

pub use backoff::Backoff;
pub use budget::RetryBudget;
pub use policy::{decide, Failure, RetryReason, Verdict};
pub use retry_after::{decide_wait, WaitDecision};
