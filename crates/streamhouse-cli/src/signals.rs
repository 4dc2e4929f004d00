//! Stopping client commands on SIGINT or SIGTERM: the first signal asks the
//! command to finish cleanly (commit what it handled, leave its group); a
//! second one exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::BoxError;

/// Whether a stop was asked for; see the module docs.
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Installs the handlers now, so a signal that comes early is not lost.
    pub fn install() -> Result<Shutdown, BoxError> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (tx, requested) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tx.send_replace(true);
            eprintln!("stopping: committing and leaving the group (signal again to exit at once)");
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            std::process::exit(130);
        });
        Ok(Shutdown { requested })
    }

    /// Resolves once a stop is asked for.
    pub async fn requested(&mut self) {
        let _ = self.requested.wait_for(|stop| *stop).await;
    }
}
