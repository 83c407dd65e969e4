//! One shutdown story for the three binaries: SIGTERM or SIGINT cancels one
//! token; everything that runs watches it. Under systemd the signal is also
//! where `STOPPING=1` is sent ([`crate::systemd`]).

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        crate::systemd::stopping("shutting down");
        cancel.cancel();
    });
    Ok(token)
}
