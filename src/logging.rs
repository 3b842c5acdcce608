//! The operational log: the proxy's own events on stderr.
//!
//! Only this crate's events are shown. Third-party crates (hyper, h2, rustls) are switched off
//! entirely: their debug output can carry request data, and no level of theirs is worth that.

use tracing_subscriber::EnvFilter;

/// The environment variable holding our level (`error`, `warn`, `info`, `debug`, `trace`).
pub const LEVEL_VAR: &str = "PORTCULLIS_LOG";

/// Installs the stderr subscriber; a second call is a no-op.
pub fn init() {
    let level = std::env::var(LEVEL_VAR)
        .ok()
        .filter(|l| matches!(l.as_str(), "error" | "warn" | "info" | "debug" | "trace"))
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::new(format!("off,portcullis={level}"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Its fallback report goes through `eprintln!`, which panics when stderr is a closed
        // pipe: a supervisor that stops reading must not crash the proxy.
        .log_internal_errors(false)
        .try_init();
}
