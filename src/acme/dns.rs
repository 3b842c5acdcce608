//! DNS-01: the record written into the zone by its provider ([`Writer`]: RFC 2136 with TSIG,
//! OVH's API or Route53), every configured server asked until each answers with it (the CA may ask any
//! of them), and the record deleted once the CA has looked.
//!
//! The DNS is shared by every instance, so this is the same with or without a store.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::{DnsMultiplexer, NetError};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use super::challenge::{Answer, Publish};
use super::failure::OrderError;
use crate::config::{AcmeDns, DnsProvider};

#[cfg(feature = "dns-ovh")]
mod ovh;
mod rfc2136;
#[cfg(feature = "dns-route53")]
mod route53;

/// The record's TTL: resolvers must not keep a validation value around.
const TTL: u32 = 60;
/// Each request's own limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two looks at whether every server answers with the record.
const LOOK_PAUSE: Duration = Duration::from_secs(1);

/// Why the provider cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("tls.acme.dns: {0}")]
pub struct DnsSetupError(pub String);

/// Writes and deletes one TXT record in the zone.
#[async_trait]
trait Writer: Send + Sync {
    /// Adds `value` at `name` (a full name, no final dot), beside any other value there.
    async fn add(&self, name: &str, value: &str) -> Result<(), OrderError>;
    /// Deletes exactly that value.
    async fn remove(&self, name: &str, value: &str) -> Result<(), OrderError>;
}

/// The zone's provider and the servers to ask.
pub struct Dns {
    writer: Box<dyn Writer>,
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl Dns {
    /// The configured provider, its secrets read now.
    pub fn new(settings: &AcmeDns) -> Result<Self, DnsSetupError> {
        let (writer, first): (Box<dyn Writer>, Option<SocketAddr>) = match &settings.provider {
            DnsProvider::Rfc2136 {
                server,
                tsig_key_file,
            } => (
                Box::new(rfc2136::Rfc2136::new(
                    *server,
                    tsig_key_file,
                    &settings.zone,
                )?),
                Some(*server),
            ),
            #[cfg(feature = "dns-ovh")]
            DnsProvider::Ovh { .. } => (Box::new(ovh::Ovh::new(settings)?), None),
            #[cfg(not(feature = "dns-ovh"))]
            DnsProvider::Ovh { .. } => {
                return Err(DnsSetupError("built without the dns-ovh feature".into()));
            }
            #[cfg(feature = "dns-route53")]
            DnsProvider::Route53 { .. } => (Box::new(route53::Route53::new(settings)?), None),
            #[cfg(not(feature = "dns-route53"))]
            DnsProvider::Route53 { .. } => {
                return Err(DnsSetupError(
                    "built without the dns-route53 feature".into(),
                ));
            }
        };
        Ok(Self {
            writer,
            servers: first
                .into_iter()
                .chain(settings.nameservers.iter().copied())
                .collect(),
            timeout: settings.propagation_timeout,
        })
    }

    /// Waits until every server answers the TXT query at `name` with `value`.
    async fn propagated(&self, name: &str, value: &str) -> Result<(), OrderError> {
        let wanted = record(name, value)?;
        let deadline = Instant::now() + self.timeout;
        let mut waiting = self.servers.clone();
        loop {
            let mut still = Vec::new();
            for server in waiting {
                if !answers(server, &wanted).await {
                    still.push(server);
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(OrderError::failed(format!(
                    "DNS: {name} not answered by {still:?} within {}",
                    humantime::format_duration(self.timeout)
                )));
            }
            tokio::time::sleep(LOOK_PAUSE).await;
            waiting = still;
        }
    }
}

#[async_trait]
impl Publish for Dns {
    async fn show(&self, answer: &Answer) -> Result<(), OrderError> {
        let Answer::Dns { domain, value } = answer else {
            return Err(OrderError::failed("only DNS-01 answers go to the zone"));
        };
        let name = format!("_acme-challenge.{domain}");
        self.writer.add(&name, value).await?;
        tracing::info!(record = %name, "ACME: DNS-01 record added; waiting for every server to answer with it");
        self.propagated(&name, value).await
    }

    async fn withdraw(&self, answer: &Answer) -> Result<(), OrderError> {
        let Answer::Dns { domain, value } = answer else {
            return Ok(());
        };
        let name = format!("_acme-challenge.{domain}");
        self.writer.remove(&name, value).await
    }
}

/// A client to `server` over TCP, signing what it sends with `signer` when there is one.
async fn client(
    server: SocketAddr,
    signer: Option<TSigner>,
) -> Result<Client<TokioRuntimeProvider>, NetError> {
    let provider = TokioRuntimeProvider::new();
    let (stream, handle) = TcpClientStream::new(server, None, Some(REQUEST_TIMEOUT), provider);
    let mut multiplexer = DnsMultiplexer::new(stream.await?, handle).with_timeout(REQUEST_TIMEOUT);
    if let Some(signer) = signer {
        multiplexer = multiplexer.with_signer(signer);
    }
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
    tokio::spawn(background);
    Ok(client)
}

/// The TXT record `value` at `name`.
fn record(name: &str, value: &str) -> Result<Record, OrderError> {
    let name = fqdn(name).map_err(|e| OrderError::failed(format!("DNS name: {e}")))?;
    let txt = RData::TXT(TXT::new(vec![value.to_owned()]));
    Ok(Record::from_rdata(name, TTL, txt))
}

/// True when `server` answers the TXT query for `record` with its value.
async fn answers(server: SocketAddr, record: &Record) -> bool {
    let Ok(mut client) = client(server, None).await else {
        return false;
    };
    let Ok(response) = client
        .query(record.name.clone(), DNSClass::IN, RecordType::TXT)
        .await
    else {
        return false;
    };
    response
        .answers
        .iter()
        .any(|answer| answer.data == record.data)
}

fn fqdn(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut name = Name::from_str(name)?;
    name.set_fqdn(true);
    Ok(name)
}
