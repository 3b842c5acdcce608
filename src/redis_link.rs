//! The one connection to the Redis every instance shares (`[shared] redis`), for the
//! second-factor state and the routes' rate limits: made through the Redis upstream's own
//! connector (the environment checks of every upstream), in TLS for `rediss://`, and made again
//! after a failure. Each use waits at most [`STORE_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::RedisConnectionInfo;
use redis::aio::MultiplexedConnection;
use rustls::pki_types::ServerName;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

use crate::config::{Config, RedisTls};
use crate::metrics::Metrics;
use crate::upstream::{Upstream, UpstreamError};

/// Longest wait for the store on a request.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The Redis upstream could not be reached (or its address was refused).
    #[error("cannot reach the shared store: {0}")]
    Connect(#[from] UpstreamError),
    /// Redis answered with an error, or the connection failed.
    #[error("shared store failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within the store timeout.
    #[error("shared store timed out")]
    Timeout,
    /// The TLS handshake failed (a certificate our CA did not sign, or for another name).
    #[error("shared store TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// An answer the script cannot give: something else is answering on the store's address.
    #[error("shared store answered what it cannot: {0}")]
    Lied(&'static str),
}

/// See the module docs.
#[derive(Debug)]
pub struct RedisLink {
    upstream: Upstream,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    info: RedisConnectionInfo,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl RedisLink {
    /// The link to the Redis `[shared] redis` names, if any, through its upstream.
    pub fn shared(config: &Config, metrics: &Metrics) -> Result<Option<Arc<Self>>, rustls::Error> {
        let Some(redis) = &config.shared.redis else {
            return Ok(None);
        };
        let upstream = Upstream::new(config.upstream(redis.upstream), &config.limits, metrics);
        let password = redis.password.as_ref().map(|p| p.expose());
        Self::new(upstream, redis.tls.as_ref(), password).map(|link| Some(Arc::new(link)))
    }

    /// A link to `upstream`, in TLS if `tls` says so, authenticating with `password` if one is
    /// given. Nothing is connected until the first use.
    pub fn new(
        upstream: Upstream,
        tls: Option<&RedisTls>,
        password: Option<&[u8]>,
    ) -> Result<Self, rustls::Error> {
        let mut info = RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(password) = password {
            info = info.set_password(String::from_utf8_lossy(password));
        }
        let tls = tls.map(tls_client).transpose()?;
        Ok(Self {
            upstream,
            tls,
            info,
            connection: Mutex::new(None),
        })
    }

    /// Runs `command` on the connection (made now if there is none), within the store timeout;
    /// a failed connection is dropped so that the next use makes a new one.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let connection = self.connection().await?;
            command(connection).await.map_err(StoreError::from)
        };
        let result = tokio::time::timeout(STORE_TIMEOUT, work)
            .await
            .unwrap_or(Err(StoreError::Timeout));
        if result.as_ref().is_err_and(|e| !is_answer(e)) {
            *self.connection.lock().await = None;
        }
        result
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let stream = self.upstream.connect().await?;
        let config = AsyncConnectionConfig::new();
        // The driver ends when the connection does; not a task shutdown waits for.
        let connection = match &self.tls {
            None => {
                let (connection, driver) =
                    MultiplexedConnection::new_with_config(&self.info, stream, config).await?;
                tokio::spawn(driver);
                connection
            }
            Some((client, name)) => {
                let stream = TlsConnector::from(client.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(StoreError::Tls)?;
                let (connection, driver) =
                    MultiplexedConnection::new_with_config(&self.info, stream, config).await?;
                tokio::spawn(driver);
                connection
            }
        };
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

/// A client that trusts only the roots of `shared.redis_ca_file`.
fn tls_client(
    tls: &RedisTls,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(tls.roots.iter().cloned());
    let config = crate::certs::client_config(roots)?;
    Ok((Arc::new(config), tls.server_name.clone()))
}

/// A Redis error reply: the connection itself is fine.
fn is_answer(error: &StoreError) -> bool {
    matches!(error, StoreError::Redis(e) if e.kind() != redis::ErrorKind::Io && !e.is_connection_dropped())
}
