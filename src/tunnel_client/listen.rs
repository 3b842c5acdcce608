//! `portcullis connect --listen ADDR:PORT TARGET:PORT`: a local listener for clients that
//! cannot run a ProxyCommand (psql, JDBC, GUI tools). Each connection it accepts is one tunnel
//! through the gateway, with the employee's certificate; the first asks for the TOTP code when
//! the gateway wants one, and the next ones ride on the second-factor session it opened. Only
//! loopback addresses: anyone who reaches the listener acts with the employee's certificate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{ConnectError, ConnectOptions, open_asking, prepare};

/// Listens on `addr` until interrupted, one tunnel to `options.target` per connection.
pub async fn listen(options: &ConnectOptions, addr: SocketAddr) -> Result<(), ConnectError> {
    if !addr.ip().is_loopback() {
        return Err(ConnectError::NotLoopback(addr));
    }
    let (settings, tls) = prepare(options)?;
    let settings = Arc::new(settings);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ConnectError::Listen { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    eprintln!(
        "portcullis connect: listening on {bound} for {}, one tunnel per connection",
        options.target
    );
    // The code given, and whether a tunnel has used it already.
    let code = Arc::new(Mutex::new((options.otp.clone(), false)));
    loop {
        let (local, _) = listener
            .accept()
            .await
            .map_err(|source| ConnectError::Listen { addr, source })?;
        let _ = local.set_nodelay(true);
        let (settings, tls, code) = (settings.clone(), tls.clone(), code.clone());
        let target = options.target.clone();
        tokio::spawn(async move {
            let (mut given, stale) = code.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let opened = open_asking(&settings, &target, tls, &mut given, stale).await;
            *code.lock().unwrap_or_else(PoisonError::into_inner) = (given, true);
            match opened {
                Ok(tunnel) => {
                    let (mut local, mut tunnel) = (local, TokioIo::new(tunnel));
                    let _ = tokio::io::copy_bidirectional(&mut local, &mut tunnel).await;
                }
                Err(error) => eprintln!("portcullis connect: {error}"),
            }
        });
    }
}
