//! Problems with `[tls.acme]`: its names, its account, its challenge and the stores and DNS
//! servers it answers through.

/// A problem with `[tls.acme]` or a table under it.
#[derive(Debug, thiserror::Error)]
pub enum AcmeProblem {
    /// `[tls.acme]` without domains.
    #[error("ACME needs at least one domain")]
    NoDomains,
    /// An ACME domain no route serves.
    #[error("{0:?} is not a host any route serves")]
    Unrouted(String),
    /// A name served both from a file and over ACME.
    #[error("{0:?} is also covered by a certificate file; configure it one way only")]
    AndFile(String),
    /// Only DNS-01 can validate a wildcard (RFC 8555 7.1.3).
    #[error("wildcards can only be validated with DNS-01: set tls.acme.challenge = \"dns-01\"")]
    Wildcard,
    /// A contact that is not `mailto:`.
    #[error("{0:?} is not a mailto: contact")]
    Contact(String),
    /// An unknown directory.
    #[error("{0:?} is not \"letsencrypt\", \"letsencrypt-staging\" or an https:// URL")]
    Directory(String),
    /// An unusable cache directory.
    #[error("cannot be created or written: {0}")]
    CacheDir(#[source] std::io::Error),
    /// An object store endpoint that is neither https nor local.
    #[error("{0:?} is not an https:// URL (http:// is allowed to localhost only)")]
    StoreEndpoint(String),
    /// Followers would not see a challenge before it is validated.
    #[error("must be shorter than tls.acme.store.lease")]
    PollNotBelowLease,
    /// The store's own `renew_before`, from before it applied to every mode.
    #[error("moved: set tls.acme.renew_before, which now applies with or without a store")]
    RenewBeforeMoved,
    /// HTTP-01 is answered on the plain listener, so there must be one.
    #[error("HTTP-01 is answered on the plain listener: set listen.http")]
    HttpWithoutListener,
    /// DNS-01 without the server to update.
    #[error("DNS-01 needs [tls.acme.dns]")]
    DnsMissing,
    /// `[tls.acme.dns]` with another challenge.
    #[error("used only with tls.acme.challenge = \"dns-01\"")]
    DnsUnused,
    /// A name the DNS zone does not hold.
    #[error("{name:?} is not in the zone {zone:?} that tls.acme.dns updates")]
    OutsideZone {
        /// The name.
        name: String,
        /// The zone.
        zone: String,
    },
    /// Not a DNS server address.
    #[error("{0:?} is not an IP address and port")]
    DnsServer(String),
    /// Not a DNS name.
    #[error("{0:?} is not a DNS zone name")]
    Zone(String),
    /// A TSIG key or API secret file that cannot be used.
    #[error("{file}: {why}")]
    DnsSecret {
        /// The file.
        file: String,
        /// What is wrong with it.
        why: String,
    },
    /// A key the DNS provider needs.
    #[error("needed by this provider")]
    DnsKeyMissing,
    /// A key of another DNS provider.
    #[error("not used by this provider")]
    DnsKeyUnused,
    /// A provider that asks servers it does not know.
    #[error(
        "name the zone's authoritative servers (IP:port): they are asked for each record before the CA is"
    )]
    NameserversNeeded,
    /// A provider this build was made without.
    #[error("this build has no such provider: build with the cargo feature {0}")]
    NotBuilt(&'static str),
    /// A profile name no CA would serve.
    #[error("{0:?} is not a profile name (letters, digits, '-' and '_')")]
    Profile(String),
}
