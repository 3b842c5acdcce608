//! Whether the gateway still trusts a connection's client certificate, between handshakes:
//! after a reload (new roots and revocation lists) and once the certificate, or a revocation
//! list it depends on, is past its time.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rustls::pki_types::UnixTime;
use rustls::{CertificateError, Error as TlsError};

use super::Gateway;
use crate::connection::{ClientIdentity, ConnectionInfo, Distrust};

impl Gateway {
    /// True while this gateway trusts `conn`'s client certificate (always, without one). The
    /// certificate is checked again once per reload, against the new CRLs and roots, and once
    /// its own time or a revocation list's is up ([`Self::recheck_at`]); when it fails, trust
    /// is withdrawn from the connection, which cuts it and its tunnels.
    pub fn still_trusts(&self, conn: &ConnectionInfo) -> bool {
        let Some(client) = &conn.client else {
            return true;
        };
        let now = SystemTime::now();
        if conn.trusted_under.load(Ordering::Relaxed) == self.generation
            && self.recheck_at(client).is_none_or(|at| now < at)
        {
            return true;
        }
        match self.verdict(client, now) {
            Ok(()) => {
                conn.trusted_under.store(self.generation, Ordering::Relaxed);
                true
            }
            Err(why) => {
                conn.trust.withdraw(why);
                false
            }
        }
    }

    /// When `client`'s chain must be checked again without a reload: a second after the
    /// earliest of its certificates' `notAfter` (valid up to and including that second) and the
    /// revocation lists' `nextUpdate`.
    pub fn recheck_at(&self, client: &ClientIdentity) -> Option<SystemTime> {
        let crls = self
            .settings
            .crl_updates
            .iter()
            .filter_map(|crl| crl.next_update);
        crls.chain([client.expires])
            .min()
            .map(|at| at + Duration::from_secs(1))
    }

    /// Whether this configuration's roots and revocation lists accept `client`'s chain at
    /// `now`, and if not, why.
    fn verdict(&self, client: &ClientIdentity, now: SystemTime) -> Result<(), Distrust> {
        let Some((leaf, intermediates)) = client.chain.split_first() else {
            return Err(Distrust::Revoked);
        };
        let now = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        match self.verifier.verify_client_cert(leaf, intermediates, now) {
            Ok(_) => Ok(()),
            Err(TlsError::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. },
            )) => Err(Distrust::Expired),
            Err(_) => Err(Distrust::Revoked),
        }
    }
}
