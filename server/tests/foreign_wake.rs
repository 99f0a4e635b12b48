//! Tasks whose wakers are woken or dropped on another thread, as a shard's
//! are: `Shard::run_on` is answered from the remote shard's thread, and the
//! controller thread answers proposals.
//!
//! Published glommio 0.9.0 could free such a task twice. A foreign
//! `drop_waker` took the reference count to zero and back to one, and in
//! between the owner could drop the task's `JoinHandle` and free it. Strom
//! builds glommio from `third_party/glommio`, where a foreign thread hands
//! its reference home instead (see `third_party/glommio/STROM-PATCH.md`).
//!
//! This test runs the patched paths many times:
//! - a foreign `wake` by value;
//! - a foreign drop of a task's last reference after the task completed and
//!   its `JoinHandle` was dropped.
//!
//! It checks that every task completes (no wake lost on the way home) within
//! a bounded time, and it would abort on a double free.
//!
//! The race itself is a few instructions wide. It needs the foreign thread to
//! lose its core inside that window. This test did not hit it on stock
//! glommio on the development VM. A loaded broker did; that interleaved A/B
//! is in `results/glommio-foreign-drop/`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_lite::FutureExt;
use glommio::LocalExecutorBuilder;

/// Threads that answer the tasks.
const ANSWERING_THREADS: usize = 2;
/// Threads that only burn CPU, so that the answering threads lose their core
/// at arbitrary points.
const BURNING_THREADS: usize = 2;
const TASKS_PER_ROUND: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(5);
/// A round whose tasks are not all done by then lost a wake.
const ROUND_DEADLINE: Duration = Duration::from_secs(10);

/// What a task sends to an answering thread.
enum Ask {
    /// Answer on this channel: a foreign `wake` by value.
    Answer(oneshot::Sender<u64>),
    /// Drop this waker after a while, without waking it.
    Drop(Waker),
}

#[test]
fn tasks_woken_and_dropped_on_other_threads_complete_and_are_freed_once() {
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..BURNING_THREADS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut spins = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            })
        })
        .collect();
    let mut workers = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..ANSWERING_THREADS {
        let (tx, rx) = mpsc::channel::<Ask>();
        inboxes.push(tx);
        workers.push(std::thread::spawn(move || {
            let mut answered = 0u64;
            let mut dropped = 0u64;
            while let Ok(ask) = rx.recv() {
                match ask {
                    Ask::Answer(reply) => {
                        answered += 1;
                        let _ = reply.send(answered);
                    }
                    Ask::Drop(waker) => {
                        // Usually after its task completed and its handle
                        // was dropped: then this is the last reference.
                        std::thread::yield_now();
                        drop(waker);
                        dropped += 1;
                    }
                }
            }
            (answered, dropped)
        }));
    }
    let (completed, wakers_sent) = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let deadline = Instant::now() + RUN_FOR;
            let mut completed = 0u64;
            let mut wakers_sent = 0u64;
            let mut next = 0usize;
            while Instant::now() < deadline {
                let mut handles = Vec::with_capacity(TASKS_PER_ROUND);
                for _ in 0..TASKS_PER_ROUND {
                    let inbox = inboxes[next % inboxes.len()].clone();
                    next += 1;
                    let keep_a_waker_away = next.is_multiple_of(2);
                    wakers_sent += u64::from(keep_a_waker_away);
                    handles.push(glommio::spawn_local(async move {
                        if keep_a_waker_away {
                            std::future::poll_fn(|cx| {
                                inbox.send(Ask::Drop(cx.waker().clone())).unwrap();
                                Poll::Ready(())
                            })
                            .await;
                        }
                        let (tx, rx) = oneshot::channel();
                        inbox.send(Ask::Answer(tx)).unwrap();
                        rx.await.is_ok()
                    }));
                }
                // Awaiting each handle and dropping it is the owner's half
                // of the race.
                let round = async {
                    let mut done = 0u64;
                    for handle in handles {
                        assert!(handle.await, "an answering thread dropped its sender");
                        done += 1;
                    }
                    Some(done)
                };
                let timeout = async {
                    glommio::timer::sleep(ROUND_DEADLINE).await;
                    None
                };
                let done = round.or(timeout).await;
                completed += done.expect("a task was never woken: a wake was lost");
            }
            (completed, wakers_sent)
        })
        .unwrap()
        .join()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    let (answered, dropped) = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .fold((0, 0), |(a, d), (wa, wd)| (a + wa, d + wd));
    assert_eq!(answered, completed);
    assert_eq!(dropped, wakers_sent);
    assert!(completed > 0);
}
