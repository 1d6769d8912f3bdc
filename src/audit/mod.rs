//! The audit file: one JSON line per transition, operator action (accepted or
//! refused), drill event and config reload, appended and fsynced before the
//! action it records is answered, rotated at `audit.max_size` keeping
//! `audit.keep` older files (`audit.jsonl.1` is the newest of them).
//!
//! The same [`Record`] is what a hook receives. A write that fails is an
//! [`AuditWriteError`]: operator actions are refused with it (503,
//! [`AUDIT_WRITE_ERROR_CODE`]) rather than carried out without a record,
//! while automatic transitions go ahead and are only counted
//! (`failway_audit_write_errors_total`). This module records; it decides
//! nothing, and it never sees a token (only the token's name, `by`).

mod record;
mod sink;
mod writer;

pub use record::{Kind, Record};
pub use sink::Sink;
pub use writer::{AuditLog, AuditMetrics, AuditWriteError};

/// The error code an operator action refused for want of a record carries.
pub const AUDIT_WRITE_ERROR_CODE: &str = "FAILWAY_AUDIT_WRITE_ERR";
