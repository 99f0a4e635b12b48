//! A single-threaded broadcast notification: waiters park until the next
//! `notify_all`. Used for long-poll fetches waiting on appends, and for a
//! shard's shutdown.
//!
//! A waiter that gives up (a long poll that times out, a connection that
//! closes) drops its [`Notified`], and the drop removes its waker. Without
//! that, every timed-out long poll on an idle partition would leave a waker
//! (and the task it keeps alive) behind until the next append, which on an
//! idle partition may never come.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every current waiter on `notify_all`. Not `Send`: lives on one shard.
#[derive(Default)]
pub struct Notify {
    epoch: Cell<u64>,
    next_key: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Notify {
    pub fn notify_all(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// A future that resolves at the next `notify_all` after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            epoch: self.epoch.get(),
            key: None,
        }
    }

    /// Wakers registered now: pending `Notified` futures that were polled.
    pub fn waiter_count(&self) -> usize {
        self.waiters.borrow().len()
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
    epoch: u64,
    /// This future's slot in `waiters` once it has been polled.
    key: Option<u64>,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.epoch.get() != self.epoch {
            self.key = None; // notify_all took every waker
            return Poll::Ready(());
        }
        let notify = self.notify;
        let key = *self.key.get_or_insert_with(|| {
            let key = notify.next_key.get();
            notify.next_key.set(key.wrapping_add(1));
            key
        });
        let mut waiters = notify.waiters.borrow_mut();
        match waiters.get_mut(&key) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => w.clone_from(cx.waker()),
            None => {
                waiters.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // Absent when notify_all already took it; removing is then a no-op.
            self.notify.waiters.borrow_mut().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(f: &mut Pin<&mut Notified<'_>>, waker: &Waker) -> Poll<()> {
        f.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_dropped_waiter_leaves_no_waker_behind() {
        let notify = Notify::default();
        let counter = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        for _ in 0..1000 {
            let mut f = std::pin::pin!(notify.notified());
            assert!(poll_once(&mut f, &waker).is_pending());
            assert_eq!(notify.waiter_count(), 1);
        }
        assert_eq!(notify.waiter_count(), 0);
        notify.notify_all();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn notify_all_wakes_each_pending_waiter_once() {
        let notify = Notify::default();
        let counter = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut a = std::pin::pin!(notify.notified());
        let mut b = std::pin::pin!(notify.notified());
        assert!(poll_once(&mut a, &waker).is_pending());
        assert!(poll_once(&mut a, &waker).is_pending()); // same waker: one slot
        assert!(poll_once(&mut b, &waker).is_pending());
        assert_eq!(notify.waiter_count(), 2);
        notify.notify_all();
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert_eq!(notify.waiter_count(), 0);
        assert!(poll_once(&mut a, &waker).is_ready());
        assert!(poll_once(&mut b, &waker).is_ready());
        // A future made after notify_all waits for the next one.
        let mut c = std::pin::pin!(notify.notified());
        assert!(poll_once(&mut c, &waker).is_pending());
        notify.notify_all();
        assert!(poll_once(&mut c, &waker).is_ready());
    }
}
