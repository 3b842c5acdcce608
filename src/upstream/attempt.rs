//! One attempt: the request on a pooled connection to the picked address, or on a new one,
//! telling a failure before any byte was written (the request comes back) from one after.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};

use super::target::{InFlight, Target};
use super::{Upstream, UpstreamError};
use crate::body::{Lent, RequestBody, UpstreamBody};

/// How one attempt failed.
pub(super) enum Failed {
    /// Before any byte of the request was written: it comes back, to go anywhere.
    Unsent(Box<Request<RequestBody>>, UpstreamError),
    /// Once the request was on its way.
    Sent(UpstreamError),
}

impl Upstream {
    pub(super) async fn exchange(
        &self,
        target: &Arc<Target>,
        mut request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, Failed> {
        let in_flight = target.start();
        if let Some(mut sender) = target.pool.take() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(lend(in_flight, sender, response)),
                // The upstream closed it before the request went out (its keep-alive timeout
                // raced ours): nothing was sent, so the request goes again on a new one.
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(Failed::Sent(UpstreamError::exchange(error.into_error()))),
                },
            }
        }
        // Boxed: a future is as large as its largest state, and connecting is the largest;
        // the request path moves this future around, and most requests find a pooled
        // connection and never connect.
        Box::pin(self.exchange_on_new_connection(target, in_flight, request)).await
    }

    async fn exchange_on_new_connection(
        &self,
        target: &Arc<Target>,
        in_flight: InFlight,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, Failed> {
        let io = match self.connect_to(target.uri.clone()).await {
            Ok(io) => io,
            Err(error) => return Err(Failed::Unsent(Box::new(request), error)),
        };
        let (mut sender, connection) = match http1::handshake(io).await {
            Ok(handshake) => handshake,
            Err(error) => {
                return Err(Failed::Unsent(
                    Box::new(request),
                    UpstreamError::Failed(error),
                ));
            }
        };
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        match sender.try_send_request(request).await {
            Ok(response) => Ok(lend(in_flight, sender, response)),
            Err(mut error) => match error.take_message() {
                Some(unsent) => Err(Failed::Unsent(
                    Box::new(unsent),
                    UpstreamError::Failed(error.into_error()),
                )),
                None => Err(Failed::Sent(UpstreamError::exchange(error.into_error()))),
            },
        }
    }
}

/// The response, with its connection lent to the body until the body ends, the request counted
/// in flight until then; a connection that switched protocols belongs to the tunnel.
fn lend(
    in_flight: InFlight,
    sender: SendRequest<RequestBody>,
    response: Response<Incoming>,
) -> Response<UpstreamBody> {
    let lent = (response.status() != StatusCode::SWITCHING_PROTOCOLS)
        .then(|| in_flight.into_lender())
        .flatten()
        .map(|target| Lent::new(sender, target));
    response.map(|body| UpstreamBody::new(body, lent))
}
