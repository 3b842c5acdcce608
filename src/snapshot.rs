//! Snapshots of the proxy's own state, on the policy's backup schedule. With `[snapshots]
//! recipients` an archive is encrypted to them (age) and complete: the config, every file it
//! names (certificates and keys, the employee CA, CRLs, TOTP secrets, the shared secrets, the
//! employees' register, the access requests), the ACME cache directory and the audit trail, so
//! that `portcullis restore` brings a working instance back on a rebuilt machine. Without
//! recipients it holds no secret: the config, the ACME cache and the audit trail only. Never
//! the access log: it has no value for a restore and the policy keeps it 15 to 30 days.
//!
//! Members are named by their absolute path without the leading `/`, with their mode, owner
//! ids and owner names; the config is the first file, after its directory. Audit files are taken up to their last
//! complete line, so a line being appended meanwhile is never cut in two.

mod apply;
mod archive;
mod name;
mod owners;
mod restore;
mod retention;
mod verbs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::audit::{Audit, AuditRecord, Timestamp};
use crate::config::{AgeRecipient, Config, SYSTEM_ROOTS, SnapshotSettings};
use crate::lifecycle::Lifecycle;

pub use archive::take;
pub use restore::{Member, Restorable, RestoreError, read};
pub use retention::{Pruned, kept, prune};
pub use verbs::{RestoreOptions, RestoreVerbError, Restored, restore};

/// Why a snapshot could not be taken or pruned.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file to archive, or the archive, could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The clock is outside what an archive name can carry.
    #[error("the clock cannot be written as a date")]
    Clock,
    /// age refused the recipients.
    #[error("cannot encrypt to [snapshots] recipients: {0}")]
    Encrypt(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What goes into a snapshot.
#[derive(Debug, Clone)]
pub struct Sources {
    config: PathBuf,
    acme_cache: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    /// Every other file the config names; only with recipients.
    files: Vec<PathBuf>,
    recipients: Vec<AgeRecipient>,
}

impl Sources {
    /// The state of the instance running `config`, read from `config_path`.
    pub fn of(config: &Config, config_path: &Path) -> Self {
        let recipients = config
            .snapshots
            .as_ref()
            .map(|s| s.recipients.clone())
            .unwrap_or_default();
        let files = if recipients.is_empty() {
            Vec::new()
        } else {
            let mut files: Vec<PathBuf> = (config.files.read.iter())
                .chain(&config.files.kept)
                // The system's, not the instance's.
                .filter(|f| *f != Path::new(SYSTEM_ROOTS))
                .cloned()
                .collect();
            files.sort();
            files.dedup();
            files
        };
        Self {
            config: config_path.to_owned(),
            // With a shared store the account and certificates live there, not on this disk.
            acme_cache: config
                .acme
                .as_ref()
                .filter(|a| a.store.is_none())
                .map(|a| a.cache_dir.clone()),
            log_dir: config.log.dir.clone(),
            files,
            recipients,
        }
    }
}

/// A written archive.
#[derive(Debug)]
pub struct Taken {
    /// Its path.
    pub archive: PathBuf,
    /// The files in it, as named in the archive.
    pub members: Vec<String>,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

pub(super) fn is_audit_file(name: &str) -> bool {
    name.starts_with("audit-") && name.ends_with(".jsonl")
}

/// Takes one snapshot and prunes, each outcome in the audit trail.
pub fn snapshot_and_prune(
    sources: &Sources,
    settings: &SnapshotSettings,
    audit: &Audit,
    now: SystemTime,
) -> Result<Taken, SnapshotError> {
    let failed = |e: SnapshotError| {
        audit.record(AuditRecord::SnapshotFailed {
            ts: Timestamp::now(),
            reason: e.to_string(),
        });
        e
    };
    let taken = take(sources, &settings.dir, now).map_err(failed)?;
    audit.record(AuditRecord::Snapshot {
        ts: Timestamp::now(),
        archive: taken.archive.display().to_string(),
        files: taken.members.len() as u64,
        bytes: taken.bytes,
        sha256: taken.sha256.clone(),
        encrypted: !sources.recipients.is_empty(),
    });
    let pruned = prune(&settings.dir, &settings.retention, now).map_err(failed)?;
    for archive in pruned.removed {
        audit.record(AuditRecord::SnapshotPruned {
            ts: Timestamp::now(),
            archive: archive.display().to_string(),
        });
    }
    for path in pruned.skipped {
        tracing::warn!(path = %path.display(), "not a regular file: left out of pruning");
        audit.record(AuditRecord::SnapshotSkipped {
            ts: Timestamp::now(),
            path: path.display().to_string(),
        });
    }
    if let Some(held) = pruned.held {
        tracing::warn!(
            newest = held.newest,
            reason = held.doubt.reason(),
            "snapshot pruning held"
        );
        audit.record(AuditRecord::RetentionHeld {
            ts: Timestamp::now(),
            kind: "snapshots".to_owned(),
            reason: held.doubt.reason().to_owned(),
            newest: held.newest,
        });
    }
    Ok(taken)
}

/// The built-in schedule: a snapshot every `every`, until the proxy drains.
pub(crate) fn schedule(
    sources: Sources,
    settings: SnapshotSettings,
    every: Duration,
    audit: Arc<Audit>,
    lifecycle: &Lifecycle,
) {
    let stopping = lifecycle.draining.clone();
    lifecycle.tracker.spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stopping.cancelled() => return,
            }
            let (sources, settings, audit) = (sources.clone(), settings.clone(), audit.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                snapshot_and_prune(&sources, &settings, &audit, SystemTime::now())
            })
            .await;
            match outcome {
                Ok(Ok(taken)) => {
                    tracing::info!(archive = %taken.archive.display(), "snapshot written");
                }
                Ok(Err(e)) => tracing::error!("snapshot failed: {e}"),
                Err(_) => tracing::error!("snapshot failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Retention;

    #[test]
    fn names_carry_the_time_and_other_files_are_never_taken_for_archives() {
        use name::taken_at;
        use time::OffsetDateTime;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let name = name::archive_name(at, false).unwrap();
        assert_eq!(name, "portcullis-20261130T005320Z.tar.gz");
        assert_eq!(taken_at(&name), Some(OffsetDateTime::from(at)));
        let sealed = name::archive_name(at, true).unwrap();
        assert_eq!(sealed, "portcullis-20261130T005320Z.tar.gz.age");
        assert_eq!(taken_at(&sealed), Some(OffsetDateTime::from(at)));
        for other in [
            "notes.txt",
            "portcullis-2026.tar.gz",
            ".portcullis-20261128T011320Z.tar.gz.partial",
            "portcullis-20261128T011320Z.tar",
            "portcullis-20261128T011320Z.tar.gz.age.partial",
        ] {
            assert_eq!(taken_at(other), None, "{other}");
        }
    }

    /// The built-in schedule on a paused clock: nothing before `every`, one archive after it,
    /// its line in the audit trail, and the task gone once the proxy drains.
    #[tokio::test(start_paused = true)]
    async fn the_built_in_schedule_snapshots_every_period_until_draining() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("portcullis.toml");
        std::fs::write(&config, "environment = \"test\"\n").unwrap();
        let logs = dir.path().join("logs");
        let snapshots = dir.path().join("snapshots");
        let audit = Arc::new(
            Audit::new(&crate::config::LogSettings {
                dir: Some(logs.clone()),
                ..crate::config::LogSettings::default()
            })
            .unwrap(),
        );
        let settings = SnapshotSettings {
            dir: snapshots.clone(),
            recipients: Vec::new(),
            every: Some(Duration::from_secs(6 * 3600)),
            retention: Retention {
                six_hourly_days: 2,
                daily_days: 7,
                weekly_weeks: 4,
                monthly_months: 13,
            },
        };
        let sources = Sources {
            config,
            acme_cache: None,
            log_dir: Some(logs.clone()),
            files: Vec::new(),
            recipients: Vec::new(),
        };
        let lifecycle = Lifecycle::default();
        let every = Duration::from_secs(6 * 3600);
        schedule(sources, settings, every, audit.clone(), &lifecycle);
        let archives = || {
            std::fs::read_dir(&snapshots)
                .map(|entries| entries.filter_map(Result::ok).count())
                .unwrap_or(0)
        };
        tokio::time::sleep(every - Duration::from_secs(1)).await;
        assert_eq!(archives(), 0, "nothing before the first period ends");
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The archive is written on a blocking thread, in real time.
        for _ in 0..500 {
            if archives() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            tokio::task::yield_now().await;
        }
        assert_eq!(archives(), 1);
        lifecycle.draining.cancel();
        lifecycle.tracker.close();
        tokio::time::timeout(Duration::from_secs(5), lifecycle.tracker.wait())
            .await
            .expect("the schedule ends when the proxy drains");
        audit.close();
        let trail: String = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        assert!(trail.contains("\"event\":\"snapshot\""), "{trail}");
    }
}
