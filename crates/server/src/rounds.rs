//! The loop both background senders run (the dispatcher's invites and the
//! webhook posts): a round, another at once while there was work, a pause
//! of `idle` when there was none, until told to stop.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A sender running its rounds in the background.
pub struct RunningRounds {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRounds {
    /// Lets the round in hand finish (what it sent recorded), then stops.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Spawns the loop: `round` gets the stop token (so a long round can end
/// early) and answers whether it found work. A failed round is logged
/// (`what` names the sender) and counts as idle, so a database that is
/// away is asked again after a pause, not in a tight loop.
pub(crate) fn spawn_rounds<F, Fut, E>(
    what: &'static str,
    idle: Duration,
    stop: CancellationToken,
    mut round: F,
) -> RunningRounds
where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = Result<bool, E>> + Send,
    E: Display,
{
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        loop {
            let busy = match round(stopped.clone()).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::error!(error = %e, "{what} round failed; trying again shortly");
                    false
                }
            };
            if stopped.is_cancelled() {
                break;
            }
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    () = stopped.cancelled() => break,
                }
            }
        }
    });
    RunningRounds { stop, task }
}
