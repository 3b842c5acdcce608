//! One run of a verb on one config: its text (for edits), its checked values, where the CA's
//! files are, who must own what the proxy reads, and the audit line at the end.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::EmployeesError;
use super::register::Register;
use super::write::Owner;
use crate::audit::{Audit, AuditRecord, Timestamp};
use crate::config::raw::{ISSUED_FILE_NAME, RawConfig, RawGateway};
use crate::config::{Config, ConfigError, Enrolment, Lifetimes, Privileges, RunAs};

/// The revocation list `init` makes when `[gateway] crls` names none.
const CRL_NAME: &str = "employees.crl";
/// The CA certificate `init` makes when the config has no `[gateway]`.
const CA_NAME: &str = "employees-ca.pem";

pub(super) struct Session {
    pub(super) path: PathBuf,
    pub(super) text: String,
    pub(super) raw: RawConfig,
    pub(super) enrolment: Enrolment,
}

impl Session {
    /// The config at `path`, whose values must pass phase 1.
    pub(super) fn open(path: &Path) -> Result<Self, EmployeesError> {
        let invalid = |problems| EmployeesError::Config {
            path: path.to_owned(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|source| {
            invalid(ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        })?;
        Self::of_text(path, text)
    }

    /// The same config with `text` instead (an edit), refused when it breaks a config the
    /// proxy took: an edit never turns a valid config into one a reload refuses.
    pub(super) fn edited(&self, text: String) -> Result<Self, EmployeesError> {
        let edited = Self::of_text(&self.path, text)?;
        match (&self.enrolment.refused, edited.enrolment.refused) {
            (None, Some(problems)) => Err(EmployeesError::Config {
                path: self.path.clone(),
                problems,
            }),
            (_, refused) => Ok(Self {
                enrolment: Enrolment {
                    refused,
                    ..edited.enrolment
                },
                ..edited
            }),
        }
    }

    fn of_text(path: &Path, text: String) -> Result<Self, EmployeesError> {
        let invalid = |problems| EmployeesError::Config {
            path: path.to_owned(),
            problems,
        };
        let raw: RawConfig = Config::parse_file(&text, path)
            .and_then(crate::config::Parsed::strict)
            .map_err(invalid)?;
        let enrolment = Config::enrolment(&raw).map_err(invalid)?;
        Ok(Self {
            path: path.to_owned(),
            text,
            raw,
            enrolment,
        })
    }

    pub(super) fn gateway(&self) -> Result<&RawGateway, EmployeesError> {
        self.raw
            .gateway
            .as_ref()
            .ok_or_else(|| EmployeesError::NoGateway(self.path.clone()))
    }

    /// `[gateway]`'s lifetimes; a config with a gateway always has them.
    pub(super) fn lifetimes(&self) -> Result<Lifetimes, EmployeesError> {
        self.enrolment
            .lifetimes
            .ok_or_else(|| EmployeesError::NoGateway(self.path.clone()))
    }

    /// A file in the config's own directory.
    pub(super) fn beside_config(&self, name: &str) -> PathBuf {
        crate::config::raw::base_of(&self.path).join(name)
    }

    /// `path` as the config should name it: relative to the config's directory when inside it
    /// (the config moves with its files), else absolute.
    pub(super) fn as_written(&self, path: &Path) -> PathBuf {
        let base = crate::config::raw::base_of(&self.path);
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        absolute
            .strip_prefix(&base)
            .map_or(absolute.clone(), Path::to_owned)
    }

    /// The CA certificate `init` writes: `[gateway] client_ca`, or one beside the config.
    pub(super) fn client_ca(&self) -> PathBuf {
        match &self.raw.gateway {
            Some(gateway) => gateway.client_ca.clone(),
            None => self.beside_config(CA_NAME),
        }
    }

    /// The first of `[gateway] crls`, or where `init` puts one: beside the CA certificate.
    pub(super) fn crl(&self) -> PathBuf {
        self.raw
            .gateway
            .as_ref()
            .and_then(|g| g.crls.first().cloned())
            .unwrap_or_else(|| self.client_ca().with_file_name(CRL_NAME))
    }

    /// The register of issued certificates.
    pub(super) fn register(&self) -> PathBuf {
        match &self.raw.gateway {
            Some(gateway) => gateway.issued_file(),
            None => self.client_ca().with_file_name(ISSUED_FILE_NAME),
        }
    }

    /// Writes the config as edited, with the mode and owner it had, and says what the proxy
    /// would still refuse in it.
    pub(super) fn save_config(&self) -> Result<(), EmployeesError> {
        if std::fs::read_to_string(&self.path).ok().as_deref() != Some(self.text.as_str()) {
            super::write::replace_keeping(&self.path, self.text.as_bytes())?;
        }
        if let Some(refused) = &self.enrolment.refused {
            eprintln!(
                "warning: {} is saved, but the proxy refuses it until these are fixed:\n{refused}",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Writes the register of issued certificates: public facts, readable by all.
    pub(super) fn save_register(&self, register: &Register) -> Result<(), EmployeesError> {
        super::write::replace(&self.register(), register.to_json().as_bytes(), 0o644, None)
    }

    /// Refuses a CA key in a directory the serving process's sandbox grants (every directory
    /// of a file it reads, and what is beneath them and its written directories).
    pub(super) fn check_key_out_of_reach(&self, key: &Path) -> Result<(), EmployeesError> {
        let key_dir = canonical_dir(key);
        let files = &self.enrolment.files;
        let granted = files
            .read
            .iter()
            .chain([&self.path])
            .filter_map(|file| file.parent())
            .chain(files.write.iter().map(PathBuf::as_path));
        for dir in granted {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
            if key_dir.starts_with(&dir) {
                return Err(EmployeesError::KeyInReach {
                    key: key.to_owned(),
                    granted: dir,
                });
            }
        }
        Ok(())
    }

    /// Who must own a secret the proxy reads (a TOTP file): when run as root, `server.user`,
    /// else the owner of `[log] dir` (the account the service writes as); `None` leaves the
    /// file to whoever runs the command.
    pub(super) fn service_owner(&self) -> Option<Owner> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        if self.enrolment.account.user.is_some() {
            let run_as = self.enrolment.account.resolve().ok()?.run_as?;
            return Some(Owner {
                uid: run_as.uid,
                gid: run_as.gid,
            });
        }
        let dir = self.enrolment.log.dir.as_ref()?;
        let metadata = std::fs::metadata(dir).ok()?;
        (metadata.uid() != 0).then_some(Owner {
            uid: metadata.uid(),
            gid: metadata.gid(),
        })
    }

    /// The verb's audit line about the CA or a person's certificates.
    pub(super) fn audit(
        self,
        action: &str,
        user: &str,
        serial: &str,
    ) -> Result<(), EmployeesError> {
        self.audit_record(|operator| AuditRecord::Enrolment {
            ts: Timestamp::now(),
            action: action.to_owned(),
            user: user.to_owned(),
            serial: serial.to_owned(),
            operator,
        })
    }

    /// The verb's audit line, made from the operator's name and written as the account that
    /// owns the audit trail, so that the proxy goes on appending to the day's file: the last
    /// thing a verb does.
    pub(super) fn audit_record(
        self,
        record: impl FnOnce(String) -> AuditRecord,
    ) -> Result<(), EmployeesError> {
        let failed = |e: &dyn std::fmt::Display| EmployeesError::Audit(e.to_string());
        let record = record(operator());
        if let Some(owner) = self.service_owner() {
            let privileges = Privileges {
                run_as: Some(RunAs {
                    user: format!("uid {}", owner.uid),
                    uid: owner.uid,
                    gid: owner.gid,
                }),
                allow_root: false,
            };
            crate::privilege::drop_privileges(&privileges).map_err(|e| failed(&e))?;
        }
        let audit = Audit::new(&self.enrolment.log).map_err(|e| failed(&e))?;
        audit.record(record);
        audit.close();
        let health = audit.health();
        if health.failing() || health.held() > 0 || health.dropped_total() > 0 {
            return Err(failed(&"the audit file could not be written"));
        }
        Ok(())
    }
}

/// The directory `path` is in, as the kernel resolves it (its parent made if missing).
fn canonical_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// The person at the keyboard: through sudo, who ran sudo.
pub(super) fn operator() -> String {
    if let Ok(user) = std::env::var("SUDO_USER")
        && !user.is_empty()
    {
        return user;
    }
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name)
}
