//! `check` judges the files the config names as the account `run` will be, so that it fails
//! exactly where `run` would: a key only root can read passes a check run as root and stops the
//! service after it dropped to `server.user`. The judge is the kernel: a child process runs as
//! the account, as [`super::drop_privileges`] leaves the proxy (no supplementary groups), and
//! asks `access(2)` for each path, so modes, ACLs, search rights on every parent and read-only
//! mounts all count.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, Uid};

use crate::config::{FileAccess, Need, Problem, ProcessProblem, RunAs};

/// How far the judging went.
#[derive(Debug)]
pub enum Judged {
    /// Every path was tried as the account; these are the ones it cannot use.
    As(Vec<Problem>),
    /// Neither root nor the account: another account's rights cannot be tried from here.
    NotPossible,
}

/// One `access(2)` call: what the account must be able to do with a path.
struct Probe {
    key: String,
    path: PathBuf,
    flags: AccessFlags,
    need: &'static str,
}

/// Tries every path `access` names (and the config file itself) as `run_as`.
pub fn judge_files(run_as: &RunAs, config: &Path, access: &FileAccess) -> Judged {
    let mut probes = vec![Probe {
        key: "server.user".to_owned(),
        path: config.to_owned(),
        flags: AccessFlags::R_OK,
        need: "read the config file",
    }];
    for named in &access.named {
        let (path, flags, need) = match named.need {
            Need::Read => (named.path.clone(), AccessFlags::R_OK, "read"),
            Need::ReadIfPresent if named.path.symlink_metadata().is_err() => continue,
            Need::ReadIfPresent => (named.path.clone(), AccessFlags::R_OK, "read"),
            // A missing directory is made where the nearest existing one is.
            Need::Write => {
                let existing = named
                    .path
                    .ancestors()
                    .find(|d| d.as_os_str().is_empty() || d.exists())
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let need = if existing == named.path {
                    "write"
                } else {
                    "create a directory in"
                };
                (
                    existing.to_owned(),
                    AccessFlags::W_OK | AccessFlags::X_OK,
                    need,
                )
            }
        };
        probes.push(Probe {
            key: named.key.clone(),
            path,
            flags,
            need,
        });
    }
    let refused = |key: &str, need, path: &Path, source| Problem {
        key: key.to_owned(),
        kind: ProcessProblem::AccountAccess {
            user: run_as.user.clone(),
            need,
            path: path.to_owned(),
            source,
        }
        .into(),
    };
    let errors = if Uid::effective().is_root() {
        match in_child(run_as, &probes) {
            Ok(errors) => errors,
            Err(source) => {
                let problem = refused("server.user", "be switched to to judge", config, source);
                return Judged::As(vec![problem]);
            }
        }
    } else if Uid::current().as_raw() == run_as.uid {
        probes
            .iter()
            .map(|p| try_access(&p.path, p.flags))
            .collect()
    } else {
        return Judged::NotPossible;
    };
    let problems = probes
        .into_iter()
        .zip(errors)
        .filter(|(_, errno)| *errno != 0)
        .map(|(probe, errno)| {
            let source = std::io::Error::from_raw_os_error(errno);
            refused(&probe.key, probe.need, &probe.path, source)
        })
        .collect();
    Judged::As(problems)
}

/// 0, or the errno `access(2)` gave.
fn try_access(path: &Path, flags: AccessFlags) -> i32 {
    match nix::unistd::access(path, flags) {
        Ok(()) => 0,
        Err(errno) => errno as i32,
    }
}

/// Runs this program again as `run_as` (`portcullis judge-access`, hidden) and asks it to try
/// each probe. std drops the supplementary groups when root switches a child's uid, as
/// [`super::drop_privileges`] does.
fn in_child(run_as: &RunAs, probes: &[Probe]) -> std::io::Result<Vec<i32>> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let mut request = Vec::new();
    for probe in probes {
        request.extend_from_slice(probe.flags.bits().to_string().as_bytes());
        request.push(0);
        request.extend_from_slice(probe.path.as_os_str().as_bytes());
        request.push(0);
    }
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg(JUDGE_VERB)
        .uid(run_as.uid)
        .gid(run_as.gid)
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&request)?;
    }
    let output = child.wait_with_output()?;
    let answers: Vec<i32> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.parse().ok())
        .collect();
    if !output.status.success() || answers.len() != probes.len() {
        return Err(std::io::Error::other(format!(
            "the judging process ended with {} after {} of {} answers",
            output.status,
            answers.len(),
            probes.len()
        )));
    }
    Ok(answers)
}

/// The hidden verb [`in_child`] runs.
pub const JUDGE_VERB: &str = "judge-access";

/// The other end of [`in_child`]: reads `FLAGS\0PATH\0` pairs, writes one errno a line (0 when
/// allowed), as whoever this process is.
pub fn answer_probes(input: impl Read, mut output: impl std::io::Write) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    input.take(16 << 20).read_to_end(&mut bytes)?;
    let mut fields = bytes.split(|b| *b == 0);
    while let (Some(flags), Some(path)) = (fields.next(), fields.next()) {
        let flags = std::str::from_utf8(flags)
            .ok()
            .and_then(|f| f.parse().ok())
            .and_then(AccessFlags::from_bits)
            .ok_or_else(|| std::io::Error::other("malformed probe"))?;
        let path = Path::new(std::ffi::OsStr::from_bytes(path));
        writeln!(output, "{}", try_access(path, flags))?;
    }
    output.flush()
}
