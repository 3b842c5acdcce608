//! RFC 2136 dynamic updates signed with TSIG (RFC 8945): the standard way to change a zone,
//! which BIND, Knot, PowerDNS and most managed DNS front-ends accept.

use std::net::SocketAddr;
use std::path::Path;

use async_trait::async_trait;
use hickory_net::client::ClientHandle;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, TSigner};

use super::{DnsSetupError, Writer, client, fqdn, record};
use crate::acme::failure::OrderError;

/// Allowed clock difference for TSIG (RFC 8945 10 recommends 300 s).
const FUDGE: u16 = 300;

/// The zone's primary and the key it takes updates signed with.
pub struct Rfc2136 {
    server: SocketAddr,
    zone: Name,
    signer: TSigner,
}

impl Rfc2136 {
    pub fn new(server: SocketAddr, key_file: &Path, zone: &str) -> Result<Self, DnsSetupError> {
        let key = crate::config::read_tsig_key(key_file)
            .map_err(|e| DnsSetupError(format!("tsig_key_file: {e}")))?;
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
            server,
            zone: fqdn(zone).map_err(|e| bad(&e))?,
            signer,
        })
    }

    /// Sends an update to the primary; anything but NOERROR is a failed order.
    async fn update(&self, name: &str, value: &str, add: bool) -> Result<(), OrderError> {
        let what = if add { "add" } else { "delete" };
        let failed = |why: String| OrderError::failed(format!("DNS update ({what}): {why}"));
        let record = record(name, value)?;
        let mut client = client(self.server, Some(self.signer.clone()))
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
}

#[async_trait]
impl Writer for Rfc2136 {
    async fn add(&self, name: &str, value: &str) -> Result<(), OrderError> {
        self.update(name, value, true).await
    }

    async fn remove(&self, name: &str, value: &str) -> Result<(), OrderError> {
        self.update(name, value, false).await
    }
}
