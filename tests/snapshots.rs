//! Snapshots of the proxy's own state: what goes in (and what never does), the archive's
//! privacy, restoring with plain `tar`, the audit trail of every outcome, and pruning on the
//! backup policy over three years of history computed on a fake clock; a wrong clock (the real
//! binary under `faketime`) prunes nothing and says so; a directory named like an archive is
//! skipped, not a reason to fail every run.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use portcullis::config::Retention;
use support::Setup;

const POLICY_MINIMUM: Retention = Retention {
    six_hourly_days: 2,
    daily_days: 7,
    weekly_weeks: 4,
    monthly_months: 13,
};

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

fn name_at(rfc3339: &str) -> String {
    format!(
        "portcullis-{}.tar.gz",
        rfc3339
            .replace(['-', ':'], "")
            .trim_end_matches('Z')
            .to_owned()
            + "Z"
    )
}

/// A snapshot every 6 hours from 2024-01-01 to 2026-12-31 18:00 UTC, pruned after each one as
/// the built-in schedule does; returns what is left.
fn three_years(retention: &Retention) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut now = at("2024-01-01T00:00:00Z");
    let end = at("2026-12-31T18:00:00Z");
    let mut taken = 0;
    while now <= end {
        let stamp = humantime::format_rfc3339_seconds(now).to_string();
        std::fs::write(dir.path().join(name_at(&stamp)), b"").unwrap();
        portcullis::snapshot::prune(dir.path(), retention, now).unwrap();
        now += Duration::from_secs(6 * 3600);
        taken += 1;
    }
    assert_eq!(taken, 1096 * 4, "2024 is a leap year: 1096 days");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    left
}

/// The history's end is Thursday 2026-12-31, 18:00; each snapshot is the last of its slot.
fn names(stamps: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = stamps.iter().map(|s| name_at(s)).collect();
    names.sort();
    names
}

const MONTHLY: [&str; 12] = [
    "2025-12-31T18:00:00Z",
    "2026-01-31T18:00:00Z",
    "2026-02-28T18:00:00Z",
    "2026-03-31T18:00:00Z",
    "2026-04-30T18:00:00Z",
    "2026-05-31T18:00:00Z",
    "2026-06-30T18:00:00Z",
    "2026-07-31T18:00:00Z",
    "2026-08-31T18:00:00Z",
    "2026-09-30T18:00:00Z",
    "2026-10-31T18:00:00Z",
    "2026-11-30T18:00:00Z",
];
// Sundays closing the three weeks before the current one (Mon 28th to Sun 3rd); the 27th is
// also a daily one.
const WEEKLY: [&str; 2] = ["2026-12-13T18:00:00Z", "2026-12-20T18:00:00Z"];
const DAILY: [&str; 5] = [
    "2026-12-25T18:00:00Z",
    "2026-12-26T18:00:00Z",
    "2026-12-27T18:00:00Z",
    "2026-12-28T18:00:00Z",
    "2026-12-29T18:00:00Z",
];
const LAST_TWO_DAYS: [&str; 8] = [
    "2026-12-30T00:00:00Z",
    "2026-12-30T06:00:00Z",
    "2026-12-30T12:00:00Z",
    "2026-12-30T18:00:00Z",
    "2026-12-31T00:00:00Z",
    "2026-12-31T06:00:00Z",
    "2026-12-31T12:00:00Z",
    "2026-12-31T18:00:00Z",
];

#[test]
fn three_years_of_snapshots_pruned_on_the_policy_minimum() {
    let expected: Vec<&str> = [&MONTHLY[..], &WEEKLY, &DAILY, &LAST_TWO_DAYS].concat();
    assert_eq!(three_years(&POLICY_MINIMUM), names(&expected));
}

#[test]
fn a_longer_six_hourly_tier_keeps_three_more_days_of_slots() {
    let retention = Retention {
        six_hourly_days: 5,
        ..POLICY_MINIMUM
    };
    let extra = [
        "2026-12-27T00:00:00Z",
        "2026-12-27T06:00:00Z",
        "2026-12-27T12:00:00Z",
        "2026-12-28T00:00:00Z",
        "2026-12-28T06:00:00Z",
        "2026-12-28T12:00:00Z",
        "2026-12-29T00:00:00Z",
        "2026-12-29T06:00:00Z",
        "2026-12-29T12:00:00Z",
    ];
    let expected: Vec<&str> = [&MONTHLY[..], &WEEKLY, &DAILY, &LAST_TWO_DAYS, &extra].concat();
    assert_eq!(three_years(&retention), names(&expected));
}

#[tokio::test]
async fn retention_outside_the_policy_is_refused_by_key() {
    let setup = Setup::new().await;
    let base = setup
        .config()
        .set("snapshots.dir", "/var/lib/portcullis/snapshots");
    assert!(support::config_from(&base.text()).is_ok());
    for (key, value) in [
        ("snapshots.keep_six_hourly_days", 1),
        ("snapshots.keep_six_hourly_days", 6),
        ("snapshots.keep_daily_days", 6),
        ("snapshots.keep_daily_days", 366),
        ("snapshots.keep_weekly_weeks", 3),
        ("snapshots.keep_weekly_weeks", 53),
        ("snapshots.keep_monthly_months", 12),
        ("snapshots.keep_monthly_months", 37),
    ] {
        support::assert_refused(&base.clone().set(key, value).text(), key);
    }
    support::assert_refused(
        &base.clone().set("snapshots.every", "12h").text(),
        "snapshots.every",
    );
}

/// Recipients are age keys, each refused under its index otherwise; without any, `check` warns
/// that an archive cannot bring a working instance back alone.
#[tokio::test]
async fn recipients_are_age_keys_and_without_them_check_warns() {
    let setup = Setup::new().await;
    let base = setup
        .config()
        .set("snapshots.dir", "/nonexistent/snapshots");
    let warned = |text: &str| {
        support::checked(text)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.key == "snapshots.recipients")
    };
    assert!(warned(&base.text()));
    #[allow(deprecated)]
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let with = |values: Vec<&str>| {
        let values = values.into_iter().map(toml::Value::from).collect();
        base.clone()
            .set("snapshots.recipients", toml::Value::Array(values))
            .text()
    };
    assert!(!warned(&with(vec![&recipient])));
    support::assert_refused(
        &with(vec![&recipient, "age1nope"]),
        "snapshots.recipients[1]",
    );
}

/// A config with an ACME cache, an audit trail and an access log, all on disk.
struct State {
    setup: Setup,
    file: PathBuf,
    cache: PathBuf,
    snapshots: PathBuf,
}

impl State {
    async fn new() -> Self {
        let setup = Setup::new().await;
        let dir = setup.pki.dir.path().to_owned();
        let (cache, snapshots) = (dir.join("acme"), dir.join("snapshots"));
        let file = dir.join("portcullis.toml");
        let toml = setup
            .config()
            .merge(&format!(
                "[[routes]]\nhost = \"acme.test\"\nupstream = \"app\"\n[tls.acme]\ndomains = [\"acme.test\"]\ncontact = [\"mailto:ops@acme.test\"]\ndirectory = \"https://127.0.0.1:1/dir\"\ncache_dir = \"{}\"\n",
                cache.display()
            ))
            .set("snapshots.dir", snapshots.display().to_string())
            // Tests run as root in CI; the binary refuses that unless told.
            .set("server.allow_root", true)
            .text();
        std::fs::write(&file, toml).unwrap();
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        support::write_private(&cache.join("cached_account_k"), "account key");
        support::write_private(&cache.join("cached_cert_c"), "certificate and key");
        let logs = setup.log_dir();
        std::fs::create_dir_all(&logs).unwrap();
        // The writer is in the middle of a line: the snapshot takes complete lines only.
        std::fs::write(
            logs.join("audit-2026-11-30.jsonl"),
            "{\"event\":\"admin\",\"n\":1}\n{\"event\":\"admin\",\"n\":2}\n{\"event\":\"adm",
        )
        .unwrap();
        std::fs::write(logs.join("access-2026-11-30.jsonl"), "{\"status\":200}\n").unwrap();
        Self {
            setup,
            file,
            cache,
            snapshots,
        }
    }

    fn snapshot(&self) -> std::process::Output {
        support::portcullis(&["snapshot", "-c", self.file.to_str().unwrap()])
    }

    fn audit_events(&self) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        for entry in std::fs::read_dir(self.setup.log_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("audit-")
            {
                for line in std::fs::read_to_string(path).unwrap().lines() {
                    events.extend(serde_json::from_str::<serde_json::Value>(line).ok());
                }
            }
        }
        events
    }
}

fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap()
        .display()
        .to_string()
        .trim_start_matches('/')
        .to_owned()
}

#[tokio::test]
async fn a_snapshot_holds_the_state_restores_with_tar_and_nothing_unasked() {
    let state = State::new().await;
    let logs = state.setup.log_dir();
    // Two archives in the 6-hour slot of 12 hours ago: the older is in no tier.
    let slot = (SystemTime::now() - Duration::from_secs(12 * 3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / (6 * 3600)
        * (6 * 3600);
    let in_slot = |minutes: u64| {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(slot + 60 * minutes);
        state
            .snapshots
            .join(name_at(&humantime::format_rfc3339_seconds(at).to_string()))
    };
    let (old, newer) = (in_slot(1), in_slot(2));
    std::fs::create_dir(&state.snapshots).unwrap();
    std::fs::set_permissions(&state.snapshots, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(&old, b"").unwrap();
    std::fs::write(&newer, b"").unwrap();
    // Planted by whoever can write the log directory, for a snapshot run as root to carry.
    let secret = state.setup.pki.dir.path().join("not-for-snapshots");
    support::write_private(&secret, "private");
    let planted = logs.join("audit-2026-11-29.jsonl");
    std::os::unix::fs::symlink(&secret, &planted).unwrap();

    let out = state.snapshot();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = PathBuf::from(stdout.split_whitespace().next().unwrap());
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", archive.display());
    assert!(
        !old.exists(),
        "an older archive in the slot of a newer one is in no tier"
    );
    assert!(newer.exists());

    // Read back with the system's tar, as a restore would.
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(listing.status.success());
    let members: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect();
    for wanted in [
        absolute(&state.file),
        absolute(&state.cache.join("cached_account_k")),
        absolute(&state.cache.join("cached_cert_c")),
        absolute(&logs.join("audit-2026-11-30.jsonl")),
    ] {
        assert!(
            members.contains(&wanted),
            "{wanted} missing from {members:#?}"
        );
    }
    for never in [
        absolute(&state.setup.pki.key),
        absolute(&secret),
        absolute(&state.setup.pki.dir.path().join("logs")) + "/audit-2026-11-29.jsonl",
        absolute(&logs.join("access-2026-11-30.jsonl")),
    ] {
        assert!(!members.contains(&never), "{never} is in {members:#?}");
    }

    let root = tempfile::tempdir().unwrap();
    let restore = Command::new("tar")
        .arg("-xzpf")
        .arg(&archive)
        .arg("-C")
        .arg(root.path())
        .status()
        .unwrap();
    assert!(restore.success());
    let restored = |path: &Path| std::fs::read(root.path().join(absolute(path))).unwrap();
    assert_eq!(
        restored(&state.cache.join("cached_account_k")),
        b"account key"
    );
    assert_eq!(
        restored(&logs.join("audit-2026-11-30.jsonl")),
        b"{\"event\":\"admin\",\"n\":1}\n{\"event\":\"admin\",\"n\":2}\n"
    );
    let cache_mode = std::fs::metadata(root.path().join(absolute(&state.cache)))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(cache_mode & 0o777, 0o700, "the cache comes back private");

    let events = state.audit_events();
    let archive_name = archive.display().to_string();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "snapshot" && e["archive"] == archive_name.as_str()),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "snapshot_pruned"
            && e["archive"] == old.display().to_string().as_str()),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_failed_snapshot_is_in_the_audit_trail() {
    let state = State::new().await;
    // Where the directory should be, a file: nothing can be written there.
    std::fs::write(&state.snapshots, b"").unwrap();
    let out = state.snapshot();
    assert_eq!(out.status.code(), Some(1));
    let events = state.audit_events();
    assert!(
        events.iter().any(|e| e["event"] == "snapshot_failed"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains(&state.snapshots.display().to_string()))),
        "{events:#?}"
    );
}

/// Twenty archives as the policy keeps them at `now`: one a month for 12 months and the last
/// eight 6-hour slots. Returns their names.
fn plant_history(dir: &Path, now: SystemTime) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hours = |h: u64| now - Duration::from_secs(3600 * h);
    let times = (1..=12)
        .map(|m| hours(m * 30 * 24))
        .chain((1..=8).map(|s| hours(s * 6)));
    let mut names: Vec<String> = times
        .map(|at| name_at(&humantime::format_rfc3339_seconds(at).to_string()))
        .collect();
    for name in &names {
        std::fs::write(dir.join(name), b"").unwrap();
    }
    names.sort();
    names
}

fn archives_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.gz"))
        .collect();
    names.sort();
    names
}

/// One `portcullis snapshot` with the clock at 2029 once deleted every archive, the monthlies
/// of 13 months included. Now it deletes none and says why; with the clock right again, the
/// archive dated 2029 holds pruning back and is named as the reason, until it is removed.
#[tokio::test]
async fn a_wrong_clock_prunes_no_snapshot() {
    let state = State::new().await;
    let history = plant_history(&state.snapshots, SystemTime::now());
    assert_eq!(history.len(), 20);
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.args(["snapshot", "-c", state.file.to_str().unwrap()]);
    if !support::fake_clock(&mut command, "@2029-03-01 00:00:00") {
        return;
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = archives_in(&state.snapshots);
    let future = name_at("2029-03-01T00:00:00Z");
    assert_eq!(after, [history.clone(), vec![future.clone()]].concat());
    let held: Vec<serde_json::Value> = state
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "retention_held" && e["kind"] == "snapshots")
        .collect();
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(held[0]["newest"], *history.last().unwrap());
    assert!(
        !state
            .audit_events()
            .iter()
            .any(|e| e["event"] == "snapshot_pruned")
    );

    // The clock is right again: the archive named 2029 is ahead of it.
    let out = state.snapshot();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(archives_in(&state.snapshots).len(), 22);
    let reasons: Vec<serde_json::Value> = state
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "retention_held" && e["kind"] == "snapshots")
        .map(|e| e["newest"].clone())
        .collect();
    // Audit files are read in directory order, not by date: the 2029 run wrote its own.
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.contains(&future.into()), "{reasons:?}");
}

/// A directory named like an archive once made every run fail to prune (and say
/// `snapshot_failed` although the archive was written); it is now left alone and reported.
#[tokio::test]
async fn a_directory_named_like_an_archive_is_skipped() {
    let state = State::new().await;
    std::fs::create_dir_all(&state.snapshots).unwrap();
    std::fs::set_permissions(&state.snapshots, std::fs::Permissions::from_mode(0o700)).unwrap();
    let planted = state.snapshots.join(name_at("2020-01-01T00:00:00Z"));
    std::fs::create_dir(&planted).unwrap();
    let out = state.snapshot();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(planted.is_dir());
    let events = state.audit_events();
    assert!(
        !events.iter().any(|e| e["event"] == "snapshot_failed"),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "snapshot_skipped"
            && e["path"] == planted.display().to_string()),
        "{events:#?}"
    );
}
