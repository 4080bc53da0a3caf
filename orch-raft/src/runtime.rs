//! openraft's async runtime for orch: tokio, made replayable.
//!
//! Two things in openraft's stock tokio runtime depend on more than the order of events: the
//! random numbers (election timeouts, tick jitter), and tokio's `watch` channel, which files each
//! waiting receiver under one of eight queues picked at random, so that two receivers woken by
//! one change run in a random order. [`Runtime`] draws its random numbers from a seed
//! (openraft-rt's `DeterministicRng`) and replaces the watch channel with [`FifoWatch`], which
//! wakes receivers in the order they started waiting. Everything else is tokio's. Under a
//! single-threaded tokio runtime with paused time, a cluster then replays exactly from its seed.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use openraft_rt::deterministic_rng::DeterministicRng;
use openraft_rt::watch::{RecvError, SendError, Watch, WatchReceiver, WatchSender};
use openraft_rt::{AsyncRuntime, OptionalSend, OptionalSync};
use openraft_rt_tokio::TokioRuntime;

use crate::lock;

type Inner = DeterministicRng<TokioRuntime>;

/// openraft's async runtime for orch: tokio with seeded randomness and a FIFO watch channel.
#[derive(Debug)]
pub struct Runtime(Inner);

impl AsyncRuntime for Runtime {
    type JoinError = <Inner as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Inner as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Inner as AsyncRuntime>::Sleep;
    type Instant = <Inner as AsyncRuntime>::Instant;
    type TimeoutError = <Inner as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Inner as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Inner as AsyncRuntime>::ThreadLocalRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Inner::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Inner::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Inner::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        Inner::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        Inner::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Inner::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Inner::thread_rng()
    }

    type Mpsc = <Inner as AsyncRuntime>::Mpsc;
    type Watch = FifoWatch;
    type Oneshot = <Inner as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <Inner as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        Self(Inner::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Inner::spawn_blocking(f)
    }
}

impl Runtime {
    /// Runs `future` with openraft's random numbers seeded by `seed`; the tasks openraft spawns
    /// inside it derive their own seeds from it.
    pub fn scope<F: Future>(seed: u64, future: F) -> impl Future<Output = F::Output> {
        Inner::scope(seed, future)
    }
}

/// A watch channel that wakes waiting receivers in the order they started waiting.
#[derive(Debug)]
pub struct FifoWatch;

struct State {
    version: u64,
    /// Waiting receivers, by receiver id, in the order they registered.
    waiters: Vec<(usize, Waker)>,
}

struct Shared<T> {
    value: RwLock<T>,
    state: Mutex<State>,
    senders: AtomicUsize,
    next_receiver: AtomicUsize,
}

impl<T> Shared<T> {
    fn wake_all(&self) {
        let waiters = std::mem::take(&mut lock(&self.state).waiters);
        for (_, waker) in waiters {
            waker.wake();
        }
    }
}

/// The sending half of a [`FifoWatch`] channel.
pub struct FifoSender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half of a [`FifoWatch`] channel.
pub struct FifoReceiver<T> {
    shared: Arc<Shared<T>>,
    id: usize,
    seen: u64,
}

impl<T> fmt::Debug for FifoSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FifoSender")
    }
}

impl<T> fmt::Debug for FifoReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FifoReceiver")
    }
}

impl<T> Clone for FifoSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::AcqRel);
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<T> Drop for FifoSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender is gone: waiting receivers learn the channel closed.
            self.shared.wake_all();
        }
    }
}

impl<T> Clone for FifoReceiver<T> {
    fn clone(&self) -> Self {
        let id = self.shared.next_receiver.fetch_add(1, Ordering::Relaxed);
        Self { shared: Arc::clone(&self.shared), id, seen: self.seen }
    }
}

impl<T> Drop for FifoReceiver<T> {
    fn drop(&mut self) {
        lock(&self.shared.state).waiters.retain(|(id, _)| *id != self.id);
    }
}

fn read<T>(value: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    value.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Watch for FifoWatch {
    type Sender<T: OptionalSend + OptionalSync> = FifoSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = FifoReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Self::Sender<T>, Self::Receiver<T>) {
        let shared = Arc::new(Shared {
            value: RwLock::new(init),
            state: Mutex::new(State { version: 0, waiters: Vec::new() }),
            senders: AtomicUsize::new(1),
            next_receiver: AtomicUsize::new(1),
        });
        (FifoSender { shared: Arc::clone(&shared) }, FifoReceiver { shared, id: 0, seen: 0 })
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<FifoWatch, T> for FifoSender<T> {
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        // Like tokio's watch: a send with no receiver left fails and hands the value back.
        if Arc::strong_count(&self.shared) <= self.shared.senders.load(Ordering::Acquire) {
            return Err(SendError(value));
        }
        self.send_if_modified(|current| {
            *current = value;
            true
        });
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = {
            let mut value = self.shared.value.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            modify(&mut value)
        };
        if modified {
            lock(&self.shared.state).version += 1;
            self.shared.wake_all();
        }
        modified
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        read(&self.shared.value)
    }

    fn subscribe(&self) -> FifoReceiver<T> {
        let id = self.shared.next_receiver.fetch_add(1, Ordering::Relaxed);
        let seen = lock(&self.shared.state).version;
        FifoReceiver { shared: Arc::clone(&self.shared), id, seen }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<FifoWatch, T> for FifoReceiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        poll_fn(|cx| {
            let mut state = lock(&self.shared.state);
            if state.version != self.seen {
                self.seen = state.version;
                return Poll::Ready(Ok(()));
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return Poll::Ready(Err(RecvError(())));
            }
            match state.waiters.iter_mut().find(|(id, _)| *id == self.id) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => state.waiters.push((self.id, cx.waker().clone())),
            }
            Poll::Pending
        })
        .await
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        read(&self.shared.value)
    }

    fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        self.seen = lock(&self.shared.state).version;
        read(&self.shared.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receivers_see_changes_and_the_close() {
        let (tx, mut rx) = FifoWatch::channel(1u32);
        let mut other = tx.subscribe();
        tx.send(2).expect("receivers exist");
        rx.changed().await.expect("changed");
        assert_eq!(*rx.borrow_watched(), 2);
        assert!(!tx.send_if_modified(|_| false), "no change, no wake");
        assert_eq!(*other.borrow_and_update(), 2);
        drop(tx);
        assert!(other.changed().await.is_err(), "the last sender left");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_in_the_order_they_waited() {
        let (tx, rx) = FifoWatch::channel(0u32);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let mut rx = rx.clone();
            let order = Arc::clone(&order);
            tasks.push(tokio::spawn(async move {
                rx.changed().await.expect("changed");
                lock(&order).push(i);
            }));
            tokio::task::yield_now().await;
        }
        tx.send(1).expect("receivers exist");
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(*lock(&order), (0..8).collect::<Vec<_>>());
    }
}
