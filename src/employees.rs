//! `portcullis employees`: the employee CA from enrolment to revocation, with no openssl and
//! no hand-made CRL. `init` makes the CA, `add` enrols a person (certificate, PKCS#12 bundle,
//! TOTP secret, config entry), `renew` issues a new short-lived certificate, `revoke` and
//! `refresh-crl` sign the revocation list, `list` shows who holds what. Every verb is an
//! audit line.
//!
//! Only these verbs read the CA key, and only `init` writes it: the serving process needs the
//! CA certificate and the list alone, and `init` refuses a key where its sandbox could read.

mod authority;
mod bundle;
mod edit;
mod listing;
mod register;
mod requests;
mod session;
mod verbs;
mod write;

use std::path::{Path, PathBuf};

pub use verbs::run;

/// The verbs and their flags.
#[derive(Debug, clap::Subcommand)]
pub enum Verb {
    /// Make the employee CA: its certificate at [gateway] client_ca (a [gateway] is added when
    /// the config has none), its key at --ca-key (0600), an empty revocation list.
    Init {
        #[command(flatten)]
        ca: CaArgs,
    },
    /// Enrol a person: NAME.crt, NAME.key and NAME.p12 in --out, a TOTP secret beside the
    /// config, and their [gateway.users.NAME] entry.
    Add {
        /// Their name: the certificate's CN and the user the gateway knows.
        name: String,
        /// A group they belong to; repeat for more.
        #[arg(long = "group")]
        groups: Vec<String>,
        #[command(flatten)]
        issue: IssueArgs,
    },
    /// Issue a new certificate for someone enrolled (the old one lives until it expires or is
    /// revoked).
    Renew {
        /// Their name.
        name: String,
        #[command(flatten)]
        issue: IssueArgs,
    },
    /// Revoke every certificate of NAME, or one by --serial, and sign the revocation list
    /// (the first of [gateway] crls). Reload the proxy to cut their connections.
    Revoke {
        /// Whose certificates.
        #[arg(required_unless_present = "serial", conflicts_with = "serial")]
        name: Option<String>,
        /// One certificate, by serial (hex, as `list` shows it).
        #[arg(long)]
        serial: Option<String>,
        #[command(flatten)]
        ca: CaArgs,
    },
    /// Each person: groups, certificates with expiry and serial, revoked or not, last use.
    List {
        /// Config file.
        #[arg(short, long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sign the revocation list again with a new nextUpdate: what portcullis-crl.timer runs.
    RefreshCrl {
        #[command(flatten)]
        ca: CaArgs,
    },
    /// Ask for access to an internal route or a tunnel for a time: a pending request that one
    /// of [gateway] approvers turns into a grant.
    Request {
        /// Who it is for: an enrolled person.
        name: String,
        /// An internal route: its host, or host and path prefix (`tools.example.com/admin/`).
        #[arg(long, required_unless_present = "tunnel", conflicts_with = "tunnel")]
        route: Option<String>,
        /// A tunnel: its target, or target:port (`db1:5432`).
        #[arg(long)]
        tunnel: Option<String>,
        /// How long the grant lasts once approved (at most 24h).
        #[arg(long = "for")]
        length: humantime::Duration,
        /// Why: a ticket and a sentence, kept in the audit trail.
        #[arg(long)]
        reason: String,
        /// Config file.
        #[arg(short, long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Approve a pending request: a grant from now for its duration, cut when it ends.
    Approve {
        /// The request's number.
        id: u64,
        /// The approver: one of [gateway] approvers, not the person the request is for.
        #[arg(long)]
        by: String,
        /// Config file.
        #[arg(short, long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Refuse a pending request, or end a running grant now.
    Deny {
        /// The request's number.
        id: u64,
        /// The approver who refuses it.
        #[arg(long)]
        by: Option<String>,
        /// Config file.
        #[arg(short, long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Access requests: pending, granted, ended and denied.
    Requests {
        /// Config file.
        #[arg(short, long, default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Print the requests file as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The config, and the CA key the verb signs with.
#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// Config file.
    #[arg(short, long, default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The employee CA's private key (PEM), outside every directory the proxy reads.
    #[arg(long)]
    pub ca_key: PathBuf,
}

/// What a new certificate needs: the CA, where the person's files go, for how long.
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub ca: CaArgs,
    /// Where their certificate, key and PKCS#12 bundle go.
    #[arg(long)]
    pub out: PathBuf,
    /// How long the certificate is valid; default [gateway] certificate_validity.
    #[arg(long)]
    pub validity: Option<humantime::Duration>,
}

/// Why a verb did nothing, or not all of it.
#[derive(Debug, thiserror::Error)]
pub enum EmployeesError {
    /// The config cannot be read, or its values are refused.
    #[error("{} is not a valid config:\n{problems}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Every problem.
        problems: crate::config::ConfigError,
    },
    /// A verb that needs the employee CA on a config without one.
    #[error("{} has no [gateway]: `portcullis employees init` makes one", .0.display())]
    NoGateway(PathBuf),
    /// A file that is never overwritten is there.
    #[error("{} exists: refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    /// The CA key in reach of the serving process.
    #[error(
        "{}: the CA key must be outside every directory the proxy may read ({} is one); keep it in a directory of its own, e.g. /etc/portcullis-ca",
        key.display(),
        granted.display()
    )]
    KeyInReach {
        /// The key.
        key: PathBuf,
        /// The directory the sandbox grants.
        granted: PathBuf,
    },
    /// The CA certificate or key cannot be used.
    #[error("{}: {reason}", path.display())]
    Authority {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A name that cannot be a certificate CN, a config key and a header value alike.
    #[error(
        "{0:?} is not a valid name: 1 to 64 of a-z, A-Z, 0-9, '.', '_' and '-', not starting with '.' or '-'"
    )]
    Name(String),
    /// `add` for someone enrolled already.
    #[error("{0:?} is enrolled already: `portcullis employees renew {0}` issues a new certificate")]
    Enrolled(String),
    /// `renew` or `revoke` for someone unknown.
    #[error("{0:?} is in neither [gateway.users] nor the register of issued certificates")]
    Unknown(String),
    /// `revoke NAME` with nothing left to revoke.
    #[error("{0:?} has no certificate that is neither revoked nor expired")]
    NothingToRevoke(String),
    /// Not a serial number.
    #[error("{0:?} is not a certificate serial number (hex, at most 20 octets)")]
    Serial(String),
    /// The register of issued certificates cannot be read.
    #[error("{}: {reason}", path.display())]
    Register {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The config cannot be edited.
    #[error("editing the config: {0}")]
    Edit(String),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
    /// The PKCS#12 bundle could not be made.
    #[error("PKCS#12 bundle: {0}")]
    Bundle(String),
    /// The TOTP secret or its URI could not be made.
    #[error("TOTP: {0}")]
    Totp(String),
    /// The system's random generator failed.
    #[error("the system's random number generator failed")]
    Random,
    /// A file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (in the message, not a source: `{:#}` would print it twice).
        error: std::io::Error,
    },
    /// A grant of no time, or longer than access on request allows.
    #[error("--for {}: a grant lasts more than nothing and at most 24h", humantime::format_duration(*.0))]
    GrantLength(std::time::Duration),
    /// An empty, multi-line or overlong reason.
    #[error("--reason: one line of 1 to {0} characters")]
    Reason(usize),
    /// A request for nothing.
    #[error("say what the request is for: --route or --tunnel")]
    NoTarget,
    /// A route or tunnel the config does not have.
    #[error("no internal route or tunnel {given:?} in the config; there are: {}", known.join(", "))]
    NoSuchTarget {
        /// What was asked for.
        given: String,
        /// What there is.
        known: Vec<String>,
    },
    /// A name that fits several routes or tunnels.
    #[error("{given:?} names several: {}; say which", matches.join(", "))]
    AmbiguousTarget {
        /// What was asked for.
        given: String,
        /// What it fits.
        matches: Vec<String>,
    },
    /// A request for what the person may use already.
    #[error("{0:?} may use {1} already: its allow list names them")]
    AlreadyAllowed(String, String),
    /// A request for a route that asks for a second factor, by someone without one.
    #[error("{1} asks for a second factor and {0:?} has no totp_secret_file")]
    NoSecondFactor(String, String),
    /// Someone who may not approve.
    #[error("{0:?} is not a configured person named by [gateway] approvers")]
    NotApprover(String),
    /// An approver approving their own request.
    #[error("{0:?} may not approve their own request: another approver must")]
    SelfApproval(String),
    /// No such request.
    #[error("no access request {0}")]
    NoRequest(u64),
    /// A request that is not pending (or, for deny, not running).
    #[error("access request {0} is decided already")]
    Decided(u64),
    /// The requests file cannot be used.
    #[error("access requests: {0}")]
    Requests(String),
    /// The verb is done but its audit line could not be written.
    #[error("done, but the audit line was not written: {0}")]
    Audit(String),
}

impl EmployeesError {
    fn io(path: &Path, error: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            error,
        }
    }
}

/// A name the gateway can take from a certificate and put in a header and a config key.
fn check_name(name: &str) -> Result<(), EmployeesError> {
    let valid = (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(EmployeesError::Name(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_words_are_refused() {
        for good in ["alice", "a.b-c_d", "Bob2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-rf",
            ".hidden",
            "a b",
            "a:b",
            "ålice",
            "a\nb",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
