//! Graceful shutdown: one token every server, relay and sweeper of the process watches.

use tokio_util::sync::CancellationToken;

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
        () = terminate => tracing::info!("sigterm received, shutting down"),
    }
}

/// A token cancelled when the process receives SIGTERM or Ctrl-C.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        signal().await;
        trigger.cancel();
    });
    token
}

/// Runs `work` (a service, say) to its end; if it fails, panics or is dropped before its end,
/// cancels `token`, so the other services of the process stop too: a suite runs whole or not at
/// all.
pub async fn cancel_on_error<T, E>(
    work: impl Future<Output = Result<T, E>>,
    token: CancellationToken,
) -> Result<T, E> {
    // Cancels when dropped: by an error below, or by a panic unwinding through here.
    let armed = token.drop_guard();
    let result = work.await;
    if result.is_ok() {
        armed.disarm();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_stops_the_others_and_a_success_does_not() {
        let token = CancellationToken::new();
        let ok: Result<u8, &str> = cancel_on_error(async { Ok(1) }, token.clone()).await;
        assert_eq!(ok, Ok(1));
        assert!(
            !token.is_cancelled(),
            "a service that ends well stops nothing"
        );
        let failed: Result<u8, &str> = cancel_on_error(async { Err("bind") }, token.clone()).await;
        assert_eq!(failed, Err("bind"));
        assert!(token.is_cancelled(), "a failed service stops the others");
    }

    #[tokio::test]
    async fn a_panic_stops_the_others() {
        let token = CancellationToken::new();
        let panicked = tokio::spawn(cancel_on_error(
            async { panic!("a service's bug") as Result<(), ()> },
            token.clone(),
        ))
        .await;
        assert!(panicked.is_err_and(|err| err.is_panic()));
        assert!(
            token.is_cancelled(),
            "a service that panicked stops the others"
        );
    }
}
