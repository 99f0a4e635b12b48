//! strom-server: the broker.
