//! A client socket that remembers when it last moved bytes and refuses to wait forever on a
//! client that stopped reading.
//!
//! hyper's own timers cover reading a request head; these cover the rest: the connection-wide
//! idle timeout ([`Activity::idle`]) and `send_timeout` for writes stuck on a full socket. Client
//! connections and tunnels both use them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Whether a connection moved a byte lately. Moving bytes only raises a flag: reading the
/// clock on every read, write and flush was a third of the clock reads of a request.
#[derive(Debug, Default)]
pub struct Activity {
    moved: AtomicBool,
}

/// How often [`Activity::idle`] looks at the flag, as a fraction of the timeout: a connection is
/// closed between `timeout` and `timeout` and an eighth after its last byte.
const IDLE_CHECKS_PER_TIMEOUT: u32 = 8;

impl Activity {
    /// A connection starting now.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    /// Completes once no byte has moved for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        let check_every = (timeout / IDLE_CHECKS_PER_TIMEOUT).max(Duration::from_millis(1));
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(check_every).await;
            if self.moved.swap(false, Ordering::Relaxed) {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= timeout {
                return;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// See the module docs.
    pub struct Watched<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
        send_timeout: Duration,
        stall: Option<Pin<Box<Sleep>>>,
        stalled: bool,
    }
}

impl<S> Watched<S> {
    /// Watches `inner`, recording into `activity`.
    pub fn new(inner: S, activity: Arc<Activity>, send_timeout: Duration) -> Self {
        Self {
            inner,
            activity,
            send_timeout,
            stall: None,
            stalled: false,
        }
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite> Watched<S> {
    /// Arms the send timer while a write is pending, disarms it on progress.
    fn watch<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        match op(this.inner, cx) {
            Poll::Pending => {
                let deadline = Instant::now() + *this.send_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !*this.stalled {
                    stall.as_mut().reset(deadline);
                    *this.stalled = true;
                }
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                *this.stalled = false;
                ready
            }
        }
    }
}

impl<S> Watched<S> {
    /// Counts a write that moved bytes as activity. A flush alone does not: the connection's
    /// task flushes whenever it is woken, the idle watch's own checks included.
    fn moved(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        written
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = self
            .as_mut()
            .watch(cx, |inner, cx| inner.poll_write(cx, buf));
        self.moved(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = self
            .as_mut()
            .watch(cx, |inner, cx| inner.poll_write_vectored(cx, bufs));
        self.moved(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const TIMEOUT: Duration = Duration::from_secs(8);

    /// Runs `client` against a watched stream until the idle watch fires; how long that took.
    async fn idle_after(
        client: impl AsyncFnOnce(&mut Watched<tokio::io::DuplexStream>),
    ) -> Duration {
        let (near, _far) = tokio::io::duplex(1 << 20);
        let activity = Activity::new();
        let mut watched = Watched::new(near, activity.clone(), Duration::from_secs(60));
        let start = Instant::now();
        tokio::select! {
            () = activity.idle(TIMEOUT) => {}
            () = async { client(&mut watched).await; std::future::pending().await } => {}
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_idle_after_the_timeout() {
        let took = idle_after(async |_| {}).await;
        assert!(took >= TIMEOUT && took <= TIMEOUT * 9 / 8, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn written_bytes_keep_it_open_and_flushes_do_not() {
        let took = idle_after(async |watched| {
            for _ in 0..6 {
                watched.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            for _ in 0..20 {
                watched.flush().await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
        .await;
        // The last byte left at 25 s.
        let last_byte = Duration::from_secs(25);
        assert!(
            took >= last_byte + TIMEOUT && took <= last_byte + TIMEOUT * 9 / 8,
            "{took:?}"
        );
    }
}
