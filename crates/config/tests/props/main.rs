//! Property tests of the parsers that take untrusted or hand-written input: the
//! API key format and the migration statement splitter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apikey;
mod sql;
