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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Its fallback report goes through `eprintln!`, which panics when stderr is a closed
        // pipe: a supervisor that stops reading must not crash the proxy.
        .log_internal_errors(false)
        .try_init();
}

/// Lets a repeated operational event through at most once per period, reporting how many were
/// held back, so a scanner's handshake failures or a full disk cannot flood the log.
#[derive(Debug)]
pub struct Throttle {
    period: std::time::Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
    held_back: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// At most one event per `period`.
    pub const fn new(period: std::time::Duration) -> Self {
        Self {
            period,
            last: std::sync::Mutex::new(None),
            held_back: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Calls `emit` with the number of occurrences it stands for, or counts this one.
    pub fn warn(&self, emit: impl FnOnce(u64)) {
        use std::sync::atomic::Ordering;
        let due = self.last.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|t| t.elapsed() >= self.period);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        });
        if due {
            emit(self.held_back.swap(0, Ordering::Relaxed) + 1);
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An error and its causes on one line, each cause once: many errors already say their source
/// in their own message (`writing FILE: {source}`), and printing the chain after it would say
/// it twice.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        cause = next.source();
    }
    said
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("writing ca.crt: {0}")]
        Says(#[source] std::io::Error),
        #[error("writing ca.crt")]
        Quiet(#[source] std::io::Error),
    }

    #[test]
    fn each_cause_is_said_once() {
        let denied = || std::io::Error::from_raw_os_error(13);
        let said = chain(&Outer::Says(denied()));
        assert_eq!(said.matches("Permission denied").count(), 1, "{said}");
        let said = chain(&Outer::Quiet(denied()));
        assert_eq!(said.matches("Permission denied").count(), 1, "{said}");
        assert!(said.starts_with("writing ca.crt: "), "{said}");
    }
}
