//! Driving one connection to its end, with the watches that end it early: idle, the process
//! stopping, the connection being cut.
//!
//! A hand-written future rather than an `async fn`: an idle connection's task is mostly this
//! state, and an `async fn` keeps its arguments and the futures made from them side by side (the
//! compiler does not overlap a moved-from slot), which made it 2.6 KiB per connection where its
//! fields take about 600 bytes (docs/performance.md, idle memory).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::gated::Gated;

pin_project_lite::pin_project! {
    /// The first of two futures to complete: `Ok` with the first's output, `Err` with the
    /// second's. The first is polled first.
    struct Race<A, B> {
        #[pin]
        first: A,
        #[pin]
        second: B,
    }
}

impl<A: Future, B: Future> Future for Race<A, B> {
    type Output = Result<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.first.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        this.second.poll(cx).map(Err)
    }
}

pin_project_lite::pin_project! {
    /// Runs a connection to completion. When `idle` completes or `stopping` is cancelled, asks
    /// it to finish gracefully with `drain` (h1: after the current response; h2: GOAWAY,
    /// in-flight streams complete). An idle connection gets `linger` more to finish (a client
    /// that never answers GOAWAY's PING would hold it forever); a stopping one gets the shutdown
    /// grace. When `cut` completes or `cut_all` is cancelled, the connection is dropped at once,
    /// mid-request or not.
    pub(super) struct Drive<'a, C, D, I, X> {
        conn: Pin<Box<C>>,
        drain: D,
        // Both rarely fire: gated, the wakes of the connection's own IO do not poll them.
        #[pin]
        ended: Gated<Race<X, WaitForCancellationFuture<'a>>>,
        #[pin]
        finish: Gated<Race<I, WaitForCancellationFuture<'a>>>,
        // Only while draining an idle connection.
        lingering: Option<Pin<Box<Sleep>>>,
        linger: Duration,
        draining: bool,
    }
}

impl<'a, C, D, I, X> Drive<'a, C, D, I, X>
where
    D: FnMut(Pin<&mut C>),
    I: Future<Output = ()>,
    X: Future<Output = ()>,
{
    pub(super) fn new(
        conn: Pin<Box<C>>,
        drain: D,
        (idle, linger): (I, Duration),
        (cut, cut_all): (X, &'a CancellationToken),
        stopping: &'a CancellationToken,
    ) -> Self {
        Self {
            conn,
            drain,
            ended: Gated::new(Race {
                first: cut,
                second: cut_all.cancelled(),
            }),
            finish: Gated::new(Race {
                first: idle,
                second: stopping.cancelled(),
            }),
            lingering: None,
            linger,
            draining: false,
        }
    }
}

impl<C, D, I, X, E> Future for Drive<'_, C, D, I, X>
where
    C: Future<Output = Result<(), E>>,
    D: FnMut(Pin<&mut C>),
    I: Future<Output = ()>,
    X: Future<Output = ()>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            if this.conn.as_mut().poll(cx).is_ready() || this.ended.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if *this.draining {
                return match this.lingering {
                    Some(lingering) => lingering.as_mut().poll(cx),
                    None => Poll::Pending,
                };
            }
            let Poll::Ready(why) = this.finish.as_mut().poll(cx) else {
                return Poll::Pending;
            };
            (this.drain)(this.conn.as_mut());
            *this.draining = true;
            if why.is_ok() {
                *this.lingering = Some(Box::pin(tokio::time::sleep(*this.linger)));
            }
            // Round again: the connection acts on being asked to finish when it is polled.
        }
    }
}
