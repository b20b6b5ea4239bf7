//! Requests through hyper's pooled HTTP/1.1 client, answered whole, and the
//! checks of the two error shapes obleth answers with.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A pooled client for plain `http://` URLs.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new pooled client; its idle connections close when it is dropped.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A client whose connections leave from the local address `from` (any of
/// 127.0.0.0/8 on loopback), so that a test can play several clients.
pub fn client_from(from: IpAddr) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(from));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; panics showing the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name`, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts OpenAI's error shape (the gateway's and the mock upstream's:
    /// `error.message`, `error.type`, `error.param`) and answers `error.code`.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let error = v
            .get("error")
            .unwrap_or_else(|| panic!("no error object: {v}"));
        assert!(error["message"].is_string(), "{v}");
        assert!(error["type"].is_string(), "{v}");
        assert!(error.get("param").is_some(), "{v}");
        error["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code: {v}"))
            .to_owned()
    }

    /// Asserts the admin API's error shape (`error.message`, `error.field`)
    /// and answers `(code, field)`.
    pub fn admin_error(&self) -> (String, Option<String>) {
        let v = self.json();
        let e = v.get("error").unwrap_or_else(|| panic!("no error: {v}"));
        assert!(e["message"].is_string(), "{v}");
        assert!(e.get("field").is_some(), "{v}");
        (
            e["code"]
                .as_str()
                .unwrap_or_else(|| panic!("no code: {v}"))
                .to_owned(),
            e["field"].as_str().map(str::to_owned),
        )
    }
}

/// Sends one request on a new client and reads the answer whole; panics if
/// the request cannot be sent.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    request_with(&client(), method, url, headers, body).await
}

/// Like [`request`], on `client` (to reuse its connections or its local address).
pub async fn request_with(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let response = send_with(client, method, url, headers, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // A body cut short reads as empty; the status and headers still tell.
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// Like [`request`] without a body, from the local address `from`.
pub async fn request_from(
    from: IpAddr,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    request_with(&client_from(from), method, url, headers, Bytes::new()).await
}

/// A `GET` answered as `(status, JSON body)`, `Null` when the body is not JSON.
pub async fn get_json(url: &str) -> (u16, Value) {
    let a = request(Method::GET, url, &[], Bytes::new()).await;
    (
        a.status,
        serde_json::from_slice(&a.body).unwrap_or(Value::Null),
    )
}

/// Sends one request on a new client and answers the response with its body
/// unread, for a test that reads a stream frame by frame.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    send_with(&client(), method, url, headers, body).await
}

async fn send_with(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(body.into()))
        .unwrap_or_else(|e| panic!("a request to {url}: {e}"));
    client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("sending to {url}: {e}"))
}
