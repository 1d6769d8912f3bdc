//! Failover: the one-way `primary -> replica` decision (DESIGN.md §1).
//!
//! [`machine`] is the pure state machine: it is told what the health checks,
//! live traffic, the clock and operators say, and answers which mode failway
//! is in and why. It does no I/O; persisting its state is left to its owner.

pub mod machine;
