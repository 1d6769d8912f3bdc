//! What operators act through, set up at start: the audit file and hooks
//! every service records to, and the named admin tokens.

use prometheus::Registry;

use super::StartError;
use crate::config::Config;

/// The audit file (checked now: an unwritable one is named at start, and
/// operator actions are refused until it can be written) and the hooks.
pub(super) fn start_audit(
    config: &Config,
    registry: &Registry,
) -> Result<crate::audit::Sink, StartError> {
    use crate::audit::{AuditLog, AuditMetrics, Sink};
    use crate::hooks::{HookMetrics, Hooks};
    let hooks = Hooks::start(&config.hooks, HookMetrics::register(registry)?)?;
    let metrics = AuditMetrics::register(registry)?;
    let log = config.audit.path.clone().map(|path| {
        let log = AuditLog::new(
            path,
            config.audit.max_size.0,
            config.audit.keep,
            Some(metrics),
        );
        if let Err(e) = log.check() {
            tracing::error!(error = %e, "operator actions will be refused until the audit file can be written");
        }
        log
    });
    Ok(Sink::start(log, hooks))
}

/// `admin.tokens_file`, read once now: a malformed file stops the start.
pub(super) fn admin_tokens(
    config: &Config,
) -> Result<Option<crate::admin::tokens::AdminTokens>, StartError> {
    let tokens = config
        .admin
        .tokens_file
        .clone()
        .map(crate::admin::tokens::AdminTokens::new);
    if let Some(t) = &tokens {
        t.check()?;
    }
    Ok(tokens)
}
