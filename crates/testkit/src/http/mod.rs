//! A tiny HTTP/1.1 client for tests over loopback.
//!
//! [`request`] and [`send`] go through hyper's pooled client and answer a
//! whole [`Answer`] or the streaming response; [`exchange`],
//! [`read_response`] and [`read_until_closed`] speak raw HTTP/1.1 on a TCP
//! stream, for what a well-behaved client never sends (stalled headers, a body
//! the server refuses unread, an HTTP/2 preface).

mod client;
mod raw;

pub use client::{
    client, client_from, get_json, request, request_from, request_with, send, Answer, HttpClient,
};
pub use raw::{exchange, read_response, read_until_closed};
