//! The pace of the cleaner's I/O: a seam between the engine's cleaner and
//! the executor that runs it.

/// Paces the cleaner's I/O: called with the bytes of every read and write
/// of a clean. Production sleeps to keep `log.cleaner.io.max.bytes.per.second`
/// and yields to the shard's other tasks; tests pass [`NoPacing`].
#[allow(async_fn_in_trait)]
pub trait Pacer {
    async fn pace(&mut self, bytes: u64);

    /// Called after each batch a clean reads or decides on: the place to
    /// give the shard's other tasks their turn when the clean has held the
    /// thread long enough (the records' keys are parsed between two I/Os).
    async fn breathe(&mut self) {}
}

/// A pacer that never waits.
pub struct NoPacing;

impl Pacer for NoPacing {
    async fn pace(&mut self, _bytes: u64) {}
}
