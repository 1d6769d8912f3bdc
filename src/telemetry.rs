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

/// Installs the global subscriber with the default filter `info`; later
/// calls are ignored (tests).
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// [`init`] with another default filter (`RUST_LOG` still wins).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
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
