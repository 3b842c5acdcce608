//! DNS-01 through RFC 2136 dynamic updates signed with TSIG (RFC 8945): the standard way to
//! change a zone that BIND, Knot, PowerDNS and most managed DNS front-ends accept. The record
//! is added to the zone's primary, every configured server is asked until each answers with
//! it (the CA may ask any of them), and it is deleted once the CA has looked.
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
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use super::challenge::{Answer, Publish};
use super::failure::OrderError;
use crate::config::{AcmeDns, TsigKey};

/// The record's TTL: resolvers must not keep a validation value around.
const TTL: u32 = 60;
/// Each request's own limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two looks at whether every server answers with the record.
const LOOK_PAUSE: Duration = Duration::from_secs(1);
/// Allowed clock difference for TSIG (RFC 8945 10 recommends 300 s).
const FUDGE: u16 = 300;

/// Why the key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("tls.acme.dns: {0}")]
pub struct DnsSetupError(String);

/// The zone's primary, its key, and the servers to ask.
pub struct Rfc2136 {
    settings: AcmeDns,
    zone: Name,
    signer: TSigner,
}

impl Rfc2136 {
    /// Prepares updates to `settings.zone` signed with `key`.
    pub fn new(settings: &AcmeDns, key: &TsigKey) -> Result<Self, DnsSetupError> {
        let algorithm = match key.algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            _ => TsigAlgorithm::HmacSha512,
        };
        let bad = |e: &dyn std::fmt::Display| DnsSetupError(e.to_string());
        let key_name = Name::from_ascii(&key.name).map_err(|e| bad(&e))?;
        let signer =
            TSigner::new(key.secret.clone(), algorithm, key_name, FUDGE).map_err(|e| bad(&e))?;
        Ok(Self {
            zone: fqdn(&settings.zone).map_err(|e| bad(&e))?,
            settings: settings.clone(),
            signer,
        })
    }

    /// A client to `server`, signing what it sends with the key when `signed`.
    async fn client(
        &self,
        server: SocketAddr,
        signed: bool,
    ) -> Result<Client<TokioRuntimeProvider>, NetError> {
        let provider = TokioRuntimeProvider::new();
        let (stream, handle) = TcpClientStream::new(server, None, Some(REQUEST_TIMEOUT), provider);
        let mut multiplexer =
            DnsMultiplexer::new(stream.await?, handle).with_timeout(REQUEST_TIMEOUT);
        if signed {
            multiplexer = multiplexer.with_signer(self.signer.clone());
        }
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
        tokio::spawn(background);
        Ok(client)
    }

    fn record(domain: &str, value: &str) -> Result<Record, OrderError> {
        let name = fqdn(&format!("_acme-challenge.{domain}"))
            .map_err(|e| OrderError::failed(format!("DNS name: {e}")))?;
        let txt = RData::TXT(TXT::new(vec![value.to_owned()]));
        Ok(Record::from_rdata(name, TTL, txt))
    }

    /// Sends an update to the primary; anything but NOERROR is a failed order.
    async fn update(&self, what: &str, record: Record, add: bool) -> Result<(), OrderError> {
        let failed = |why: String| OrderError::failed(format!("DNS update ({what}): {why}"));
        let mut client = self
            .client(self.settings.server, true)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let zone = self.zone.clone();
        let sent = if add {
            client.append(record, zone, false).await
        } else {
            client.delete_by_rdata(record, zone).await
        };
        match sent {
            Ok(response) if response.response_code == ResponseCode::NoError => Ok(()),
            Ok(response) => Err(failed(format!("refused: {}", response.response_code))),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// True when `server` answers the TXT query for `record` with its value.
    async fn answers(&self, server: SocketAddr, record: &Record) -> bool {
        let Ok(mut client) = self.client(server, false).await else {
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

    /// Waits until the primary and every other configured server answer with `record`.
    async fn propagated(&self, record: &Record) -> Result<(), OrderError> {
        let deadline = Instant::now() + self.settings.propagation_timeout;
        let servers: Vec<SocketAddr> = std::iter::once(self.settings.server)
            .chain(self.settings.nameservers.iter().copied())
            .collect();
        let mut waiting = servers;
        loop {
            let mut still = Vec::new();
            for server in waiting {
                if !self.answers(server, record).await {
                    still.push(server);
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(OrderError::failed(format!(
                    "DNS: {} not answered by {still:?} within {}",
                    record.name,
                    humantime::format_duration(self.settings.propagation_timeout)
                )));
            }
            tokio::time::sleep(LOOK_PAUSE).await;
            waiting = still;
        }
    }
}

#[async_trait]
impl Publish for Rfc2136 {
    async fn show(&self, answer: &Answer) -> Result<(), OrderError> {
        let Answer::Dns { domain, value } = answer else {
            return Err(OrderError::failed("only DNS-01 answers go to the zone"));
        };
        let record = Self::record(domain, value)?;
        self.update("add", record.clone(), true).await?;
        tracing::info!(record = %record.name, "ACME: DNS-01 record added; waiting for every server to answer with it");
        self.propagated(&record).await
    }

    async fn withdraw(&self, answer: &Answer) -> Result<(), OrderError> {
        let Answer::Dns { domain, value } = answer else {
            return Ok(());
        };
        self.update("delete", Self::record(domain, value)?, false)
            .await
    }
}

fn fqdn(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut name = Name::from_str(name)?;
    name.set_fqdn(true);
    Ok(name)
}
