//! The writer thread: turns events into lines, writes one file per UTC day, deletes files past
//! retention, and never blocks the request path (it owns the disk; requests only enqueue).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, UNIX_EPOCH};

use super::{Event, Message, render};
use crate::config::LogSettings;
use crate::daily::{DailyFile, LogHealth, utc_date};

/// How long the writer sleeps once the queue is empty: the most a line waits for the disk.
const POLL_EVERY: Duration = Duration::from_millis(20);

pub(super) fn run(settings: LogSettings, queue: Receiver<Message>, health: Arc<LogHealth>) {
    let mut writer = Writer {
        daily: settings.dir.clone().map(|dir| {
            DailyFile::new(
                dir,
                "access",
                settings.retention_days,
                settings.buffer_lines,
                health,
            )
        }),
        day: None,
        hash_key: (String::new(), RandomState::new()),
        stdout: std::io::stdout(),
        settings,
    };
    loop {
        if let Some(daily) = &mut writer.daily {
            daily.sweep_if_due();
        }
        // Polled, never blocked on: a receiver waiting in `recv` would make every request's
        // send a futex wake-up and a context switch on the proxy's core.
        match queue.try_recv() {
            Ok(Message::Event(event)) => writer.write(&event),
            Ok(Message::Close) | Err(TryRecvError::Disconnected) => {
                if let Some(daily) = &mut writer.daily {
                    daily.close();
                }
                return;
            }
            Err(TryRecvError::Empty) => {
                if let Some(daily) = &mut writer.daily {
                    daily.flush();
                    daily.report_drops_if_due();
                }
                std::thread::sleep(POLL_EVERY);
            }
        }
    }
}

struct Writer {
    settings: LogSettings,
    daily: Option<DailyFile>,
    /// The UTC day (days since the epoch) of the last line: the date and the hashing key are
    /// made again only when it changes, not for every line.
    day: Option<u64>,
    /// The UTC date and the key client addresses are hashed with that day.
    hash_key: (String, RandomState),
    stdout: std::io::Stdout,
}

impl Writer {
    fn write(&mut self, event: &Event) {
        let day = event
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() / 86_400);
        if self.day != Some(day) {
            self.day = Some(day);
            self.hash_key = (utc_date(event.time), RandomState::new());
        }
        let client_hash = self
            .settings
            .client_hash
            .then_some(event.client)
            .flatten()
            .map(|ip| format!("{:016x}", self.hash_key.1.hash_one(ip)));
        let line = render(event, self.settings.path, client_hash);
        if line.len() <= 1 {
            return;
        }
        if self.settings.stdout {
            let _ = self.stdout.write_all(&line);
        }
        if let Some(daily) = &mut self.daily {
            daily.write(&self.hash_key.0, line);
        }
    }
}
