//! Support for the end-to-end and chaos tests: obleth processes, HAProxy in
//! front of them, and a fixed-rate load generator that accounts for every request.

pub mod fleet;
pub mod haproxy;
pub mod load;
pub mod previous;
pub mod procs;
