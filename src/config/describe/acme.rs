//! `[tls.acme]` in the `check` summary: where the certificate is kept, how each name is
//! validated, the profile and the renewal rule, and the cached certificate's expiry and next
//! renewal when this instance keeps it alone (the store's is on the lease holder's admin
//! listener, `GET /certificates`).

use std::fmt::Write as _;

use crate::config::{AcmeSettings, Challenge, DnsProvider, renewal_without_window};

pub(super) fn describe(acme: &AcmeSettings, out: &mut String) {
    let kept = match &acme.store {
        Some(store) => format!(
            "shared by every instance in s3://{}/{} (one lease holder orders)",
            store.bucket, store.prefix
        ),
        None => format!("kept in {} (this instance alone)", acme.cache_dir.display()),
    };
    let _ = writeln!(out, "  ACME {}: {kept}", acme.domains.join(", "));
    let proof = match &acme.dns {
        Some(dns) => match &dns.provider {
            DnsProvider::Rfc2136 { server, .. } => {
                format!("a TXT record in {} through {server}", dns.zone)
            }
            DnsProvider::Ovh { endpoint, .. } => {
                format!(
                    "a TXT record in {} through OVH's API at {endpoint}",
                    dns.zone
                )
            }
            DnsProvider::Route53 { hosted_zone_id, .. } => {
                format!(
                    "a TXT record in {} through Route53 zone {hosted_zone_id}",
                    dns.zone
                )
            }
        },
        None if acme.challenge == Challenge::Http01 => {
            "/.well-known/acme-challenge/ on the plain listener".to_owned()
        }
        None => "a certificate on the HTTPS listener".to_owned(),
    };
    for name in &acme.domains {
        let _ = writeln!(out, "    {name}: {} ({proof})", acme.challenge.name());
    }
    let profile = acme.profile.as_deref().unwrap_or("the CA's default");
    let _ = writeln!(
        out,
        "    profile {profile}; renewed in the CA's window (RFC 9773), else {} before expiry or with a third of the lifetime left",
        humantime::format_duration(acme.renew_before)
    );
    if acme.store.is_none() {
        cached(acme, out);
    }
}

/// The certificate in the cache directory for our names, if any: rustls-acme's cache names
/// its files `cached_cert_<digest>`; each is tried as our names' certificate.
fn cached(acme: &AcmeSettings, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(&acme.cache_dir) else {
        let _ = writeln!(
            out,
            "    no certificate cached yet: the first start orders one"
        );
        return;
    };
    let found = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cached_cert_"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|pem| crate::certs::certificate_from_pem(&pem, &acme.domains).ok())
        .max_by_key(|entry| entry.not_after);
    let Some(entry) = found else {
        let _ = writeln!(
            out,
            "    no certificate cached yet: the first start orders one"
        );
        return;
    };
    let not_before = entry
        .key
        .end_entity_cert()
        .ok()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .and_then(|(_, cert)| u64::try_from(cert.validity().not_before.timestamp()).ok())
        .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let expires = date(entry.not_after);
    let _ = write!(out, "    cached certificate: expires {expires}");
    if let Some(not_before) = not_before {
        let at = renewal_without_window(not_before, entry.not_after, acme.renew_before);
        let at = date(at);
        let _ = write!(
            out,
            "; renewed at {at}, or in the CA's window when it offers one"
        );
    }
    let _ = writeln!(out);
}

/// A time to the minute, UTC.
pub(super) fn date(at: std::time::SystemTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from(at)
        .format(&format)
        .unwrap_or_default()
}
