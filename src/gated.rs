//! A future polled only when it asked to be.
//!
//! A connection's task waits on its connection and on a few watches that almost never fire
//! (idle, stopping, cut, revoked). `select!` polls every branch on every wake of the task, and
//! the task wakes several times per request: each poll of a cancellation token locks its waiter
//! list, each poll of a timer checks the timer's state. [`Gated`] hands its future a waker of its
//! own and polls the future again only after that waker fired, as `FuturesUnordered` does for
//! its members; between those, a poll is two atomic operations.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pin_project_lite::pin_project! {
    /// See the module docs.
    pub struct Gated<F> {
        #[pin]
        inner: F,
        gate: Arc<Gate>,
        waker: Waker,
    }
}

struct Gate {
    /// Set when the inner future's waker fired since its last poll; set at first, so that the
    /// first poll registers the inner future's interest.
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F) -> Self {
        let gate = Arc::new(Gate {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(gate.clone());
        Self { inner, gate, waker }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read: a wake between the two is then seen by the next
        // poll instead of lost.
        this.gate.task.register(cx.waker());
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Pending until told; counts its polls and keeps the last waker it was given.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: std::sync::Mutex<Option<Waker>>,
    }

    struct ProbeFuture(Arc<Probe>);

    impl Future for ProbeFuture {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.0.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_again_only_after_its_waker_fired() {
        let probe = Arc::new(Probe::default());
        let task = Arc::new(CountingWaker::default());
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let mut gated = Box::pin(Gated::new(ProbeFuture(probe.clone())));

        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            probe.polls.load(Ordering::SeqCst),
            1,
            "polled while not woken"
        );

        probe.ready.store(true, Ordering::SeqCst);
        let inner_waker = probe.waker.lock().unwrap().take().unwrap();
        inner_waker.wake();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "the task was not woken for its inner future"
        );
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_wake_reaches_the_waker_of_the_latest_poll() {
        let probe = Arc::new(Probe::default());
        let (first, second) = (
            Arc::new(CountingWaker::default()),
            Arc::new(CountingWaker::default()),
        );
        let mut gated = Box::pin(Gated::new(ProbeFuture(probe.clone())));
        let _ = gated
            .as_mut()
            .poll(&mut Context::from_waker(&Waker::from(first.clone())));
        let _ = gated
            .as_mut()
            .poll(&mut Context::from_waker(&Waker::from(second.clone())));
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_timer_fires_beside_a_busy_branch() {
        let mut timer = std::pin::pin!(Gated::new(tokio::time::sleep(Duration::from_secs(5))));
        let start = tokio::time::Instant::now();
        let mut busy = 0u32;
        while busy < 100 {
            tokio::select! {
                biased;
                () = tokio::time::sleep(Duration::from_millis(100)) => busy += 1,
                () = &mut timer => break,
            }
        }
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!((49..=50).contains(&busy), "{busy}");
    }
}
