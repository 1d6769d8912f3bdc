//! Process signals: the first SIGTERM or SIGINT starts a graceful drain; a
//! second one exits at once (an operator who presses Ctrl-C twice means it).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves on the first SIGTERM/SIGINT, then arms the second-signal exit.
pub async fn wait_for_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; graceful shutdown is unavailable");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; draining"),
        _ = int.recv() => tracing::info!("SIGINT received; draining"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal received; exiting at once");
        std::process::exit(130);
    });
}
