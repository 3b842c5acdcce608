//! Snapshots of the proxy's own state, on the policy's backup schedule: what a rebuilt instance
//! needs and nothing else. An archive holds the config file, the ACME cache directory (the
//! account key and the certificates: losing the account means re-ordering into rate limits)
//! and the audit trail files. Never the TLS private keys of file certificates, TOTP secrets or
//! the access log: those are not asked for, and keys are re-issued rather than restored.
//!
//! Members are named by their absolute path without the leading `/`, with their owner and
//! mode, so `tar -xzpf ARCHIVE -C /` puts everything back where it was. An archive is written
//! under a temporary name, synced, then renamed: a crash never leaves half an archive under a
//! snapshot's name. Audit files are taken up to their last complete line, so a line being
//! appended meanwhile is never cut in two.

mod name;
mod retention;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::audit::{Audit, AuditRecord, Timestamp};
use crate::config::{Config, SnapshotSettings};
use crate::lifecycle::Lifecycle;

use name::archive_name;
pub use retention::{Pruned, kept, prune};

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
}

impl Sources {
    /// The state of the instance running `config`, read from `config_path`.
    pub fn of(config: &Config, config_path: &Path) -> Self {
        Self {
            config: config_path.to_owned(),
            // With a shared store the account and certificates live there, not on this disk.
            acme_cache: config
                .acme
                .as_ref()
                .filter(|a| a.store.is_none())
                .map(|a| a.cache_dir.clone()),
            log_dir: config.log.dir.clone(),
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
}

/// Writes one archive of `sources` into `dir`, named by `now`.
pub fn take(sources: &Sources, dir: &Path, now: SystemTime) -> Result<Taken, SnapshotError> {
    crate::secrets::create_private_dir(dir).map_err(io(dir))?;
    let name = archive_name(now)?;
    let archive = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io(&partial))?;
    let written = write_archive(sources, file).and_then(|(file, members)| {
        file.sync_all().map_err(io(&partial))?;
        Ok(members)
    });
    let members = match written {
        Ok(members) => members,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &archive).map_err(io(&archive))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    let bytes = std::fs::metadata(&archive).map_err(io(&archive))?.len();
    Ok(Taken {
        archive,
        members,
        bytes,
    })
}

fn write_archive(sources: &Sources, file: File) -> Result<(File, Vec<String>), SnapshotError> {
    let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gzip);
    let mut members = Vec::new();
    // Named by the operator, and often a link (a config map, /etc/alternatives): followed.
    let (config, name) = member_name(&sources.config)?;
    let file = File::open(&config).map_err(io(&config))?;
    add_file(&mut tar, file, &config, name.clone(), false)?;
    members.push(name);
    if let Some(cache) = &sources.acme_cache {
        add_dir(&mut tar, cache, &mut members, |_| true, false)?;
    }
    if let Some(logs) = &sources.log_dir {
        add_dir(&mut tar, logs, &mut members, is_audit_file, true)?;
    }
    let gzip = tar.into_inner().map_err(io(&sources.config))?;
    let file = gzip.finish().map_err(io(&sources.config))?;
    Ok((file, members))
}

fn is_audit_file(name: &str) -> bool {
    name.starts_with("audit-") && name.ends_with(".jsonl")
}

/// The archive's name for an absolute path: without its leading `/`, as tar does.
fn member_name(path: &Path) -> Result<(PathBuf, String), SnapshotError> {
    let absolute = std::fs::canonicalize(path).map_err(io(path))?;
    let name = absolute
        .strip_prefix("/")
        .unwrap_or(&absolute)
        .display()
        .to_string();
    Ok((absolute, name))
}

/// Adds `dir` and the regular files in it that `wanted` names. Entries are opened without
/// following links: a link planted in a log directory must not carry another file (say
/// `/etc/shadow`, when the snapshot runs as root) into an archive.
fn add_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    members: &mut Vec<String>,
    wanted: impl Fn(&str) -> bool,
    whole_lines: bool,
) -> Result<(), SnapshotError> {
    if !dir.is_dir() {
        return Ok(());
    }
    let (absolute, dir_name) = member_name(dir)?;
    tar.append_dir(&dir_name, &absolute).map_err(io(dir))?;
    let mut names: Vec<String> = std::fs::read_dir(&absolute)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| wanted(name))
        .collect();
    names.sort();
    for name in names {
        let path = absolute.join(&name);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(io(&path))?;
        let member = format!("{dir_name}/{name}");
        add_file(tar, file, &path, member.clone(), whole_lines)?;
        members.push(member);
    }
    Ok(())
}

fn add_file<W: Write>(
    tar: &mut tar::Builder<W>,
    mut file: File,
    path: &Path,
    name: String,
    whole_lines: bool,
) -> Result<(), SnapshotError> {
    use std::io::Read;
    let meta = file.metadata().map_err(io(path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io(path))?;
    if whole_lines {
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(complete);
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata(&meta);
    header.set_size(bytes.len() as u64);
    tar.append_data(&mut header, &name, bytes.as_slice())
        .map_err(io(path))
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
        let name = archive_name(at).unwrap();
        assert_eq!(name, "portcullis-20261130T005320Z.tar.gz");
        assert_eq!(taken_at(&name), Some(OffsetDateTime::from(at)));
        for other in [
            "notes.txt",
            "portcullis-2026.tar.gz",
            ".portcullis-20261128T011320Z.tar.gz.partial",
            "portcullis-20261128T011320Z.tar",
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
