//! Fuzzes the request-body peek (`obleth_gateway::peek::peek`), which reads the
//! model and the stream flag from a client's JSON body before it is forwarded.
//!
//! Checks: no panic, and the result and the error can be shown. Listed in
//! `fuzz/Cargo.toml` once `crates/gateway/src/peek.rs` is in the tree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use obleth_gateway::peek::peek;

fuzz_target!(|data: &[u8]| {
    match peek(data) {
        Ok(found) => {
            let _ = format!("{found:?}");
        }
        Err(err) => {
            let _ = format!("{err} {err:?}");
        }
    }
});
