//! Fuzzes the request-body peek (`obleth_gateway::peek::peek`), which reads the
//! model, the stream flags and `max_tokens` from a client's JSON body before
//! it is forwarded.
//!
//! Checks: no panic; an accepted body is a JSON object whose fields, read by
//! `serde_json::Value`, agree with what the peek found; a refusal's message
//! names only the gateway's own field names, never the body's content.

#![no_main]

use libfuzzer_sys::fuzz_target;
use obleth_gateway::peek::{peek, PeekError};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match peek(data) {
        Ok(found) => {
            // An accepted body is JSON by the grammar, read whole and skipped.
            serde_json::from_slice::<serde::de::IgnoredAny>(data)
                .expect("an accepted body is JSON");
            // serde_json's `Value` refuses some grammatical JSON while
            // decoding it (a lone surrogate escape, a number past f64's
            // range) in fields the peek skips; compare where it reads it.
            let Ok(value) = serde_json::from_slice::<Value>(data) else {
                return;
            };
            let object = value.as_object().expect("an accepted body is an object");
            assert_eq!(
                object.get("model").and_then(Value::as_str),
                Some(found.model.as_ref())
            );
            assert!(!found.model.is_empty());
            assert_eq!(
                object.get("stream").and_then(Value::as_bool).unwrap_or(false),
                found.stream
            );
            assert_eq!(object.get("max_tokens").and_then(Value::as_u64), found.max_tokens);
            let options = object.get("stream_options").filter(|o| !o.is_null());
            assert_eq!(options.is_some(), found.stream_options);
            assert_eq!(
                options
                    .and_then(|o| o.get("include_usage"))
                    .and_then(Value::as_bool),
                found.include_usage
            );
        }
        Err(err) => {
            if let PeekError::WrongType { field } = &err {
                assert!(
                    field
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.'),
                    "a field path that is not one of the gateway's names: {field:?}"
                );
            }
            let _ = format!("{err} {err:?}");
        }
    }
});
