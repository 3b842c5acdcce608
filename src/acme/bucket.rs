//! The object store the instances share (S3, or an S3-compatible service), through the
//! `object_store` crate and our HTTP client (`http.rs`): small objects read whole, written
//! whole, and the conditional writes (`If-None-Match: *`, `If-Match: <etag>`) the lease is
//! built on.
//!
//! Credentials come from the environment as for any AWS SDK (`AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`, a web identity token, the instance or container role); nothing
//! secret is in the config.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use serde::{Deserialize, Serialize};

use crate::config::AcmeStore;

mod http;

pub use http::Connector as StoreConnector;

/// The lease object.
const LEASE: &str = "lease.json";

/// Why the store could not be used.
pub type StoreError = object_store::Error;

/// An object and the version it was read at.
#[derive(Debug)]
pub struct Versioned {
    pub bytes: Bytes,
    pub version: UpdateVersion,
}

/// The configured bucket, every name under its prefix.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Bucket {
    /// Opens the bucket; nothing is requested until the first use.
    pub fn open(settings: &AcmeStore) -> Result<Self, StoreError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_http_connector(StoreConnector);
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &settings.endpoint {
            // Validation allows http:// to loopback only.
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        Ok(Self {
            store: Arc::new(builder.build()?),
            prefix: settings.prefix.clone(),
        })
    }

    fn path(&self, name: &str) -> Path {
        Path::from(format!("{}{name}", self.prefix))
    }

    /// The object, if there is one.
    pub async fn get(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        self.get_if_changed(name, None)
            .await
            .map(|read| match read {
                Read::Changed(object) => Some(object),
                Read::Missing | Read::Unchanged => None,
            })
    }

    /// The object unless its etag is still `known`.
    pub async fn get_if_changed(
        &self,
        name: &str,
        known: Option<&str>,
    ) -> Result<Read, StoreError> {
        let options = GetOptions {
            if_none_match: known.map(str::to_owned),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&self.path(name), options).await {
            Ok(result) => result,
            Err(StoreError::NotFound { .. }) => return Ok(Read::Missing),
            Err(StoreError::NotModified { .. }) => return Ok(Read::Unchanged),
            Err(e) => return Err(e),
        };
        let version = UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        Ok(Read::Changed(Versioned {
            bytes: result.bytes().await?,
            version,
        }))
    }

    /// Writes the object, whatever was there.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.put_mode(name, bytes, PutMode::Overwrite)
            .await
            .map(|_| ())
    }

    /// Writes the object only if `mode`'s precondition holds; `false` when it did not.
    pub async fn put_mode(
        &self,
        name: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> Result<bool, StoreError> {
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(name), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. } | StoreError::Precondition { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the object (gone already is fine).
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The names of the objects under `dir` (relative to the prefix).
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let mut listing = self.store.list(Some(&self.path(dir)));
        let mut names = Vec::new();
        while let Some(meta) = listing.next().await {
            let location = meta?.location.to_string();
            if let Some(name) = location.strip_prefix(&self.prefix) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Takes or keeps the lease for `holder`: creates it when there is none, replaces it when
    /// it is ours or has expired, each only if nobody wrote it since we read it. Returns until
    /// when we hold it, or `None` when another instance does.
    ///
    /// Another holder's expiry counts for at most `duration` from when `watch` first saw that
    /// version of the lease: a live holder writes a new one every third of it, so a lease left
    /// unchanged longer is a holder that is gone, whatever it claims (a clock far ahead, a
    /// planted object).
    pub async fn hold_lease(
        &self,
        holder: &str,
        duration: Duration,
        watch: &LeaseWatch,
    ) -> Result<Option<SystemTime>, StoreError> {
        let now = SystemTime::now();
        let until = now + duration;
        let mine = Lease::bytes(holder, unix_ms(until))?;
        let mode = match self.get(LEASE).await? {
            None => PutMode::Create,
            Some(current) => {
                // An unreadable lease is as good as an expired one: replacing it is still a
                // conditional write.
                let lease: Option<Lease> = serde_json::from_slice(&current.bytes).ok();
                let unchanged_for = watch.unchanged_for(&current.version);
                let free = lease.as_ref().is_none_or(|l| {
                    l.holder == holder || l.until_ms <= unix_ms(now) || unchanged_for >= duration
                });
                if !free {
                    return Ok(None);
                }
                PutMode::Update(current.version)
            }
        };
        Ok(self.put_mode(LEASE, mine, mode).await?.then_some(until))
    }

    /// Ends `holder`'s lease now, if it still holds it, so that another instance takes it at
    /// its next look instead of waiting for it to expire. True when it was ours and is handed
    /// over now.
    pub async fn release_lease(&self, holder: &str) -> Result<bool, StoreError> {
        let Some(current) = self.get(LEASE).await? else {
            return Ok(false);
        };
        let ours =
            serde_json::from_slice::<Lease>(&current.bytes).is_ok_and(|l| l.holder == holder);
        if !ours {
            return Ok(false);
        }
        let expired = Lease::bytes(holder, 0)?;
        // Conditional: a lease someone else took meanwhile is theirs.
        self.put_mode(LEASE, expired, PutMode::Update(current.version))
            .await
    }
}

/// The version of the lease last read, and since when it has been that one.
#[derive(Debug, Default)]
pub struct LeaseWatch(Mutex<Option<(UpdateVersion, Instant)>>);

impl LeaseWatch {
    /// How long the lease has been `version`, as far as this watch has seen.
    fn unchanged_for(&self, version: &UpdateVersion) -> Duration {
        let Ok(mut seen) = self.0.lock() else {
            return Duration::ZERO;
        };
        match seen.as_ref() {
            Some((known, since)) if known == version => since.elapsed(),
            _ => {
                *seen = Some((version.clone(), Instant::now()));
                Duration::ZERO
            }
        }
    }
}

/// What a conditional read found.
#[derive(Debug)]
pub enum Read {
    /// Nothing there.
    Missing,
    /// The version already known.
    Unchanged,
    /// A new version.
    Changed(Versioned),
}

/// Who holds the lease, and until when (ms since the epoch, by the holder's clock).
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    holder: String,
    until_ms: u64,
}

impl Lease {
    fn bytes(holder: &str, until_ms: u64) -> Result<Vec<u8>, StoreError> {
        let lease = Self {
            holder: holder.to_owned(),
            until_ms,
        };
        serde_json::to_vec(&lease).map_err(|e| StoreError::Generic {
            store: "lease",
            source: e.into(),
        })
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
