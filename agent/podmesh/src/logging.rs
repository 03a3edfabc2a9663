//! Logs go to journald (with structured fields) under systemd, to stderr otherwise.

use tracing_subscriber::{prelude::*, EnvFilter};

/// True when our stderr is connected to the journal (systemd sets JOURNAL_STREAM).
fn under_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

pub fn init() {
    let filter = EnvFilter::try_from_env("PODMESH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if under_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                // No field prefix: the journal carries PODMESH_EVENT=..., not F_PODMESH_EVENT.
                registry.with(layer.with_syslog_identifier("podmesh".into()).with_field_prefix(None)).init();
                return;
            }
            Err(e) => eprintln!("podmesh: journald unavailable ({e}), logging to stderr"),
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                // Colours only for a terminal: a redirected log stays greppable.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}
