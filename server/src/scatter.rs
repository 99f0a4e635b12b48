//! Scatter-gather over owner shards: the one way a request that touches
//! partitions of several shards reaches them.
//!
//! Items (one per partition, say) come with the shard that owns them. Each
//! owner shard gets one job with its items, in request order; the jobs run
//! concurrently (the connection's own shard runs its job directly, the others
//! get theirs over the job mesh, `Shard::run_on`), and the results come back
//! in the order of the items. Produce, Fetch and ListOffsets use it;
//! replication will too.

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use futures_util::future::join_all;

use crate::shard::{Shard, ShardError};

/// Runs `job` once on each owner shard named in `items`, with that shard's
/// items in request order, and returns one result per item, in the order
/// of `items`. `job` must return one result per item it is given, in the
/// order given. The items of a shard that cannot run the job (it is gone:
/// shutting down) get that shard's error.
pub async fn scatter_gather<I, R, J, Fut>(
    shard: &Rc<Shard>,
    items: Vec<(usize, I)>,
    job: J,
) -> Vec<Result<R, ShardError>>
where
    I: Send + 'static,
    R: Send + 'static,
    J: FnOnce(Rc<Shard>, Vec<I>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Vec<R>> + 'static,
{
    gather(items, |target, batch| {
        let job = job.clone();
        shard.run_on(target, move |owner| job(owner, batch))
    })
    .await
}

/// The part of [`scatter_gather`] that does not need shards: splits `items`
/// by owner, calls `run` once per owner (in ascending owner order) with that
/// owner's items in request order, awaits the calls concurrently and puts
/// each result back at its item's position.
async fn gather<I, R, E, Run, RunFut>(items: Vec<(usize, I)>, mut run: Run) -> Vec<Result<R, E>>
where
    E: Clone,
    Run: FnMut(usize, Vec<I>) -> RunFut,
    RunFut: Future<Output = Result<Vec<R>, E>>,
{
    let count = items.len();
    // Per owner: the positions of its items in `items`, and the items.
    let mut by_owner: BTreeMap<usize, (Vec<usize>, Vec<I>)> = BTreeMap::new();
    for (position, (owner, item)) in items.into_iter().enumerate() {
        let (positions, batch) = by_owner.entry(owner).or_default();
        positions.push(position);
        batch.push(item);
    }
    let jobs = by_owner.into_iter().map(|(owner, (positions, batch))| {
        let reply = run(owner, batch);
        async move { (positions, reply.await) }
    });
    let mut out: Vec<Option<Result<R, E>>> = (0..count).map(|_| None).collect();
    for (positions, reply) in join_all(jobs).await {
        match reply {
            Ok(results) => {
                // A shorter or longer answer would give an item another
                // item's result.
                assert_eq!(
                    results.len(),
                    positions.len(),
                    "a shard job returns one result per item"
                );
                for (position, result) in positions.into_iter().zip(results) {
                    if let Some(slot) = out.get_mut(position) {
                        *slot = Some(Ok(result));
                    }
                }
            }
            Err(e) => {
                for position in positions {
                    if let Some(slot) = out.get_mut(position) {
                        *slot = Some(Err(e.clone()));
                    }
                }
            }
        }
    }
    #[allow(
        clippy::expect_used,
        reason = "every position is in exactly one owner's batch, and the assert above makes each batch fill all of its positions"
    )]
    out.into_iter()
        .map(|result| result.expect("every item is in exactly one owner's batch"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use futures_lite::future::block_on;

    use super::*;

    /// The calls a fake mesh saw: (owner, its items).
    type Calls = Vec<(usize, Vec<&'static str>)>;

    /// Runs `gather` with a fake mesh: each owner answers its items as
    /// `"<owner>:<item>"`, except `failing`, which answers an error. Returns
    /// the results and the calls made.
    fn run(
        items: Vec<(usize, &'static str)>,
        failing: Option<usize>,
    ) -> (Vec<Result<String, String>>, Calls) {
        let calls = RefCell::new(Vec::new());
        let results = block_on(gather(items, |owner, batch: Vec<&'static str>| {
            calls.borrow_mut().push((owner, batch.clone()));
            async move {
                if Some(owner) == failing {
                    return Err(format!("shard {owner} is gone"));
                }
                Ok(batch
                    .into_iter()
                    .map(|item| format!("{owner}:{item}"))
                    .collect())
            }
        }));
        (results, calls.into_inner())
    }

    #[test]
    fn results_come_back_in_request_order() {
        let items = vec![(1, "a"), (0, "b"), (2, "c"), (1, "d"), (0, "e"), (1, "f")];
        let (results, calls) = run(items, None);
        let expected = ["1:a", "0:b", "2:c", "1:d", "0:e", "1:f"];
        let expected: Vec<Result<String, String>> =
            expected.iter().map(|s| Ok(s.to_string())).collect();
        assert_eq!(results, expected);
        // One call per owner, its items in request order.
        assert_eq!(
            calls,
            vec![
                (0, vec!["b", "e"]),
                (1, vec!["a", "d", "f"]),
                (2, vec!["c"]),
            ]
        );
    }

    #[test]
    fn a_failing_owner_fails_only_its_own_items() {
        let items = vec![(0, "a"), (1, "b"), (0, "c"), (1, "d")];
        let (results, _) = run(items, Some(1));
        let gone = Err("shard 1 is gone".to_string());
        assert_eq!(
            results,
            vec![Ok("0:a".into()), gone.clone(), Ok("0:c".into()), gone]
        );
    }

    #[test]
    fn no_items_call_no_shard() {
        let (results, calls) = run(Vec::new(), None);
        assert!(results.is_empty());
        assert!(calls.is_empty());
    }

    #[test]
    #[should_panic(expected = "one result per item")]
    fn a_job_answering_too_few_results_is_caught() {
        let items = vec![(0, "a"), (0, "b")];
        block_on(gather(items, |_, _batch: Vec<&str>| async {
            Ok::<_, ()>(vec!["only one"])
        }));
    }
}
