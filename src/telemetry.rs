//! Logging setup: tracing-subscriber with `RUST_LOG` filtering (default
//! `info`) and a choice of human (`pretty`) or `json` lines on stderr.
//!
//! The access log is the `failway::access` target, one event per request.
//! Nothing here ever formats headers or bodies; the data path only hands
//! tracing values that are safe to print.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The filter from `RUST_LOG` (or `default_filter` when unset or invalid),
/// with rustls held to errors unless `RUST_LOG` names it.
fn filter(env: Option<&str>, default_filter: &str) -> EnvFilter {
    let mut filter = env
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    if !env.is_some_and(|v| v.contains("rustls")) {
        // rustls warns on every handshake whose client names an IP address
        // in SNI (wrk, some HTTP libraries do): a client could flood the
        // log at `warn`. Its errors still show.
        filter = filter.add_directive(RUSTLS_QUIET.parse().expect("static directive"));
    }
    filter
}

/// rustls' own log level unless `RUST_LOG` names it.
const RUSTLS_QUIET: &str = "rustls=error";

/// Installs the global subscriber with the default filter `info`; later
/// calls are ignored (tests).
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// [`init`] with another default filter (`RUST_LOG` still wins).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), default_filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Pretty => builder.with_target(true).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_warnings_are_quiet_unless_asked_for() {
        let quiet = filter(None, "info").to_string();
        assert!(quiet.contains("rustls=error"), "{quiet}");
        let quiet = filter(Some("warn,failway=debug"), "info").to_string();
        assert!(
            quiet.contains("rustls=error") && quiet.contains("failway=debug"),
            "{quiet}"
        );
        let asked = filter(Some("rustls=debug"), "info").to_string();
        assert!(!asked.contains("rustls=error"), "{asked}");
    }
}
