//! rustls-acme's directory cache, kept private: it writes the account key and certificates
//! with the process umask (0644 under the usual 022), and `check` refuses a cache directory
//! holding such files. The directory is 0700 from creation, so no other account could ever
//! open them in between. Every certificate it loads or stores is the one rustls-acme puts in
//! service, so its expiry goes to the metrics from here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use async_trait::async_trait;
use rustls_acme::caches::DirCache;
use rustls_acme::{AccountCache, CertCache};

use crate::certs::certificate_from_pem;
use crate::metrics::{Metrics, Source};

/// A [`DirCache`] whose files are readable by their owner only.
pub struct PrivateDirCache {
    dir: PathBuf,
    inner: DirCache<PathBuf>,
    metrics: Arc<Metrics>,
}

impl PrivateDirCache {
    pub fn new(dir: PathBuf, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: DirCache::new(dir.clone()),
            dir,
            metrics,
        }
    }

    /// A certificate going into service: its names and expiry to the metrics.
    fn in_service(&self, pem: &[u8], domains: &[String]) {
        if let Ok(entry) = certificate_from_pem(pem, domains) {
            let names = entry.names.iter().map(ToString::to_string).collect();
            self.metrics
                .certificates(Source::Acme, &[(names, entry.not_after)]);
        }
    }

    async fn make_private(&self) -> std::io::Result<()> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || restrict_files(&dir))
            .await
            .map_err(std::io::Error::other)?
    }
}

fn restrict_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let mode = entry.metadata()?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(
                    entry.path(),
                    std::fs::Permissions::from_mode(mode & 0o700),
                )?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl CertCache for PrivateDirCache {
    type EC = std::io::Error;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EC> {
        let cached = self.inner.load_cert(domains, directory_url).await?;
        if let Some(pem) = &cached {
            self.in_service(pem, domains);
        }
        Ok(cached)
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), Self::EC> {
        self.inner.store_cert(domains, directory_url, cert).await?;
        self.in_service(cert, domains);
        self.make_private().await
    }
}

#[async_trait]
impl AccountCache for PrivateDirCache {
    type EA = std::io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EA> {
        self.inner.load_account(contact, directory_url).await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), Self::EA> {
        self.inner
            .store_account(contact, directory_url, account)
            .await?;
        self.make_private().await
    }
}
