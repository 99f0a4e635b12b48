//! strom-server: the broker.
//!
//! Module map:
//! - `group`: consumer groups (the classic group protocol, committed
//!   offsets in `__consumer_offsets`, FindCoordinator).

pub mod group;
