//! The guest daemons' lifecycle, one copy for `podmesh attest`, `podmesh proxy` and the
//! in-process proxy of the tests: the shutdown signal, the sd-notify messages, the exit codes,
//! and opening the pod (the only `deny::remove` outside `podmesh deny remove`).

/// `podmesh attest`: no TEE to attest with (EX_UNAVAILABLE); the unit does not restart on it.
pub const EXIT_NO_TEE: u8 = 69;
/// `podmesh attest`: invalid configuration (EX_CONFIG); the unit does not restart on it.
pub const EXIT_CONFIG: u8 = 78;
/// `podmesh config check`: the mesh configuration is invalid.
pub const EXIT_CONFIG_INVALID: u8 = 2;
/// `podmesh deny status`: the table is absent.
pub const EXIT_DENY_ABSENT: u8 = 3;

/// Installs the SIGTERM/SIGINT handlers now (so an early signal is not lost) and returns a
/// future that resolves on the first of them (and on every later one: it can be polled again
/// through [`Shutdown::recv`]).
pub fn shutdown_signal() -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok(Shutdown { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
}

/// SIGTERM or SIGINT, whichever comes first.
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Waits for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// Resolves on the first signal, after telling systemd that we are stopping.
    pub async fn stopping(mut self) {
        self.recv().await;
        notify_stopping();
    }
}

/// `READY=1`, optionally with a status line and the event that made us ready (a
/// `PODMESH_EVENT=` field in the journal). Not under systemd (no NOTIFY_SOCKET) a no-op.
pub fn notify_ready(status: Option<&str>, event: Option<&str>) {
    let event = event.map(|e| format!("PODMESH_EVENT={e}"));
    let mut states = vec![sd_notify::NotifyState::Ready];
    states.extend(status.map(sd_notify::NotifyState::Status));
    states.extend(event.as_deref().map(sd_notify::NotifyState::Custom));
    notify(&states);
}

/// `STOPPING=1`.
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// `STATUS=...` (what `systemctl status` shows).
pub fn notify_status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(PODMESH_EVENT = "notify_failed", "sd_notify failed: {e}");
    }
}

/// Opens the pod: removes the deny table of `netns` (`None`: our own) and logs the one
/// `deny_removed` event with the reason. Returns whether the table was installed.
pub fn open_pod(netns: Option<&str>, why: &str) -> Result<bool, firewall::deny::DenyError> {
    let was = firewall::deny::remove(netns)?;
    tracing::info!(
        PODMESH_EVENT = "deny_removed",
        NETNS = netns.unwrap_or(""),
        "deny table {}: {why}",
        if was { "removed" } else { "was already absent" }
    );
    Ok(was)
}
