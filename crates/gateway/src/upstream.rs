//! Calls to upstream providers: a pooled hyper client over rustls for
//! OpenAI-compatible and Anthropic providers (each with its credential
//! header), and the built-in mock provider. Every connection goes through
//! the `[egress]` address policy.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

use crate::catalog::{Authorization, ProviderRuntime};
use crate::connection::{
    self, ConnectTimedOut, EgressProxy, PerShard, ProviderConnection, UpClient,
};
use crate::google_auth::TokenClient;
use crate::mock;
use crate::settings::UpstreamSettings;
use obleth_config::egress::{url_host, EgressRefusal};
use obleth_config::model::ProviderKind;
use obleth_config::EgressSettings;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connect timeout (TCP, tunnel, TLS) to a token endpoint.
const TOKEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");
const ANTHROPIC_VERSION: header::HeaderName = header::HeaderName::from_static("anthropic-version");
const AZURE_API_KEY: header::HeaderName = header::HeaderName::from_static("api-key");
const GOOG_API_KEY: header::HeaderName = header::HeaderName::from_static("x-goog-api-key");
/// A response body from any provider.
pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why an upstream attempt failed before it produced a response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to provider {provider}: {message}")]
    Connect { provider: String, message: String },
    #[error("provider {provider} did not answer within {timeout:?}")]
    Timeout { provider: String, timeout: Duration },
    /// The `[egress]` policy refused the provider's host or every address it
    /// resolved to; no connection was made.
    /// No connection (TCP, proxy tunnel, TLS handshake) within the
    /// provider's `connect_timeout_ms` (`None`: the TCP connect timed out);
    /// the request was not sent.
    #[error("cannot connect to provider {provider}: timed out{}", .timeout.map(|t| format!(" after {t:?}")).unwrap_or_default())]
    ConnectTimeout {
        provider: String,
        timeout: Option<Duration>,
    },
    #[error("provider {provider} refused by the egress policy: {reason}")]
    Refused {
        provider: String,
        reason: EgressRefusal,
    },
    #[error("provider {provider}: {message}")]
    Other { provider: String, message: String },
    /// No access token could be had for the provider (a `vertex`
    /// credential the gateway mints tokens with); the request was not sent.
    #[error("provider {provider}: {error}")]
    Token {
        provider: String,
        error: crate::google_auth::TokenError,
    },
}

impl UpstreamError {
    /// The `outcome` label of `obleth_upstream_attempts_total` for this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Timeout { .. } | UpstreamError::ConnectTimeout { .. } => "timeout",
            UpstreamError::Refused { .. } => "refused",
            UpstreamError::Connect { .. } | UpstreamError::Other { .. } => "error",
            UpstreamError::Token { .. } => "token",
        }
    }
}

/// The upstream clients: the shared one (connection pooling per host,
/// HTTP/1.1 and HTTP/2, TLS with the webpki roots) and, through the
/// providers' [`ProviderConnection`], those of providers with their own
/// connection settings. Names resolve through the egress policy; the egress
/// proxy, when set, carries connections through CONNECT tunnels
/// ([`crate::connection`]).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The shared client, one a proxy worker thread ([`PerShard`]).
    client: Arc<PerShard<UpClient>>,
    egress: Arc<EgressSettings>,
    proxy: Option<EgressProxy>,
    /// How Vertex AI tokens are minted ([`crate::google_auth`]).
    tokens: TokenClient,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new(&EgressSettings::default())
    }
}

impl Upstream {
    /// Direct connections only (no proxy).
    pub fn new(egress: &EgressSettings) -> Self {
        Self::with_proxy(egress, None)
    }

    /// The clients `settings` ask for: `[upstream]`'s proxy, or the proxy
    /// variables of the environment ([`EgressProxy::from_settings`]).
    pub fn from_settings(egress: &EgressSettings, settings: &UpstreamSettings) -> Self {
        let proxy = EgressProxy::from_settings(settings);
        if let Some(p) = &proxy {
            tracing::info!(proxy = %p.describe(), "Provider connections go through the egress proxy.");
        }
        Self::built(egress, proxy, &settings.metadata_host())
    }

    pub fn with_proxy(egress: &EgressSettings, proxy: Option<EgressProxy>) -> Self {
        Self::built(egress, proxy, &UpstreamSettings::default().metadata_host())
    }

    fn built(egress: &EgressSettings, proxy: Option<EgressProxy>, metadata_host: &str) -> Self {
        let egress = Arc::new(egress.clone());
        let client = Arc::new(PerShard::new());
        // The token endpoints come from the operator's credential files and
        // settings, not from a provider row: `[egress]` does not judge them
        // (the metadata server is link-local by design), the proxy applies.
        let token_egress = Arc::new(EgressSettings {
            allow_private_networks: true,
            allow_link_local: true,
            ..(*egress).clone()
        });
        let tokens = TokenClient {
            http: connection::client(
                &token_egress,
                proxy.as_ref(),
                Some(TOKEN_CONNECT_TIMEOUT),
                None,
            ),
            metadata_url: crate::google_auth::metadata_url(metadata_host),
        };
        Upstream {
            client,
            egress,
            proxy,
            tokens,
        }
    }

    /// The shared client of the current thread.
    fn shared_client(&self) -> &UpClient {
        self.client
            .get_or_init(|| connection::client(&self.egress, self.proxy.as_ref(), None, None))
    }

    /// The client `provider`'s connections use.
    fn client_for<'a>(
        &'a self,
        provider: &'a ProviderRuntime,
    ) -> Result<Cow<'a, UpClient>, UpstreamError> {
        match &provider.connection {
            ProviderConnection::Shared => Ok(Cow::Borrowed(self.shared_client())),
            ProviderConnection::Own(own) => own
                .client(&self.egress, self.proxy.as_ref())
                .map(Cow::Owned)
                .map_err(|message| UpstreamError::Connect {
                    provider: provider.name.clone(),
                    message,
                }),
        }
    }

    /// Sends `body` to `provider` at `path` (such as `/chat/completions`) and
    /// waits for the response headers, at most the provider's timeout.
    pub async fn send(
        &self,
        provider: &ProviderRuntime,
        path: &str,
        body: Bytes,
    ) -> Result<Response<UpBody>, UpstreamError> {
        self.send_within(
            provider,
            &provider.authorization(),
            path,
            body,
            provider.timeout,
        )
        .await
    }

    /// [`Upstream::send`] with `credential` (one of the provider's key
    /// pool), waiting for the headers at most `within` (or the provider's
    /// timeout, when shorter).
    pub async fn send_within(
        &self,
        provider: &ProviderRuntime,
        credential: &Authorization,
        path: &str,
        body: Bytes,
        within: std::time::Duration,
    ) -> Result<Response<UpBody>, UpstreamError> {
        let timeout = provider.timeout.min(within);
        if provider.kind == ProviderKind::Mock {
            return mock::respond(&provider.mock, path, &body)
                .await
                .map_err(|e| UpstreamError::Other {
                    provider: provider.name.clone(),
                    message: e.to_string(),
                });
        }
        let client = self.client_for(provider)?;
        let url = format!("{}{path}", provider.base_url.trim_end_matches('/'));
        // IP literals and metadata names are judged here: the resolver sees
        // names only, and behind the egress proxy it sees nothing at all.
        if let Some(host) = url_host(&url) {
            self.egress
                .check_host(host)
                .map_err(|reason| UpstreamError::Refused {
                    provider: provider.name.clone(),
                    reason,
                })?;
        }
        if provider.kind == ProviderKind::Bedrock {
            let request = self
                .bedrock_request(provider, credential, &url, body)
                .await?;
            return self.exchange(provider, &client, request, timeout).await;
        }
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream");
        if let Some(context) = crate::trace::TraceContext::current() {
            builder = builder
                .header(crate::trace::X_REQUEST_ID, context.request_id_header())
                .header(crate::trace::TRACEPARENT, context.traceparent);
        }
        if provider.kind == ProviderKind::Anthropic {
            builder = builder.header(
                ANTHROPIC_VERSION,
                crate::translate::anthropic::ANTHROPIC_VERSION,
            );
        }
        match credential {
            Authorization::None => {}
            Authorization::Bearer(value) => {
                builder = builder.header(header::AUTHORIZATION, value.clone());
            }
            Authorization::ApiKey(value) => {
                builder = builder.header(X_API_KEY, value.clone());
            }
            Authorization::AzureKey(value) => {
                builder = builder.header(AZURE_API_KEY, value.clone());
            }
            Authorization::GoogApiKey(value) => {
                builder = builder.header(GOOG_API_KEY, value.clone());
            }
            Authorization::GoogleToken(tokens) => {
                let value = tokens
                    .bearer(&self.tokens, timeout)
                    .await
                    .map_err(|error| UpstreamError::Token {
                        provider: provider.name.clone(),
                        error,
                    })?;
                builder = builder.header(header::AUTHORIZATION, value);
            }
            Authorization::Invalid => {
                return Err(UpstreamError::Other {
                    provider: provider.name.clone(),
                    message: "the credential cannot be sent: characters a header cannot carry, or a vertex credential that does not match options.auth (logged when it was read)"
                        .to_owned(),
                })
            }
            // Only `bedrock` providers hold AWS credentials (above).
            Authorization::Aws(_) | Authorization::AwsUnusable(_) => {}
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Other {
                provider: provider.name.clone(),
                message: format!("invalid upstream request for {url}: {e}"),
            })?;
        self.exchange(provider, &client, request, timeout).await
    }

    /// A `bedrock` provider's request to `url`, signed with SigV4 for its
    /// region: with its `credential_ref`'s AWS credentials, else the
    /// environment's or web identity's ([`crate::aws::sts::ambient`]).
    async fn bedrock_request(
        &self,
        provider: &ProviderRuntime,
        credential: &Authorization,
        url: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let failed = |message: String| UpstreamError::Other {
            provider: provider.name.clone(),
            message,
        };
        let Some(region) = provider.options.region.as_deref() else {
            return Err(failed("kind bedrock needs options.region".to_owned()));
        };
        let keys = match credential {
            Authorization::Aws(keys) => Arc::clone(keys),
            Authorization::AwsUnusable(e) => {
                return Err(failed(format!(
                    "the credential is not AWS credentials: {e}"
                )))
            }
            _ => Arc::new(
                crate::aws::sts::ambient(self.shared_client(), &self.egress, region)
                    .await
                    .map_err(|e| failed(e.to_string()))?,
            ),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| failed(format!("invalid upstream URL {url}: {e}")))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| failed(format!("upstream URL {url} names no host")))?;
        let accept = if url.ends_with("-stream") {
            crate::aws::frames::EVENT_STREAM
        } else {
            "application/json"
        };
        let signed = crate::aws::sign::signature_headers(
            &keys,
            region,
            "POST",
            url,
            &[("content-type", "application/json"), ("host", &host)],
            &body,
            std::time::SystemTime::now(),
        )
        .map_err(|e| failed(e.to_string()))?;
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, &host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept);
        for (name, value) in signed {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(body))
            .map_err(|e| failed(format!("invalid upstream request for {url}: {e}")))
    }

    /// Sends `request` with `client` and waits for the response headers at
    /// most `timeout`.
    async fn exchange(
        &self,
        provider: &ProviderRuntime,
        client: &UpClient,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<UpBody>, UpstreamError> {
        match tokio::time::timeout(timeout, client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout {
                provider: provider.name.clone(),
                timeout,
            }),
            Ok(Err(e)) if e.is_connect() => Err(match (refusal(&e), connect_timeout(&e)) {
                (Some(reason), _) => UpstreamError::Refused {
                    provider: provider.name.clone(),
                    reason,
                },
                (None, Some(timeout)) => UpstreamError::ConnectTimeout {
                    provider: provider.name.clone(),
                    timeout,
                },
                (None, None) => UpstreamError::Connect {
                    provider: provider.name.clone(),
                    message: source_chain(&e),
                },
            }),
            Ok(Err(e)) => Err(UpstreamError::Other {
                provider: provider.name.clone(),
                message: source_chain(&e),
            }),
            Ok(Ok(response)) => Ok(response.map(|b| b.map_err(BoxError::from).boxed_unsync())),
        }
    }
}

/// The resolver's refusal somewhere in a connect error's chain of causes.
fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<EgressRefusal> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(r) = err.downcast_ref::<EgressRefusal>() {
            return Some(r.clone());
        }
        current = err.source();
    }
    None
}

/// How long a connect that timed out waited, from a connect error's causes:
/// the whole connect's bound, or the TCP connect's.
fn connect_timeout(e: &(dyn std::error::Error + 'static)) -> Option<Option<Duration>> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(ConnectTimedOut(limit)) = err.downcast_ref::<ConnectTimedOut>() {
            return Some(Some(*limit));
        }
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return Some(None);
        }
        current = err.source();
    }
    None
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MockSettings;

    fn provider(base_url: String) -> ProviderRuntime {
        ProviderRuntime::new(
            "p".to_owned(),
            ProviderKind::OpenAi,
            base_url,
            None,
            Duration::from_secs(5),
            MockSettings::default(),
            Default::default(),
        )
    }

    #[tokio::test]
    async fn refused_hosts_and_resolved_addresses_are_refusals_not_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let strict = Upstream::new(&EgressSettings {
            allow_private_networks: false,
            ..EgressSettings::default()
        });
        for url in [
            format!("http://127.0.0.1:{port}/v1"),
            format!("http://localhost:{port}/v1"),
            "http://169.254.169.254/latest".to_owned(),
            "http://metadata.google.internal/".to_owned(),
        ] {
            let e = strict
                .send(&provider(url.clone()), "/chat/completions", Bytes::new())
                .await
                .unwrap_err();
            assert!(matches!(e, UpstreamError::Refused { .. }), "{url}: {e}");
            assert_eq!(e.outcome(), "refused");
            assert!(e.to_string().contains("egress."), "{e}");
        }
        // Nothing was accepted: a connection would be waiting.
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "a refused attempt connected");
    }
}
