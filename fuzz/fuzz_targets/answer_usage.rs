//! Fuzzes the reader of a whole upstream answer's token usage
//! (`obleth_gateway::answer::tokens`), a borrowed visitor that skips every
//! field but `usage`, against reading the answer into a `serde_json::Value`
//! and taking `Tokens::from_json`.
//!
//! Checks: no panic; wherever `Value` reads the answer, both readers find the
//! same usage. Where `Value` refuses it (past serde_json's nesting limit, a
//! lone surrogate escape in a skipped field), the visitor may still read
//! `usage`: only the absence of a panic is checked there.

#![no_main]

use libfuzzer_sys::fuzz_target;
use obleth_gateway::answer;
use obleth_gateway::relay::Tokens;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let found = answer::tokens(data);
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    assert_eq!(
        found,
        Tokens::from_json(&value),
        "the borrowed reader and the Value reader disagree"
    );
    if let Some(tokens) = found {
        // Counts are never negative: they would give quota back.
        for n in [tokens.prompt, tokens.completion, tokens.total]
            .into_iter()
            .flatten()
        {
            assert!(n >= 0);
        }
    }
});
