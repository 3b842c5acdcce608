//! AWS Route53 through the AWS SDK: a value is added to the name's TXT set (an `UPSERT` of
//! the set with the values already there, so that a wildcard's and its apex's answers, both at
//! `_acme-challenge.NAME`, do not replace each other), and the change waited on until Route53
//! says it is on every one of its servers (`INSYNC`). Credentials come from the environment,
//! the instance or container role, as for every AWS client; nothing secret is in the config.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_route53::Client;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use tokio::sync::OnceCell;

use super::{DnsSetupError, TTL, Writer};
use crate::acme::failure::OrderError;
use crate::config::{AcmeDns, DnsProvider};

/// Between two looks at a change in progress.
const LOOK_PAUSE: Duration = Duration::from_secs(2);

pub struct Route53 {
    /// The SDK's HTTPS client, trusting the roots read at start.
    http: aws_sdk_route53::config::SharedHttpClient,
    zone_id: String,
    region: Option<String>,
    endpoint: Option<String>,
    timeout: Duration,
    /// Made at the first use: reading the credentials chain is asynchronous.
    client: OnceCell<Client>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> OrderError {
    OrderError::failed(format!("Route53 {what}: {e}"))
}

impl Route53 {
    pub fn new(settings: &AcmeDns) -> Result<Self, DnsSetupError> {
        let DnsProvider::Route53 {
            hosted_zone_id,
            region,
            endpoint,
        } = &settings.provider
        else {
            return Err(DnsSetupError("not a Route53 provider".into()));
        };
        let roots = std::fs::read(crate::config::SYSTEM_ROOTS).map_err(|e| {
            DnsSetupError(format!("cannot read {}: {e}", crate::config::SYSTEM_ROOTS))
        })?;
        let trust = TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(roots);
        let tls = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| DnsSetupError(format!("TLS client: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(tls)
            .build_https();
        Ok(Self {
            http,
            zone_id: hosted_zone_id.trim_start_matches("/hostedzone/").to_owned(),
            region: region.clone(),
            endpoint: endpoint.clone(),
            timeout: settings.propagation_timeout,
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .http_client(self.http.clone());
                if let Some(region) = &self.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let Some(endpoint) = &self.endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                Client::new(&loader.load().await)
            })
            .await
    }

    /// The values of the TXT set at `name` (quoted, as Route53 keeps them).
    async fn values(&self, name: &str) -> Result<Vec<String>, OrderError> {
        let listed = self
            .client()
            .await
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .start_record_name(name)
            .start_record_type(RrType::Txt)
            .max_items(1)
            .send()
            .await
            .map_err(|e| failed("list", aws_sdk_route53::error::DisplayErrorContext(e)))?;
        let set = listed.resource_record_sets().iter().find(|set| {
            set.name().trim_end_matches('.').eq_ignore_ascii_case(name)
                && *set.r#type() == RrType::Txt
        });
        Ok(set
            .map(|set| {
                set.resource_records()
                    .iter()
                    .map(|r| r.value().to_owned())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Sets `name`'s TXT set to `values` (deletes it when there are none, with `old`, the
    /// values it had), then waits until Route53 has it on all its servers.
    async fn set(&self, name: &str, old: &[String], values: &[String]) -> Result<(), OrderError> {
        let (action, records) = match values.is_empty() {
            true => (ChangeAction::Delete, old),
            false => (ChangeAction::Upsert, values),
        };
        let records = records
            .iter()
            .map(|v| ResourceRecord::builder().value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed("record", e))?;
        let set = ResourceRecordSet::builder()
            .name(format!("{name}."))
            .r#type(RrType::Txt)
            .ttl(i64::from(TTL))
            .set_resource_records(Some(records))
            .build()
            .map_err(|e| failed("record set", e))?;
        let change = Change::builder()
            .action(action)
            .resource_record_set(set)
            .build()
            .map_err(|e| failed("change", e))?;
        let batch = ChangeBatch::builder()
            .changes(change)
            .build()
            .map_err(|e| failed("change", e))?;
        let client = self.client().await;
        let sent = client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| failed("change", aws_sdk_route53::error::DisplayErrorContext(e)))?;
        let id = sent
            .change_info()
            .map(|c| c.id().to_owned())
            .unwrap_or_default();
        let deadline = Instant::now() + self.timeout;
        loop {
            let change = client.get_change().id(&id).send().await.map_err(|e| {
                failed("get change", aws_sdk_route53::error::DisplayErrorContext(e))
            })?;
            if change
                .change_info()
                .is_some_and(|c| *c.status() == ChangeStatus::Insync)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(OrderError::failed(format!(
                    "Route53: change {id} not in sync in time"
                )));
            }
            tokio::time::sleep(LOOK_PAUSE).await;
        }
    }
}

#[async_trait]
impl Writer for Route53 {
    async fn add(&self, name: &str, value: &str) -> Result<(), OrderError> {
        let old = self.values(name).await?;
        let quoted = format!("\"{value}\"");
        let mut values = old.clone();
        if !values.contains(&quoted) {
            values.push(quoted);
        }
        self.set(name, &old, &values).await
    }

    async fn remove(&self, name: &str, value: &str) -> Result<(), OrderError> {
        let old = self.values(name).await?;
        let quoted = format!("\"{value}\"");
        if !old.contains(&quoted) {
            return Ok(());
        }
        let values: Vec<String> = old.iter().filter(|v| **v != quoted).cloned().collect();
        self.set(name, &old, &values).await
    }
}
