//! The shard-wide budget of request bytes in flight
//! (`queued.max.request.bytes`, per shard).
//!
//! A connection asks the budget for a frame's declared size after reading
//! the size and before allocating the frame; the bytes stay taken until the
//! request has been handled. When the budget cannot take a frame, that
//! connection stops reading its socket (the client's bytes wait in the
//! kernel) until enough is released; other connections whose frames fit go
//! on meanwhile, so one stalled large frame does not hold up small requests.
//!
//! No deadlock: a frame is never larger than the budget (the config check
//! requires `queued.max.request.bytes >= socket.request.max.bytes`, as Kafka
//! does), and an admitted request never needs more of the budget to finish,
//! so the budget always drains down to what fits the waiting frame.
//!
//! What this bounds: a shard holds at most `queued.max.request.bytes` of
//! request frames (being read or handled), whatever the number of
//! connections and their pipelining.

use std::cell::Cell;
use std::rc::Rc;

use strom_engine::notify::Notify;

/// One shard's budget. Not `Send`: lives on its shard.
pub struct RequestBudget {
    /// `None`: unbounded (`queued.max.request.bytes = -1`).
    limit_bytes: Option<usize>,
    in_flight_bytes: Cell<usize>,
    /// Woken whenever bytes are released.
    released: Notify,
}

/// Bytes taken from a budget; given back when dropped.
pub struct Admitted {
    budget: Rc<RequestBudget>,
    bytes: usize,
}

impl RequestBudget {
    pub fn new(limit_bytes: Option<usize>) -> RequestBudget {
        RequestBudget {
            limit_bytes,
            in_flight_bytes: Cell::new(0),
            released: Notify::default(),
        }
    }

    /// Bytes of requests now in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes.get()
    }

    /// Whether `bytes` more fit now.
    fn fits(&self, bytes: usize) -> bool {
        self.limit_bytes
            .is_none_or(|limit| self.in_flight_bytes.get().saturating_add(bytes) <= limit)
    }

    /// Takes `bytes`, waiting until they fit. `bytes` is at most the limit
    /// (checked at start-up through the config); a larger value is admitted
    /// once nothing else is in flight, so even then nothing waits forever.
    pub async fn admit(self: &Rc<Self>, bytes: usize) -> Admitted {
        loop {
            let released = self.released.notified();
            if self.fits(bytes) || self.in_flight_bytes.get() == 0 {
                self.in_flight_bytes
                    .set(self.in_flight_bytes.get().saturating_add(bytes));
                return Admitted {
                    budget: self.clone(),
                    bytes,
                };
            }
            released.await;
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let budget = &self.budget;
        let now = budget.in_flight_bytes.get();
        debug_assert!(now >= self.bytes, "released more than was admitted");
        budget.in_flight_bytes.set(now.saturating_sub(self.bytes));
        budget.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn frames_wait_until_they_fit_and_smaller_ones_pass_meanwhile() {
        let budget = Rc::new(RequestBudget::new(Some(100)));
        let Poll::Ready(a) = poll(pin!(budget.admit(90))) else {
            panic!("an empty budget takes a frame that fits")
        };
        let mut big = pin!(budget.admit(90));
        assert!(poll(big.as_mut()).is_pending(), "90 + 90 > 100 waits");
        // A small frame that fits is not held up by the waiting big one.
        let Poll::Ready(small) = poll(pin!(budget.admit(10))) else {
            panic!("a frame that fits passes")
        };
        assert_eq!(budget.in_flight_bytes(), 100);
        drop(a);
        assert_eq!(budget.in_flight_bytes(), 10);
        let Poll::Ready(b) = poll(big.as_mut()) else {
            panic!("the big frame fits once the first is done")
        };
        assert_eq!(budget.in_flight_bytes(), 100);
        drop((b, small));
        assert_eq!(budget.in_flight_bytes(), 0);
    }

    #[test]
    fn a_frame_larger_than_the_budget_passes_alone() {
        let budget = Rc::new(RequestBudget::new(Some(100)));
        let Poll::Ready(small) = poll(pin!(budget.admit(1))) else {
            panic!()
        };
        let mut huge = pin!(budget.admit(150));
        assert!(poll(huge.as_mut()).is_pending());
        drop(small);
        assert!(poll(huge.as_mut()).is_ready());
    }

    #[test]
    fn unbounded_takes_everything() {
        let budget = Rc::new(RequestBudget::new(None));
        let taken: Vec<_> = (0..10)
            .map(|_| match poll(pin!(budget.admit(1 << 30))) {
                Poll::Ready(a) => a,
                Poll::Pending => panic!("unbounded never waits"),
            })
            .collect();
        assert_eq!(budget.in_flight_bytes(), 10 << 30);
        drop(taken);
        assert_eq!(budget.in_flight_bytes(), 0);
    }
}
