//! Stopping on SIGTERM or Ctrl-C, for the SDK's binary and the broker's workers alike.

use tokio::sync::broadcast;

/// A broadcast that fires on SIGTERM or Ctrl-C: every loop subscribed stops taking new work and
/// finishes what it holds. Must be called within a tokio runtime.
pub fn shutdown_on_signal() -> broadcast::Sender<()> {
    let (tx, _) = broadcast::channel(1);
    let sender = tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = sender.send(());
    });
    tx
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = ctrl_c.await;
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
