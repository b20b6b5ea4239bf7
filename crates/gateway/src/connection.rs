//! How the gateway opens connections to providers: the connector stack of
//! every upstream client, the egress HTTP proxy (`[upstream]`), and the
//! per-provider connection settings (`connect_timeout_ms`, `ca_file`,
//! `client_cert_file` and `client_key_ref` in a provider's options).
//!
//! The stack, from the socket up: a [`Dialer`] opens TCP to the provider
//! (names resolved through the egress policy, [`EgressResolver`]) or, when
//! the proxy settings say so, to the proxy, and asks it for an HTTP CONNECT
//! tunnel to the provider; hyper-rustls runs TLS over that (end to end: the
//! proxy sees neither the request nor its credential); a [`Bounded`] limits
//! the whole connect, TCP, tunnel and TLS handshake, to the provider's
//! `connect_timeout_ms`.
//!
//! A provider without connection options uses the gateway's shared client.
//! One with options gets its own client: its TLS files are read when the
//! catalog is loaded ([`ProviderConnection::load`]) and again whenever one
//! of them changes on disk ([`OwnConnection::refresh`], from the credential
//! watch: Kubernetes rotates mounted certificates in place), each reading a
//! new client. A provider whose files cannot be used is logged and fails
//! every attempt, never falling back to the public roots; files that change
//! into something unusable keep the previous usable ones in use.

use std::fmt;
use std::future::Future;
use std::io::Read as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use obleth_config::model::ProviderOptions;
use obleth_config::EgressSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;
use tower::{Service, ServiceExt};

use crate::catalog::Refresh;
use crate::resolve::EgressResolver;
use crate::settings::UpstreamSettings;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// An upstream HTTP client: pooled, HTTP/1.1 and HTTP/2, over [`Connector`].
pub type UpClient = Client<Connector, Full<Bytes>>;

/// One value a proxy worker thread ([`obleth_service::server::current_shard`];
/// slot 0 for every other thread), each made on first use there. An
/// upstream client a worker keeps each pooled connection, and the task that
/// drives it, on the thread whose requests use it: a request never wakes
/// another thread to reach its provider.
pub struct PerShard<T> {
    slots: Box<[OnceLock<T>]>,
}

impl<T> PerShard<T> {
    pub fn new() -> Self {
        PerShard {
            slots: (0..=obleth_service::server::MAX_WORKERS)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The current thread's value, made by `make` if it has none yet.
    pub fn get_or_init(&self, make: impl FnOnce() -> T) -> &T {
        let shard = obleth_service::server::current_shard();
        self.slots
            .get(shard)
            .unwrap_or(&self.slots[0])
            .get_or_init(make)
    }
}

impl<T> Default for PerShard<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for PerShard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let made = self.slots.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("PerShard").field("made", &made).finish()
    }
}

/// The connector of every upstream client.
pub type Connector = Bounded<HttpsConnector<Dialer>>;

/// The largest CA bundle or certificate chain file read.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// TCP connect timeout of the shared client (and of a provider's own client
/// without `connect_timeout_ms`).
pub const DEFAULT_TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The egress proxy

/// Where connections to providers go when a proxy is configured: the
/// operator's `[upstream]` settings or, without `upstream.proxy`, the
/// `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` variables.
/// `Debug` never shows the proxy's credentials.
#[derive(Clone)]
pub struct EgressProxy {
    matcher: Arc<Matcher>,
    /// The proxy URL without its user information, for the log.
    shown: String,
    source: &'static str,
}

impl fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressProxy")
            .field("proxy", &self.shown)
            .field("source", &self.source)
            .finish()
    }
}

impl EgressProxy {
    /// The proxy `settings` ask for, reading the process environment when
    /// `upstream.proxy` is unset and `upstream.proxy_from_env` is true.
    pub fn from_settings(settings: &UpstreamSettings) -> Option<EgressProxy> {
        Self::resolve(settings, |name| std::env::var(name).ok())
    }

    /// [`EgressProxy::from_settings`] with `env` for the environment.
    ///
    /// Precedence: `upstream.proxy` (for both http:// and https://
    /// providers, with `upstream.no_proxy`); else, with
    /// `upstream.proxy_from_env`, `HTTPS_PROXY` for https:// providers and
    /// `HTTP_PROXY` for http:// ones (either falling back to `ALL_PROXY`;
    /// lower-case names are read when the upper-case one is unset), with
    /// `NO_PROXY` and `upstream.no_proxy` together.
    pub fn resolve(
        settings: &UpstreamSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<EgressProxy> {
        let first = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
                .unwrap_or_default()
        };
        let (builder, no, source, shown) = match &settings.proxy {
            Some(proxy) => (
                Matcher::builder().all(proxy.expose()),
                settings.no_proxy.join(","),
                "upstream.proxy",
                proxy.redacted(),
            ),
            None if settings.proxy_from_env => {
                let https = first(["HTTPS_PROXY", "https_proxy"]);
                let http = first(["HTTP_PROXY", "http_proxy"]);
                let all = first(["ALL_PROXY", "all_proxy"]);
                if https.is_empty() && http.is_empty() && all.is_empty() {
                    return None;
                }
                let mut no = first(["NO_PROXY", "no_proxy"]);
                for entry in &settings.no_proxy {
                    if !no.is_empty() {
                        no.push(',');
                    }
                    no.push_str(entry);
                }
                let shown = [&https, &http, &all]
                    .into_iter()
                    .find(|v| !v.is_empty())
                    .map(|v| redact_userinfo(v))
                    .unwrap_or_default();
                (
                    Matcher::builder().https(https).http(http).all(all),
                    no,
                    "environment",
                    shown,
                )
            }
            None => return None,
        };
        Some(EgressProxy {
            matcher: Arc::new(builder.no(no).build()),
            shown,
            source,
        })
    }

    /// The proxy URL without credentials and where it was set, for the log.
    pub fn describe(&self) -> String {
        format!("{} (from {})", self.shown, self.source)
    }

    /// Whether a connection to `uri` goes through the proxy.
    pub fn applies_to(&self, uri: &Uri) -> bool {
        self.matcher.intercept(uri).is_some()
    }
}

/// `url` with any `user:password@` replaced by `***@`.
pub fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

// ---------------------------------------------------------------------------
// Connectors

/// Opens the TCP connection to a provider: directly, with its name resolved
/// through the egress policy, or through an HTTP CONNECT tunnel of the
/// egress proxy (whose own address is the operator's and not judged by the
/// policy; the provider's host is judged by name before the attempt, in
/// `Upstream::send`).
#[derive(Clone)]
pub struct Dialer {
    direct: HttpConnector<EgressResolver>,
    proxy: Option<(EgressProxy, HttpConnector)>,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("proxy", &self.proxy.as_ref().map(|(p, _)| p))
            .finish_non_exhaustive()
    }
}

impl Dialer {
    fn new(
        egress: &Arc<EgressSettings>,
        proxy: Option<&EgressProxy>,
        tcp_timeout: Duration,
    ) -> Dialer {
        // The connector asks the resolver only for names; IP literals are
        // judged in `Upstream::send` before a request is made.
        let mut direct = HttpConnector::new_with_resolver(EgressResolver::new(Arc::clone(egress)));
        direct.enforce_http(false);
        direct.set_nodelay(true);
        direct.set_connect_timeout(Some(tcp_timeout));
        let proxy = proxy.map(|p| {
            let mut to_proxy = HttpConnector::new();
            to_proxy.set_nodelay(true);
            to_proxy.set_connect_timeout(Some(tcp_timeout));
            (p.clone(), to_proxy)
        });
        Dialer { direct, proxy }
    }
}

/// Why a connection through the proxy was not attempted.
#[derive(Debug, thiserror::Error)]
#[error("the egress proxy's scheme must be http:// (the tunnel to the provider carries TLS)")]
pub struct UnsupportedProxyScheme;

impl Service<Uri> for Dialer {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each call works on clones, which `oneshot` drives to readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let intercept = self
            .proxy
            .as_ref()
            .and_then(|(p, to_proxy)| Some((p.matcher.intercept(&dst)?, to_proxy.clone())));
        let Some((intercept, to_proxy)) = intercept else {
            let direct = self.direct.clone();
            return Box::pin(async move { direct.oneshot(dst).await.map_err(BoxError::from) });
        };
        Box::pin(async move {
            if intercept.uri().scheme_str() != Some("http") {
                return Err(UnsupportedProxyScheme.into());
            }
            let mut tunnel = Tunnel::new(intercept.uri().clone(), to_proxy);
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            // The tunnel's CONNECT names the port, which a URL may leave out
            // (the tunnel would assume 443 for http:// too).
            let target = with_explicit_port(&dst)?;
            tunnel.oneshot(target).await.map_err(BoxError::from)
        })
    }
}

fn with_explicit_port(dst: &Uri) -> Result<Uri, BoxError> {
    let host = dst.host().ok_or("the provider URL has no host")?;
    let https = dst.scheme_str() == Some("https");
    let port = dst.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Uri::builder()
        .scheme(if https { "https" } else { "http" })
        .authority(format!("{host}:{port}"))
        .path_and_query("/")
        .build()?)
}

/// A connect that took longer than the provider's `connect_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("no connection within {0:?} (TCP, proxy tunnel and TLS handshake)")]
pub struct ConnectTimedOut(pub Duration);

/// A connector whose whole connect (TCP, tunnel, TLS handshake) is bounded.
#[derive(Debug, Clone)]
pub struct Bounded<C> {
    inner: C,
    limit: Option<Duration>,
}

impl<C> Service<Uri> for Bounded<C>
where
    C: Service<Uri> + Send,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = BoxFuture<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let limit = self.limit;
        Box::pin(async move {
            match limit {
                None => connecting.await.map_err(Into::into),
                Some(limit) => match tokio::time::timeout(limit, connecting).await {
                    Ok(connected) => connected.map_err(Into::into),
                    Err(_) => Err(ConnectTimedOut(limit).into()),
                },
            }
        })
    }
}

/// A client over the connector stack: `tls` or the public (webpki) roots,
/// `connect_timeout` over the whole connect (or the default TCP timeout
/// alone), through `proxy` when it applies.
pub fn client<B>(
    egress: &Arc<EgressSettings>,
    proxy: Option<&EgressProxy>,
    connect_timeout: Option<Duration>,
    tls: Option<rustls::ClientConfig>,
) -> Client<Connector, B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let dialer = Dialer::new(
        egress,
        proxy,
        connect_timeout.unwrap_or(DEFAULT_TCP_CONNECT_TIMEOUT),
    );
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let https = match tls {
        Some(config) => builder.with_tls_config(config),
        None => builder.with_webpki_roots(),
    }
    .https_or_http()
    .enable_http1()
    .enable_http2()
    .wrap_connector(dialer);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build::<_, B>(Bounded {
            inner: https,
            limit: connect_timeout,
        })
}

// ---------------------------------------------------------------------------
// Per-provider connections

/// How a provider's connections are made, decided when the catalog is loaded.
#[derive(Debug, Default)]
pub enum ProviderConnection {
    /// No connection option: the gateway's shared client.
    #[default]
    Shared,
    /// Its own client, from its options; rebuilt when its TLS files change.
    Own(Box<OwnConnection>),
}

/// A provider's own connection settings, the files they name, and the
/// client built from what those files held when last read.
pub struct OwnConnection {
    provider: String,
    options: ProviderOptions,
    connect_timeout: Option<Duration>,
    /// The TLS files (CA bundle, client certificate, `file:` client key)
    /// and how each looked when last read.
    files: Vec<std::path::PathBuf>,
    stamps: Mutex<Vec<Option<FileStamp>>>,
    current: RwLock<Arc<Built>>,
}

/// What the files held when last read: a client (built on first use), or
/// why they cannot be used (every attempt then fails).
enum Built {
    Usable(Box<Usable>),
    Unusable(String),
}

/// A usable TLS configuration (none: the public roots) and its client.
struct Usable {
    tls: Option<rustls::ClientConfig>,
    client: PerShard<UpClient>,
}

impl fmt::Debug for OwnConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the TLS configuration: it holds the client's private key.
        f.debug_struct("OwnConnection")
            .field("provider", &self.provider)
            .field("connect_timeout", &self.connect_timeout)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// What a file looks like from outside: enough to see it was replaced
/// (Kubernetes swaps a mounted secret's files through a symbolic link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
}

/// `path`'s stamp, or `None` when it cannot be read.
pub(crate) fn stamp_of(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

impl OwnConnection {
    /// This provider's client, or why its TLS files cannot be used.
    pub fn client(
        &self,
        egress: &Arc<EgressSettings>,
        proxy: Option<&EgressProxy>,
    ) -> Result<UpClient, String> {
        let built = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        match &*built {
            Built::Usable(usable) => Ok(usable
                .client
                .get_or_init(|| client(egress, proxy, self.connect_timeout, usable.tls.clone()))
                .clone()),
            Built::Unusable(message) => Err(message.clone()),
        }
    }

    /// Reads the TLS files again when one changed since last read (a
    /// rotated Kubernetes secret): new connections use them from the next
    /// request, while requests in flight finish on the connections they
    /// have. Files that changed but cannot be used keep a usable
    /// configuration in use (and are read again at their next change).
    pub fn refresh(&self, egress: &EgressSettings) -> Refresh {
        let now: Vec<_> = self.files.iter().map(|f| stamp_of(f)).collect();
        {
            let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return Refresh::Unchanged;
            }
            *seen = now;
        }
        let built = build(&self.provider, &self.options, egress);
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        match (&built, &**current) {
            (Built::Unusable(message), Built::Usable(_)) => {
                tracing::error!(provider = %self.provider, error = %message, "Provider TLS files changed but cannot be used; the previous ones stay in use.");
                Refresh::Failed
            }
            (Built::Unusable(_), Built::Unusable(_)) => {
                *current = Arc::new(built);
                Refresh::Failed
            }
            (Built::Usable(_), _) => {
                *current = Arc::new(built);
                Refresh::Reloaded
            }
        }
    }
}

/// The client of `provider` from its options' files, or the logged reason
/// they cannot be used.
fn build(provider: &str, options: &ProviderOptions, egress: &EgressSettings) -> Built {
    match tls_config(options, egress) {
        Ok(tls) => Built::Usable(Box::new(Usable {
            tls,
            client: PerShard::new(),
        })),
        Err(e) => {
            let message = format!("provider {provider}: options.{e}");
            tracing::error!(provider = %provider, error = %message, "Provider TLS settings cannot be used; its requests fail until they are fixed.");
            Built::Unusable(message)
        }
    }
}

impl ProviderConnection {
    /// Reads what `options` name (the CA bundle, the client certificate and
    /// its key, within `egress`), for provider `provider`. A failure is
    /// logged here and makes every attempt fail until the files are fixed;
    /// the message names the provider and the option, never a key.
    pub fn load(provider: &str, options: &ProviderOptions, egress: &EgressSettings) -> Self {
        let connect_timeout = options
            .connect_timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        if connect_timeout.is_none()
            && options.ca_file.is_none()
            && options.client_cert_file.is_none()
            && options.client_key_ref.is_none()
        {
            return ProviderConnection::Shared;
        }
        let files: Vec<std::path::PathBuf> = [
            options.ca_file.as_deref(),
            options.client_cert_file.as_deref(),
            options
                .client_key_ref
                .as_deref()
                .and_then(|r| r.strip_prefix("file:")),
        ]
        .into_iter()
        .flatten()
        .map(std::path::PathBuf::from)
        .collect();
        // Stamped before reading: a change while they are read is seen at
        // the next look.
        let stamps = files.iter().map(|f| stamp_of(f)).collect();
        ProviderConnection::Own(Box::new(OwnConnection {
            provider: provider.to_owned(),
            options: options.clone(),
            connect_timeout,
            current: RwLock::new(Arc::new(build(provider, options, egress))),
            files,
            stamps: Mutex::new(stamps),
        }))
    }

    /// [`OwnConnection::refresh`]; a shared connection has no file.
    pub fn refresh(&self, egress: &EgressSettings) -> Refresh {
        match self {
            ProviderConnection::Shared => Refresh::Unchanged,
            ProviderConnection::Own(own) => own.refresh(egress),
        }
    }
}

/// Why a provider's TLS files cannot be used: the option and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{option}: {message}")]
struct TlsFileError {
    option: &'static str,
    message: String,
}

fn refuse(option: &'static str, message: impl Into<String>) -> TlsFileError {
    TlsFileError {
        option,
        message: message.into(),
    }
}

/// The provider's rustls configuration, or `None` when it names no TLS file
/// (the shared client's public roots then).
fn tls_config(
    options: &ProviderOptions,
    egress: &EgressSettings,
) -> Result<Option<rustls::ClientConfig>, TlsFileError> {
    if options.ca_file.is_none() && options.client_cert_file.is_none() {
        if options.client_key_ref.is_some() {
            return Err(refuse("client_key_ref", "needs client_cert_file"));
        }
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca_file {
        Some(path) => {
            let pem = read_capped(Path::new(path)).map_err(|m| refuse("ca_file", m))?;
            let certs = certificates(&pem).map_err(|m| refuse("ca_file", m))?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(refuse(
                    "ca_file",
                    format!("{path}: no usable CA certificate"),
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refuse("ca_file", e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&options.client_cert_file, &options.client_key_ref) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(refuse("client_key_ref", "is needed with client_cert_file")),
        (None, Some(_)) => return Err(refuse("client_cert_file", "is needed with client_key_ref")),
        (Some(cert_path), Some(key_ref)) => {
            let pem =
                read_capped(Path::new(cert_path)).map_err(|m| refuse("client_cert_file", m))?;
            let chain = certificates(&pem).map_err(|m| refuse("client_cert_file", m))?;
            // The credential's error names the variable or file and the
            // rule; the key's parse error says nothing of its content.
            let key = crate::catalog::read_credential(key_ref, egress)
                .map_err(|e| refuse("client_key_ref", e.to_string()))?;
            let key =
                PrivateKeyDer::from_pem_slice(key.expose_secret().as_bytes()).map_err(|_| {
                    refuse(
                        "client_key_ref",
                        "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    )
                })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                refuse(
                    "client_cert_file",
                    format!("{cert_path}: cannot be used with the key: {e}"),
                )
            })?
        }
    };
    Ok(Some(config))
}

/// The certificates of a PEM file; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certs)
}

/// Reads a regular file of at most [`MAX_PEM_FILE_BYTES`]; the error names
/// the file, never its content.
fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(format!("{shown} is larger than {MAX_PEM_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ProxyUrl;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    /// Why `connection`'s files cannot be used, if they cannot.
    fn unusable(connection: &ProviderConnection) -> Option<String> {
        match connection {
            ProviderConnection::Shared => None,
            ProviderConnection::Own(own) => match &**own.current.read().unwrap() {
                Built::Usable(_) => None,
                Built::Unusable(m) => Some(m.clone()),
            },
        }
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn the_setting_wins_over_the_environment_and_no_proxy_exempts_hosts() {
        let settings = UpstreamSettings {
            proxy: Some(ProxyUrl::new("http://user:s3cret@proxy.internal:3128")),
            no_proxy: vec!["internal.example".into(), "10.0.0.0/8".into()],
            proxy_from_env: true,
            metadata_host: None,
        };
        let p = EgressProxy::resolve(
            &settings,
            env(&[("HTTPS_PROXY", "http://other:8080"), ("NO_PROXY", "*")]),
        )
        .unwrap();
        assert!(p.applies_to(&uri("https://api.openai.com/v1")));
        assert!(p.applies_to(&uri("http://models.example:8000/v1")));
        assert!(!p.applies_to(&uri("https://llm.internal.example/v1")));
        assert!(!p.applies_to(&uri("http://10.1.2.3:8000/v1")));
        let shown = format!("{p:?} {}", p.describe());
        assert!(shown.contains("proxy.internal:3128"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("user"),
            "{shown}"
        );
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn without_the_setting_the_environment_decides_per_scheme() {
        let settings = UpstreamSettings::default();
        assert!(EgressProxy::resolve(&settings, env(&[])).is_none());
        let p = EgressProxy::resolve(
            &settings,
            env(&[
                ("https_proxy", "http://a:b@proxy:3128"),
                ("NO_PROXY", "localhost,.svc"),
            ]),
        )
        .unwrap();
        assert!(p.applies_to(&uri("https://api.openai.com/v1")));
        assert!(
            !p.applies_to(&uri("http://api.openai.com/v1")),
            "no HTTP_PROXY"
        );
        assert!(!p.applies_to(&uri("https://localhost:8443/v1")));
        assert!(!p.applies_to(&uri("https://vllm.llm.svc/v1")));
        assert!(!p.describe().contains("a:b"), "{}", p.describe());

        let off = UpstreamSettings {
            proxy_from_env: false,
            ..UpstreamSettings::default()
        };
        assert!(EgressProxy::resolve(&off, env(&[("HTTPS_PROXY", "http://proxy:1")])).is_none());
    }

    #[test]
    fn user_information_is_redacted() {
        assert_eq!(
            redact_userinfo("http://u:p@proxy:3128/"),
            "http://***@proxy:3128/"
        );
        assert_eq!(redact_userinfo("proxy:3128"), "proxy:3128");
        assert_eq!(redact_userinfo("http://p%40ss@h"), "http://***@h");
    }

    #[test]
    fn unreadable_or_invalid_tls_files_name_the_option_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let egress = EgressSettings {
            credential_dirs: vec![dir.path().to_path_buf()],
            ..EgressSettings::default()
        };
        let missing = ProviderOptions {
            ca_file: Some(dir.path().join("nope.pem").display().to_string()),
            ..ProviderOptions::default()
        };
        let e = tls_config(&missing, &egress).unwrap_err();
        assert_eq!(e.option, "ca_file", "{e}");

        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let e = tls_config(
            &ProviderOptions {
                ca_file: Some(garbage.display().to_string()),
                ..ProviderOptions::default()
            },
            &egress,
        )
        .unwrap_err();
        assert_eq!(e.option, "ca_file", "{e}");

        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_PEM_FILE_BYTES as usize + 1]).unwrap();
        let e = read_capped(&big).unwrap_err();
        assert!(e.contains("larger than"), "{e}");

        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("client.pem");
        std::fs::write(&cert, ca.cert.pem()).unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n").unwrap();
        let options = ProviderOptions {
            client_cert_file: Some(cert.display().to_string()),
            client_key_ref: Some(format!("file:{}", key.display())),
            ..ProviderOptions::default()
        };
        let e = tls_config(&options, &egress).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        let loaded = ProviderConnection::load("p", &options, &egress);
        assert!(
            matches!(unusable(&loaded), Some(m) if m.starts_with("provider p: options.client_")),
            "{loaded:?}"
        );

        // The right key: usable, and `Debug` shows no key material.
        std::fs::write(&key, ca.key_pair.serialize_pem()).unwrap();
        let loaded = ProviderConnection::load("p", &options, &egress);
        assert!(matches!(loaded, ProviderConnection::Own(_)), "{loaded:?}");
        assert_eq!(unusable(&loaded), None);
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
        // A connect timeout alone: its own client with the public roots.
        let timeout_only = ProviderOptions {
            connect_timeout_ms: Some(100),
            ..ProviderOptions::default()
        };
        assert!(matches!(
            ProviderConnection::load("p", &timeout_only, &egress),
            ProviderConnection::Own(o) if matches!(&**o.current.read().unwrap(), Built::Usable(u) if u.tls.is_none())
        ));
        assert!(matches!(
            ProviderConnection::load("p", &ProviderOptions::default(), &egress),
            ProviderConnection::Shared
        ));
    }

    #[test]
    fn changed_tls_files_are_read_again_and_unusable_ones_keep_the_last_usable() {
        let dir = tempfile::tempdir().unwrap();
        let egress = EgressSettings::default();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not yet a certificate").unwrap();
        let options = ProviderOptions {
            ca_file: Some(ca.display().to_string()),
            ..ProviderOptions::default()
        };
        let connection = ProviderConnection::load("p", &options, &egress);
        assert!(unusable(&connection).is_some());
        assert_eq!(connection.refresh(&egress), Refresh::Unchanged);

        // Fixed in place (as a rotated secret is): usable from now on.
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let next = dir.path().join("ca.pem.next");
        std::fs::write(&next, cert.cert.pem()).unwrap();
        std::fs::rename(&next, &ca).unwrap();
        assert_eq!(connection.refresh(&egress), Refresh::Reloaded);
        assert_eq!(unusable(&connection), None);
        assert_eq!(connection.refresh(&egress), Refresh::Unchanged);

        // Broken again, then gone: the usable configuration stays.
        std::fs::write(&ca, "broken").unwrap();
        assert_eq!(connection.refresh(&egress), Refresh::Failed);
        assert_eq!(unusable(&connection), None);
        std::fs::remove_file(&ca).unwrap();
        assert_eq!(connection.refresh(&egress), Refresh::Failed);
        assert_eq!(unusable(&connection), None);
        assert_eq!(
            ProviderConnection::Shared.refresh(&egress),
            Refresh::Unchanged
        );
    }
}
