//! The writer thread: turns events into lines, writes one file per UTC day, deletes files past
//! retention, and never blocks the request path (it owns the disk; requests only enqueue).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

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
    hash_key: (String, RandomState),
    stdout: std::io::Stdout,
}

impl Writer {
    fn write(&mut self, event: &Event) {
        let date = utc_date(event.time);
        if self.hash_key.0 != date {
            self.hash_key = (date.clone(), RandomState::new());
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
            daily.write(&date, line);
        }
    }
}
