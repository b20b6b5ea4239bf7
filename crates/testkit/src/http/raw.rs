//! Raw HTTP/1.1 on a TCP stream: write a request as bytes, read an answer
//! whole, or read until the server closes the connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long [`read_response`] waits for each read.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// Writes `request` on `stream` and answers the response, read whole.
pub async fn exchange(stream: &mut TcpStream, request: &str) -> String {
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("writing the request: {e}"));
    read_response(stream).await
}

/// Reads one whole HTTP/1.1 response off `stream`: its head and as many body
/// bytes as its `content-length` says (none without one). Panics if the
/// server closes first or sends nothing for 10 s.
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            if seen.len() >= end + 4 + content_length(&text[..end]) {
                return text;
            }
        }
        let n = tokio::time::timeout(READ_LIMIT, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no whole response within {READ_LIMIT:?}: {text}"))
            .unwrap_or_else(|e| panic!("reading the response: {e}: {text}"));
        assert!(n > 0, "closed before a whole response: {text}");
        seen.extend_from_slice(&buf[..n]);
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0)
}

/// Reads until the peer closes the connection (or resets it) or `limit`
/// passes; answers what was read and whether it closed.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (seen, false),
            Ok(Ok(0) | Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}
