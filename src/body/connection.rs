//! An upstream HTTP/1.1 connection driven by whoever is using it: the request's own task while
//! it waits for the response head, then the task reading the response body. hyper's usual way
//! spawns a task per connection and hands every request and response between the two tasks
//! through channels, each hand-off a wake of the other task, often on the other worker thread.
//! Here the connection's work is done in the task that waits for it, as HAProxy and Pingora
//! drive an upstream from the stream that uses it.
//!
//! A connection waiting in a pool is driven by no one; the next user polls it first, which is
//! when a close by the upstream is noticed ([`Connection::poll_ready`]).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;

use super::RequestBody;

/// hyper's connection future (`UpgradeableConnection`, a type hyper does not name).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One HTTP/1.1 connection to an upstream: the handle requests are sent through and the future
/// that does the connection's reads and writes, behind one pointer, so that a response body
/// carrying it stays small (it is moved with every response).
pub struct Connection(Box<Halves>);

struct Halves {
    sender: SendRequest<RequestBody>,
    /// `None` once it has ended (closed, failed or handed to an upgrade): dropping it closes
    /// the socket and tells the sender, which then refuses requests.
    driver: Option<Driver>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("ended", &self.0.driver.is_none())
            .finish()
    }
}

impl Connection {
    /// The two halves `hyper::client::conn::http1::handshake` returns, the connection with
    /// upgrades enabled (a `101` response hands its IO to the tunnel).
    pub fn new(
        sender: SendRequest<RequestBody>,
        driver: impl Future<Output = hyper::Result<()>> + Send + 'static,
    ) -> Self {
        Self(Box::new(Halves {
            sender,
            driver: Some(Box::pin(driver)),
        }))
    }

    /// Does the connection's pending work: writes, reads, noticing a close. Ready once it has
    /// ended, after which it does nothing.
    pub fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let halves = &mut *self.0;
        let Some(driver) = &mut halves.driver else {
            return Poll::Ready(());
        };
        let Poll::Ready(outcome) = driver.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        if let Err(error) = outcome {
            tracing::debug!(%error, "upstream connection ended");
        }
        halves.driver = None;
        Poll::Ready(())
    }

    /// Ready to take a request, or an error once it has closed (a connection that waited in a
    /// pool may have been closed by the upstream meanwhile).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        let _ = self.poll_drive(cx);
        self.0.sender.poll_ready(cx)
    }

    /// Waits until it can take a request.
    pub async fn ready(&mut self) -> hyper::Result<()> {
        poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Whether it can take a request now, after doing what it can without waiting.
    pub fn is_ready_now(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.poll_ready(&mut cx), Poll::Ready(Ok(())))
    }

    /// Sends `request` and drives the connection until the response head has arrived. A request
    /// that was not written comes back in the error.
    pub async fn send(
        &mut self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        let mut response = std::pin::pin!(self.0.sender.try_send_request(request));
        poll_fn(|cx| {
            // The connection first: it writes the request, and reads the response that the
            // response future then finds without another wake.
            let _ = self.poll_drive(cx);
            response.as_mut().poll(cx)
        })
        .await
    }

    /// Hands the connection to a task of its own until it ends: after a `101`, it ends by
    /// handing its IO to the upgrade, and must be driven until then.
    pub fn upgrade(mut self) {
        spawn(async move { poll_fn(|cx| self.poll_drive(cx)).await });
    }

    /// Hands the connection to a task of its own until it can take a request, then to `reuse`:
    /// for a connection still writing a request body (the upstream answered early), which
    /// nobody else would drive.
    pub fn finish(mut self, reuse: impl FnOnce(Connection) + Send + 'static) {
        if self.0.driver.is_none() {
            return;
        }
        spawn(async move {
            if self.ready().await.is_ok() {
                reuse(self);
            }
        });
    }
}

/// Runs `task` when there is a runtime; without one (a body dropped at shutdown) the
/// connection closes.
fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}
