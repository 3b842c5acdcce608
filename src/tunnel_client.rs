//! `portcullis connect`: the employee's end of a tunnel, made to be ssh's `ProxyCommand`.
//!
//! It speaks TLS to the gateway with the employee's certificate, sends `CONNECT target:port`
//! (HTTP/1.1, RFC 9110 9.3.6), and when the gateway answers that it wants a second factor
//! (`Portcullis-OTP: required`), asks for the code on the terminal (never on stdin, which
//! belongs to ssh) and tries once more with it. Once the gateway answers 200, it relays stdin
//! and stdout to the tunnel until both sides are done.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::certs::{CertError, load_roots};
use crate::gateway::OTP_HEADER;

mod defaults;
mod expiry;
mod listen;

use defaults::Settings;
use expiry::{time_left, warn_if_expiring};
pub use listen::listen;

/// What `portcullis connect` was asked to do: its command-line flags, which may also come from
/// the environment, and for the gateway, its name, the certificate, key and CA, from
/// `~/.config/portcullis/connect.toml` ([`defaults`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectOptions {
    /// The defaults file; default ~/.config/portcullis/connect.toml when it exists.
    #[arg(long, env = "PORTCULLIS_CONNECT_DEFAULTS")]
    pub defaults: Option<PathBuf>,
    /// The gateway, host:port; the host is also the TLS server name unless --server-name.
    #[arg(long, env = "PORTCULLIS_GATEWAY")]
    pub gateway: Option<String>,
    /// The gateway's TLS name, when --gateway is an address or a balancer's name.
    #[arg(long, env = "PORTCULLIS_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Your certificate (PEM chain).
    #[arg(long, env = "PORTCULLIS_CERT")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "PORTCULLIS_KEY")]
    pub key: Option<PathBuf>,
    /// The CA of the gateway's certificate (PEM); the public web roots without it.
    #[arg(long, env = "PORTCULLIS_CA")]
    pub ca: Option<PathBuf>,
    /// The current TOTP code, for scripts; asked for on the terminal when wanted otherwise.
    /// Better from `PORTCULLIS_OTP`: a flag is in the process list while the tunnel lasts
    /// (given as a flag, the code is moved into the environment at once, see
    /// [`hide_otp_flag`]).
    #[arg(long, env = "PORTCULLIS_OTP", hide_env_values = true)]
    pub otp: Option<String>,
    /// Listen here (a loopback address) and open one tunnel for each connection, for clients
    /// that cannot use a ProxyCommand (psql, JDBC, GUI tools).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// What to open: name:port, as the gateway's tunnels name it (ssh's %h:%p).
    pub target: String,
}

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The defaults file cannot be read or holds something else.
    #[error("{}: {reason}", path.display())]
    Defaults {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Neither the flag, its environment variable nor the defaults file gives it.
    #[error(
        "{0} is needed: give it, set its PORTCULLIS_ variable, or put it in ~/.config/portcullis/connect.toml"
    )]
    Missing(&'static str),
    /// `--gateway` without a port or with a bad host.
    #[error("--gateway {0:?} is not host:port")]
    Gateway(String),
    /// A target without a port.
    #[error("target {0:?} is not name:port")]
    Target(String),
    /// The certificate, key or CA file.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// A key or certificate rustls would not use.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The gateway could not be reached, or the TLS handshake failed.
    #[error("gateway {gateway}: {source}")]
    Io {
        /// The gateway.
        gateway: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("gateway: {0}")]
    Http(#[from] hyper::Error),
    /// The gateway answered something else than 200, with the reason it gave an employee.
    #[error("the gateway refused the tunnel: {status}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Refused {
        /// Its status.
        status: StatusCode,
        /// What its body says, when more than the status (`no grant for db1:22`).
        reason: Option<String>,
    },
    /// A code is wanted and there is no terminal to ask on.
    #[error(
        "the gateway wants a TOTP code and there is no terminal to ask for one: set PORTCULLIS_OTP"
    )]
    NoTerminal,
    /// The private key file can be read by others than its owner.
    #[error(transparent)]
    ExposedKey(#[from] crate::secrets::Exposure),
    /// The code was wrong, expired or already used.
    #[error("the gateway did not accept the TOTP code")]
    OtpRejected,
    /// `--listen` on an address other machines reach: they would use your certificate.
    #[error(
        "--listen {0}: only a loopback address (127.0.0.1, ::1): anyone who reaches it uses your certificate"
    )]
    NotLoopback(std::net::SocketAddr),
    /// The listening socket.
    #[error("--listen {addr}: {source}")]
    Listen {
        /// Where.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the tunnel and relays `local` (stdin and stdout for ssh) through it until both
/// directions are done.
pub async fn connect<L>(options: &ConnectOptions, mut local: L) -> Result<(), ConnectError>
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    let (settings, tls) = prepare(options)?;
    let mut code = options.otp.clone();
    let tunnel = open_asking(&settings, &options.target, tls, &mut code, false).await?;
    let mut tunnel = TokioIo::new(tunnel);
    // Either side ending is passed on as a half-close; the relay ends when both have.
    let _ = tokio::io::copy_bidirectional(&mut local, &mut tunnel).await;
    Ok(())
}

/// The settings and TLS client of `options`, checked.
fn prepare(
    options: &ConnectOptions,
) -> Result<(Settings, Arc<rustls::ClientConfig>), ConnectError> {
    if !has_port(&options.target) {
        return Err(ConnectError::Target(options.target.clone()));
    }
    let settings = defaults::settings(options)?;
    let tls = Arc::new(client_config(&settings)?);
    Ok((settings, tls))
}

/// Opens a tunnel, with `code` when there is one; asks for a code on the terminal when the
/// gateway wants one and there is none, or when `stale` (the code was used before and the
/// gateway's second-factor session has since ended).
async fn open_asking(
    settings: &Settings,
    target: &str,
    tls: Arc<rustls::ClientConfig>,
    code: &mut Option<String>,
    mut stale: bool,
) -> Result<Upgraded, ConnectError> {
    loop {
        match open(settings, target, tls.clone(), code.as_deref()).await? {
            Opened::Tunnel(tunnel) => return Ok(tunnel),
            Opened::WantsCode if code.is_none() || stale => {
                *code = Some(ask_code(target)?);
                stale = false;
            }
            Opened::WantsCode => return Err(ConnectError::OtpRejected),
        }
    }
}

enum Opened {
    Tunnel(Upgraded),
    WantsCode,
}

async fn open(
    options: &Settings,
    target: &str,
    tls: Arc<rustls::ClientConfig>,
    otp: Option<&str>,
) -> Result<Opened, ConnectError> {
    let gateway = &options.gateway;
    let host = gateway_host(gateway).ok_or_else(|| ConnectError::Gateway(gateway.clone()))?;
    let name = options.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|_| ConnectError::Gateway(name.to_owned()))?;
    let io_error = |source| ConnectError::Io {
        gateway: gateway.clone(),
        source,
    };
    let tcp = TcpStream::connect(gateway).await.map_err(io_error)?;
    let _ = tcp.set_nodelay(true);
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(io_error)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream))
            .await?;
    tokio::spawn(connection.with_upgrades());
    let mut request = Request::connect(target).header(http::header::HOST, target);
    if let Some(code) = otp {
        request = request.header(OTP_HEADER, code.trim());
    }
    let request = request
        .body(Empty::new())
        .map_err(|_| ConnectError::Target(target.to_owned()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let wants_code = response
        .headers()
        .get(OTP_HEADER)
        .is_some_and(|v| v == "required" || v == "rejected");
    if status.is_success() {
        return Ok(Opened::Tunnel(hyper::upgrade::on(response).await?));
    }
    if wants_code && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Ok(Opened::WantsCode);
    }
    let reason = refusal_reason(response, status).await;
    Err(ConnectError::Refused { status, reason })
}

/// The reason a refusal's body gives, when it says more than its status: one short line, with
/// nothing a terminal would act on.
async fn refusal_reason(
    response: http::Response<hyper::body::Incoming>,
    status: StatusCode,
) -> Option<String> {
    use http_body_util::BodyExt;
    const LONGEST: usize = 512;
    let body = http_body_util::Limited::new(response.into_body(), LONGEST);
    let bytes = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let text = text.trim();
    (!text.is_empty() && Some(text) != status.canonical_reason()).then(|| text.to_owned())
}

fn client_config(options: &Settings) -> Result<rustls::ClientConfig, ConnectError> {
    let roots = match &options.ca {
        Some(ca) => load_roots(ca)?,
        None => crate::certs::public_roots(),
    };
    let read_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| CertError::Read { path, source }
    };
    let chain = CertificateDer::pem_file_iter(&options.cert)
        .map_err(read_err(&options.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(&options.cert))?;
    if let Some(left) = chain
        .first()
        .and_then(|leaf| time_left(leaf, SystemTime::now()))
    {
        warn_if_expiring(&options.cert, left);
    }
    // The key is the employee's identity: one another local account can read is refused, as
    // ssh refuses an exposed identity file.
    crate::secrets::require_private(&options.key)?;
    let key = PrivateKeyDer::from_pem_file(&options.key).map_err(read_err(&options.key))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// When the code came as `--otp CODE` (or `--otp=CODE`), runs this program again, as the same
/// process, with the flag dropped and the code in `PORTCULLIS_OTP`: `/proc/PID/cmdline` is
/// readable by every local account for as long as the tunnel lasts, the environment only by
/// the process's own. Returns only when there was no such flag or the exec failed (then the
/// code stays where it was, and a warning says so).
pub fn hide_otp_flag() {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let program = args.next();
    let mut kept = Vec::new();
    let mut code = None;
    while let Some(arg) = args.next() {
        if arg == "--otp" {
            code = args.next();
        } else if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--otp=")) {
            code = Some(value.into());
        } else {
            kept.push(arg);
        }
    }
    let (Some(code), Some(_)) = (code, program) else {
        return;
    };
    let error = std::process::Command::new("/proc/self/exe")
        .args(kept)
        .env("PORTCULLIS_OTP", code)
        .exec();
    eprintln!(
        "portcullis connect: --otp stays visible in the process list ({error}); use PORTCULLIS_OTP"
    );
}

/// Asks for a code on the controlling terminal: stdin and stdout carry ssh's bytes.
fn ask_code(target: &str) -> Result<String, ConnectError> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| ConnectError::NoTerminal)?;
    let mut writer = &tty;
    write!(writer, "TOTP code for {target}: ").map_err(|_| ConnectError::NoTerminal)?;
    let mut code = String::new();
    std::io::BufReader::new(&tty)
        .read_line(&mut code)
        .map_err(|_| ConnectError::NoTerminal)?;
    Ok(code.trim().to_owned())
}

/// The host of `host:port` (IPv6 in brackets), when there is a port.
fn gateway_host(gateway: &str) -> Option<&str> {
    let (host, port) = gateway.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    Some(host.trim_start_matches('[').trim_end_matches(']')).filter(|h| !h.is_empty())
}

fn has_port(target: &str) -> bool {
    target
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_and_target_need_ports() {
        assert_eq!(
            gateway_host("gw.example.internal:443"),
            Some("gw.example.internal")
        );
        assert_eq!(gateway_host("[::1]:8443"), Some("::1"));
        assert_eq!(gateway_host("gw.example.internal"), None);
        assert_eq!(gateway_host(":443"), None);
        assert!(has_port("db1:22"));
        assert!(!has_port("db1"));
        assert!(!has_port("db1:0"));
        assert!(!has_port(":22"));
    }
}
