//! strom-server: the broker.
//!
//! Module map:
//! - `producer_ids`: durable producer id allocation and InitProducerId.

pub mod producer_ids;
