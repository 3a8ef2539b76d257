//! One way for a node to learn it must stop, and one way to drain.
//!
//! [`on_signals`] turns the first SIGTERM or SIGINT into a cancelled
//! [`CancellationToken`]; everything that must stop (accept loops, agents, background
//! tasks) waits on a clone. [`drain`] then waits for in-flight work to finish, up to a
//! deadline.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// SIGTERM and SIGINT as a sequence of stop requests, for a process that reacts to a
/// second one too (a supervisor escalating to SIGKILL, a tool quitting at once). The
/// handlers are installed by [`StopSignals::install`], so a signal that arrives right
/// after is not lost.
pub struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers. Must be called inside a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT and names it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// A token cancelled on the first SIGTERM or SIGINT. Must be called inside a tokio
/// runtime; the handlers are installed before it returns, so a signal that arrives
/// right after is not lost.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let mut signals = StopSignals::install()?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            name = signals.recv() => name,
            () = cancel.cancelled() => return,
        };
        // Cancel first: nothing that can fail (logging to a closed stderr) may stand
        // between the signal and the shutdown.
        cancel.cancel();
        tracing::info!("received {name}");
    });
    Ok(token)
}

/// Waits until `idle()` says nothing is in flight, checking every few milliseconds,
/// or until `grace` has passed. Returns whether it drained in time.
pub async fn drain(grace: Duration, mut idle: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if idle() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
