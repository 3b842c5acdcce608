//! The register of what the employee CA signed: every certificate issued (to whom, serial,
//! fingerprint, until when) and which are revoked since when. `list` shows it, the revocation
//! list is made from it, so a revocation is never lost by re-signing. Public facts only, kept
//! as JSON beside the CA certificate (`[gateway] issued`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::EmployeesError;
use super::authority::{Issued, Revoked};

/// A revoked certificate stays on the list a day past its expiry: a client whose clock runs
/// behind is still refused as revoked rather than taken for valid.
const KEEP_LISTED: Duration = Duration::from_secs(86_400);

/// The whole register.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Register {
    /// The number of the last revocation list signed (RFC 5280 5.2.3: it only grows).
    pub(super) crl_number: u64,
    /// In the order issued.
    pub(super) certificates: Vec<Entry>,
}

/// One certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) user: String,
    /// Hex.
    pub(super) serial: String,
    /// SHA-256 of the certificate, hex; empty for a serial revoked that this CA's register
    /// never saw issued.
    pub(super) fingerprint: String,
    /// Seconds since the epoch; `None` when unknown.
    pub(super) not_after: Option<u64>,
    /// Seconds since the epoch.
    pub(super) revoked_at: Option<u64>,
}

impl Register {
    /// The register at `path`; empty when there is none yet.
    pub(super) fn load(path: &Path) -> Result<Self, EmployeesError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(EmployeesError::io(path, source)),
        };
        serde_json::from_str(&text).map_err(|e| EmployeesError::Register {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// As JSON, one certificate a line for diffs.
    pub(super) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Records a certificate just issued to `user`.
    pub(super) fn issued(&mut self, user: &str, issued: &Issued) {
        self.certificates.push(Entry {
            user: user.to_owned(),
            serial: issued.serial.clone(),
            fingerprint: issued.fingerprint.clone(),
            not_after: Some(seconds(issued.not_after)),
            revoked_at: None,
        });
    }

    /// Revokes every certificate of `user` not yet revoked nor expired; their serials.
    pub(super) fn revoke_user(&mut self, user: &str, now: SystemTime) -> Vec<String> {
        let at = seconds(now);
        self.certificates
            .iter_mut()
            .filter(|entry| entry.user == user && entry.revoked_at.is_none())
            .filter(|entry| entry.not_after.is_none_or(|until| until > at))
            .map(|entry| {
                entry.revoked_at = Some(at);
                entry.serial.clone()
            })
            .collect()
    }

    /// Revokes the certificate with `serial` (hex, any case, colons allowed); its user (`-`
    /// for a serial the register never saw issued, which is listed all the same) and the
    /// serial as the register writes it.
    pub(super) fn revoke_serial(
        &mut self,
        serial: &str,
        now: SystemTime,
    ) -> Result<(String, String), EmployeesError> {
        let serial = normalise_serial(serial)?;
        let at = seconds(now);
        if let Some(entry) = self.certificates.iter_mut().find(|e| e.serial == serial) {
            entry.revoked_at.get_or_insert(at);
            return Ok((entry.user.clone(), serial));
        }
        self.certificates.push(Entry {
            user: "-".to_owned(),
            serial: serial.clone(),
            fingerprint: String::new(),
            not_after: None,
            revoked_at: Some(at),
        });
        Ok(("-".to_owned(), serial))
    }

    /// What the revocation list signed at `now` must hold: every revoked certificate that has
    /// not been expired for a day.
    pub(super) fn revoked(&self, now: SystemTime) -> Vec<Revoked> {
        let horizon = seconds(now).saturating_sub(KEEP_LISTED.as_secs());
        self.certificates
            .iter()
            .filter(|entry| entry.not_after.is_none_or(|until| until > horizon))
            .filter_map(|entry| {
                Some(Revoked {
                    serial: entry.serial.clone(),
                    at: SystemTime::UNIX_EPOCH + Duration::from_secs(entry.revoked_at?),
                })
            })
            .collect()
    }

    /// The number the next revocation list carries.
    pub(super) fn next_crl_number(&mut self) -> u64 {
        self.crl_number += 1;
        self.crl_number
    }

    /// The certificates of `user` neither revoked nor expired at `now`.
    pub(super) fn valid<'a>(
        &'a self,
        user: &'a str,
        now: SystemTime,
    ) -> impl Iterator<Item = &'a Entry> {
        let now = seconds(now);
        self.of(user)
            .filter(move |e| e.revoked_at.is_none() && e.not_after.is_some_and(|t| t > now))
    }

    /// The certificates of `user`, newest first.
    pub(super) fn of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a Entry> {
        self.certificates
            .iter()
            .rev()
            .filter(move |e| e.user == user)
    }
}

/// Seconds since the epoch.
pub(super) fn seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A serial as the register writes it: lower-case hex, no separators, no leading zero octet.
fn normalise_serial(serial: &str) -> Result<String, EmployeesError> {
    let digits: String = serial
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    match hex::decode(&digits) {
        Ok(bytes) if !bytes.is_empty() && bytes.len() <= 20 => Ok(digits),
        _ => Err(EmployeesError::Serial(serial.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, serial: &str, not_after: u64) -> Entry {
        Entry {
            user: user.to_owned(),
            serial: serial.to_owned(),
            fingerprint: String::new(),
            not_after: Some(not_after),
            revoked_at: None,
        }
    }

    #[test]
    fn revocations_are_listed_until_a_day_past_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut register = Register {
            crl_number: 0,
            certificates: vec![
                entry("alice", "0a", 2_000_000),
                entry("alice", "0b", 900_000),
                entry("bob", "0c", 2_000_000),
            ],
        };
        // The expired one is not revoked again: it is dead already.
        assert_eq!(register.revoke_user("alice", now), vec!["0a"]);
        assert_eq!(register.revoke_serial("0B", now).unwrap().0, "alice");
        assert_eq!(
            register.revoke_serial("DE:AD", now).unwrap(),
            ("-".to_owned(), "dead".to_owned())
        );
        let listed: Vec<String> = register
            .revoked(now)
            .into_iter()
            .map(|r| r.serial)
            .collect();
        // 0b expired 100000 s ago, more than a day: off the list.
        assert_eq!(listed, vec!["0a", "dead"]);
        assert!(register.revoke_serial("not hex", now).is_err());
        assert_eq!(register.next_crl_number(), 1);
        assert_eq!(register.next_crl_number(), 2);
    }
}
