//! Providers and routes as the proxy uses them: model name to an ordered list of
//! providers, with credentials read from where each provider's config points,
//! when `[egress]` allows it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::HeaderValue;
use obleth_config::egress::{CredentialError, CredentialRef};
use obleth_config::model::{AzureAuth, ProviderKind, ProviderOptions, Route, VertexAuth};
use obleth_config::EgressSettings;
use secrecy::{ExposeSecret, SecretString};

use crate::connection::{stamp_of, FileStamp};
use crate::settings::{MockSettings, ProviderConfig, RouteConfig};

/// A provider ready to be called.
#[derive(Debug)]
pub struct ProviderRuntime {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub timeout: Duration,
    pub mock: MockSettings,
    /// Settings beyond the URL and credential, as configured.
    pub options: ProviderOptions,
    /// `x-obleth-provider` on answers, made once.
    pub name_header: Option<HeaderValue>,
    /// The credentials, used in turn: `credential_ref` first, then
    /// `options.credential_pool`; one of [`Authorization::None`] for a
    /// provider without any.
    credentials: Vec<Credential>,
    /// The round-robin counter over `credentials`.
    turn: AtomicUsize,
    /// How its connections are made: the shared client, or its own (a
    /// private CA, a client certificate, a connect timeout), read once per
    /// catalog load ([`ProviderRuntime::connecting`]).
    pub connection: crate::connection::ProviderConnection,
    /// Consecutive failures and ejection ([`crate::retry`]); a catalog
    /// reload starts it afresh.
    pub health: crate::retry::TargetHealth,
}

/// One credential of a provider.
#[derive(Debug)]
struct Credential {
    /// Its place in the configuration: 0 for `credential_ref`, `i + 1` for
    /// `credential_pool[i]`; how logs and metrics name it.
    slot: usize,
    /// Its `env:` or `file:` reference: no secret, so it may be logged.
    reference: Option<String>,
    /// The header sent upstream, made from the credential when it is read
    /// (marked sensitive: never printed by `Debug`), and again when its
    /// file changes ([`ProviderRuntime::refresh_credential`]).
    authorization: RwLock<Authorization>,
    /// A `file:` credential's path and what it looked like when last read.
    file: Option<CredentialFile>,
    /// [`crate::retry::now_ms`] until which the credential is benched
    /// (after a 429, 401 or 403); 0 when it is not.
    benched_until: AtomicU64,
}

impl Credential {
    fn new(
        slot: usize,
        reference: Option<&str>,
        authorization: Authorization,
        watch: bool,
    ) -> Credential {
        let file = match reference.map(CredentialRef::parse) {
            Some(Ok(CredentialRef::File(path))) if watch => Some(CredentialFile {
                stamp: std::sync::Mutex::new(stamp_of(&path)),
                path,
            }),
            _ => None,
        };
        Credential {
            slot,
            reference: reference.map(str::to_owned),
            authorization: RwLock::new(authorization),
            file,
            benched_until: AtomicU64::new(0),
        }
    }

    fn benched(&self, now: u64) -> bool {
        now < self.benched_until.load(Ordering::Acquire)
    }
}

/// The credential an attempt uses: its index among the provider's
/// credentials in use, its slot in the configuration (0 is
/// `credential_ref`, `i + 1` is `credential_pool[i]`: how logs and metrics
/// name it) and its header.
#[derive(Debug, Clone)]
pub struct CredentialPick {
    pub index: usize,
    pub slot: usize,
    pub authorization: Authorization,
}

/// How a provider's credential goes upstream.
#[derive(Debug, Clone)]
pub enum Authorization {
    None,
    /// `Authorization: Bearer <credential>` (OpenAI-compatible providers).
    Bearer(HeaderValue),
    /// `x-api-key: <credential>` (Anthropic).
    ApiKey(HeaderValue),
    /// `api-key: <credential>` (Azure OpenAI's resource key).
    AzureKey(HeaderValue),
    /// `x-goog-api-key: <credential>` (Google AI Studio's Gemini API).
    GoogApiKey(HeaderValue),
    /// AWS credentials a `bedrock` provider signs its requests with
    /// (SigV4, [`crate::aws::sign`]).
    Aws(Arc<crate::aws::AwsKeys>),
    /// A `bedrock` provider's credential is not AWS credentials: every
    /// call fails, naming why.
    AwsUnusable(crate::aws::KeysError),
    /// `Authorization: Bearer <token>` with a token the gateway mints and
    /// caches (Vertex AI with a service-account key or workload identity).
    GoogleToken(Arc<crate::google_auth::GoogleTokens>),
    /// The credential has characters a header cannot carry, or is a
    /// `vertex` credential that does not match `options.auth`: every call
    /// fails.
    Invalid,
}

/// A credential file and the stamp it had when it was read.
#[derive(Debug)]
struct CredentialFile {
    path: std::path::PathBuf,
    stamp: std::sync::Mutex<Option<FileStamp>>,
}

/// What [`ProviderRuntime::refresh_credential`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// No file credential, or the file is as it was.
    Unchanged,
    /// The file changed and its new credential is in use.
    Reloaded,
    /// The file changed but could not be read or is refused; the previous
    /// credential stays in use.
    Failed,
}

impl ProviderRuntime {
    /// The credential (read from the environment or a file at load time,
    /// never logged) is kept only as the header it becomes.
    pub fn new(
        name: String,
        kind: ProviderKind,
        base_url: String,
        credential: Option<SecretString>,
        timeout: Duration,
        mock: MockSettings,
        options: ProviderOptions,
    ) -> Self {
        let authorization = Self::header(&name, kind, &options, credential.as_ref());
        ProviderRuntime {
            name_header: HeaderValue::from_str(&name).ok(),
            name,
            kind,
            base_url,
            timeout,
            mock,
            options,
            credentials: vec![Credential::new(0, None, authorization, false)],
            turn: AtomicUsize::new(0),
            connection: crate::connection::ProviderConnection::Shared,
            health: crate::retry::TargetHealth::default(),
        }
    }

    /// Records the reference of the first credential and, when it is a
    /// `file:` reference, watches its file: a later
    /// [`ProviderRuntime::refresh_credential`] reads it again once it
    /// changes. A refused reference is named but never watched (`watch`).
    fn watching_opt(mut self, reference: Option<&str>, watch: bool) -> Self {
        if reference.is_some() {
            let first = &mut self.credentials[0];
            let authorization = std::mem::replace(
                first
                    .authorization
                    .get_mut()
                    .unwrap_or_else(|e| e.into_inner()),
                Authorization::None,
            );
            *first = Credential::new(0, reference, authorization, watch);
        }
        self
    }

    /// Reads the connection options' files (CA bundle, client certificate
    /// and key, within `egress`); one that cannot be used is logged and
    /// makes every attempt fail, never a fall back to the public roots.
    pub fn connecting(mut self, egress: &EgressSettings) -> Self {
        self.connection =
            crate::connection::ProviderConnection::load(&self.name, &self.options, egress);
        self
    }

    /// Adds `credential_pool[slot - 1]` to the key pool, read from
    /// `reference`, whose file is watched like the first's.
    fn pooled(mut self, slot: usize, reference: &str, credential: &SecretString) -> Self {
        let header = Self::header(&self.name, self.kind, &self.options, Some(credential));
        self.credentials
            .push(Credential::new(slot, Some(reference), header, true));
        self
    }

    /// Leaves the first credential out of the turn: it could not be read,
    /// and the pool has others.
    fn without_first(mut self) -> Self {
        if self.credentials.len() > 1 {
            self.credentials.remove(0);
        }
        self
    }

    /// The header the first credential is sent as, now.
    pub fn authorization(&self) -> Authorization {
        self.credentials[0]
            .authorization
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many credentials the provider uses in turn (1 without a pool).
    pub fn credential_count(&self) -> usize {
        self.credentials.len()
    }

    /// A credential's reference (`env:NAME`, `file:/path`): no secret.
    pub fn credential_reference(&self, index: usize) -> Option<&str> {
        self.credentials.get(index)?.reference.as_deref()
    }

    /// The credential for the next attempt: the next in turn among those
    /// not benched, so the ready ones share the requests evenly; when every
    /// one is benched, the next in turn anyway, as a route whose targets
    /// are all ejected is tried anyway.
    pub fn pick_credential(&self) -> CredentialPick {
        let n = self.credentials.len();
        let index = if n == 1 {
            0
        } else {
            let turn = self.turn.fetch_add(1, Ordering::Relaxed);
            let now = crate::retry::now_ms();
            let ready = self.credentials.iter().filter(|c| !c.benched(now)).count();
            if ready == 0 {
                turn % n
            } else {
                let k = turn % ready;
                self.credentials
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !c.benched(now))
                    .nth(k)
                    .map_or(turn % n, |(i, _)| i)
            }
        };
        CredentialPick {
            index,
            slot: self.credentials[index].slot,
            authorization: self.credentials[index]
                .authorization
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Benches credential `index` for `for_ms` (it was refused or rate
    /// limited); true when it was not benched already.
    pub fn bench_credential(&self, index: usize, for_ms: u64) -> bool {
        let Some(credential) = self.credentials.get(index) else {
            return false;
        };
        let now = crate::retry::now_ms();
        let was = credential
            .benched_until
            .swap(now.saturating_add(for_ms).max(1), Ordering::AcqRel);
        was <= now
    }

    /// Whether a credential other than `index` is not benched now.
    pub fn another_credential_ready(&self, index: usize) -> bool {
        let now = crate::retry::now_ms();
        self.credentials
            .iter()
            .enumerate()
            .any(|(i, c)| i != index && !c.benched(now))
    }

    /// Reads each `file:` credential again when its file changed since it
    /// was last read (a rotated Kubernetes secret), within `egress`; a file
    /// that cannot be read or is refused keeps its credential in use. The
    /// answer is the most notable of the credentials': a reload, else a
    /// failure, else unchanged.
    pub fn refresh_credential(&self, egress: &EgressSettings) -> Refresh {
        let mut result = Refresh::Unchanged;
        for credential in &self.credentials {
            match self.refresh_one(credential, egress) {
                Refresh::Unchanged => {}
                Refresh::Reloaded => result = Refresh::Reloaded,
                Refresh::Failed if result == Refresh::Unchanged => result = Refresh::Failed,
                Refresh::Failed => {}
            }
        }
        result
    }

    fn refresh_one(&self, credential: &Credential, egress: &EgressSettings) -> Refresh {
        let (Some(file), Some(reference)) = (&credential.file, &credential.reference) else {
            return Refresh::Unchanged;
        };
        let now = stamp_of(&file.path);
        let mut seen = file.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return Refresh::Unchanged;
        }
        *seen = now;
        match read_credential(reference, egress) {
            Ok(secret) => {
                let header = Self::header(&self.name, self.kind, &self.options, Some(&secret));
                // A rotated file that is not AWS credentials (a half-written
                // one, a wrong secret mounted) is refused like an unreadable
                // one: the previous credentials stay.
                if let Authorization::AwsUnusable(e) = &header {
                    tracing::error!(provider = %self.name, credential = credential.slot, error = %e, "Provider credential file changed but is not AWS credentials; the previous credential stays.");
                    return Refresh::Failed;
                }
                *credential
                    .authorization
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = header;
                Refresh::Reloaded
            }
            Err(e) => {
                tracing::error!(provider = %self.name, credential = credential.slot, error = %e, "Provider credential file changed but cannot be used; the previous credential stays.");
                Refresh::Failed
            }
        }
    }

    fn header(
        name: &str,
        kind: ProviderKind,
        options: &ProviderOptions,
        credential: Option<&SecretString>,
    ) -> Authorization {
        if kind == ProviderKind::Vertex {
            if let Some(minted) = Self::vertex_header(name, options, credential) {
                return minted;
            }
        }
        match credential {
            None => Authorization::None,
            Some(c) if kind == ProviderKind::Bedrock => {
                match crate::aws::AwsKeys::parse(c.expose_secret()) {
                    Ok(keys) => Authorization::Aws(Arc::new(keys)),
                    Err(e) => Authorization::AwsUnusable(e),
                }
            }
            Some(c) => {
                let (value, wrap): (String, fn(HeaderValue) -> Authorization) = match kind {
                    ProviderKind::Anthropic => {
                        (c.expose_secret().to_owned(), Authorization::ApiKey)
                    }
                    ProviderKind::Azure if options.azure_auth() == AzureAuth::ApiKey => {
                        (c.expose_secret().to_owned(), Authorization::AzureKey)
                    }
                    ProviderKind::Gemini => {
                        (c.expose_secret().to_owned(), Authorization::GoogApiKey)
                    }
                    ProviderKind::OpenAi
                    | ProviderKind::Mock
                    | ProviderKind::Azure
                    | ProviderKind::Vertex
                    | ProviderKind::Bedrock => (
                        format!("Bearer {}", c.expose_secret()),
                        Authorization::Bearer,
                    ),
                };
                match HeaderValue::from_str(&value) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        wrap(value)
                    }
                    Err(_) => Authorization::Invalid,
                }
            }
        }
    }
}

impl ProviderRuntime {
    /// A `vertex` credential the gateway mints tokens with (a
    /// service-account key, a workload identity federation file, or none
    /// with `options.auth = "workload-identity"`: the metadata server), or
    /// one it cannot use (logged, naming the provider, never the content);
    /// `None` for an access token, sent as it is.
    fn vertex_header(
        name: &str,
        options: &ProviderOptions,
        credential: Option<&SecretString>,
    ) -> Option<Authorization> {
        use crate::google_auth::{GoogleTokens, VertexCredential};
        let Some(credential) = credential else {
            return (options.vertex_auth() == Some(VertexAuth::WorkloadIdentity))
                .then(|| Authorization::GoogleToken(Arc::new(GoogleTokens::metadata())));
        };
        match GoogleTokens::classify(options.vertex_auth(), credential) {
            Ok(VertexCredential::AccessToken) => None,
            Ok(VertexCredential::Minted(tokens)) => {
                Some(Authorization::GoogleToken(Arc::from(tokens)))
            }
            Err(e) => {
                tracing::error!(provider = %name, error = %e, "Vertex AI credential cannot be used; every call to the provider fails until it is replaced.");
                Some(Authorization::Invalid)
            }
        }
    }
}

/// One step of a route.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Arc<ProviderRuntime>,
    /// The model name sent upstream instead of the client's.
    pub upstream_model: Option<String>,
    /// The target's share of its priority's requests; 0 is a standby.
    pub weight: u32,
    /// Lower first; the target's position in the route when not set.
    pub priority: u32,
}

/// Why the embedded configuration's providers and routes cannot be built.
/// The credential's error is part of the message (it names the variable or
/// file and the rule, never a value), so it is not also the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum CatalogLoadError {
    #[error("providers `{provider}`: credential: {error}")]
    Credential {
        provider: String,
        error: CredentialError,
    },
    #[error("routes `{model}`: unknown provider `{provider}`")]
    UnknownProvider { model: String, provider: String },
}

/// Routes by public model name.
#[derive(Debug, Default)]
pub struct Catalog {
    routes: HashMap<String, Vec<Target>>,
}

impl Catalog {
    pub fn route(&self, model: &str) -> Option<&[Target]> {
        self.routes.get(model).map(Vec::as_slice)
    }

    /// Every provider some route uses, once each.
    pub fn providers(&self) -> Vec<Arc<ProviderRuntime>> {
        let mut seen: HashMap<*const ProviderRuntime, Arc<ProviderRuntime>> = HashMap::new();
        for targets in self.routes.values() {
            for t in targets {
                seen.entry(Arc::as_ptr(&t.provider))
                    .or_insert_with(|| Arc::clone(&t.provider));
            }
        }
        seen.into_values().collect()
    }

    /// Public model names, sorted, for `/v1/models`.
    pub fn models(&self) -> Vec<&str> {
        let mut models: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        models.sort_unstable();
        models
    }

    /// Builds the catalog of the embedded configuration. Errors name the
    /// provider; a credential the policy refuses or that cannot be read is one.
    pub fn from_config(
        providers: &[ProviderConfig],
        routes: &[RouteConfig],
        egress: &EgressSettings,
    ) -> Result<Catalog, CatalogLoadError> {
        let mut by_name = HashMap::new();
        for p in providers {
            let credential = match &p.credential {
                Some(reference) => Some(read_credential(reference, egress).map_err(|error| {
                    CatalogLoadError::Credential {
                        provider: p.name.clone(),
                        error,
                    }
                })?),
                None => None,
            };
            let mut provider = ProviderRuntime::new(
                p.name.clone(),
                p.kind,
                p.base_url.clone().unwrap_or_default(),
                credential,
                Duration::from_millis(p.timeout_ms),
                p.mock.clone(),
                p.options.clone(),
            )
            .watching_opt(p.credential.as_deref(), true)
            .connecting(egress);
            for (i, reference) in p.options.credential_pool.iter().enumerate() {
                let credential = read_credential(reference, egress).map_err(|error| {
                    CatalogLoadError::Credential {
                        provider: p.name.clone(),
                        error,
                    }
                })?;
                provider = provider.pooled(i + 1, reference, &credential);
            }
            by_name.insert(p.name.clone(), Arc::new(provider));
        }
        let mut table = HashMap::new();
        for r in routes {
            let mut targets = Vec::new();
            for (position, t) in r.targets.iter().enumerate() {
                let provider =
                    by_name
                        .get(&t.provider)
                        .ok_or_else(|| CatalogLoadError::UnknownProvider {
                            model: r.model.clone(),
                            provider: t.provider.clone(),
                        })?;
                targets.push(Target {
                    provider: Arc::clone(provider),
                    upstream_model: t.upstream_model.clone(),
                    weight: t.weight,
                    priority: t.priority.unwrap_or(position_priority(position)),
                });
            }
            table.insert(r.model.clone(), targets);
        }
        Ok(Catalog { routes: table })
    }

    /// Builds the catalog from the database's providers and routes. A provider
    /// whose credential cannot be read, or whose reference `[egress]` refuses
    /// (a row written past the admin's checks, or a policy tightened since),
    /// is kept without a credential and logged: one bad secret does not take
    /// every route down, and a refused reference is never read, so its value
    /// can reach neither the provider nor the log.
    pub fn from_db(
        catalog: &obleth_config::db::catalog::Catalog,
        egress: &EgressSettings,
    ) -> Catalog {
        let mut by_name = HashMap::new();
        for p in &catalog.providers {
            // A refused reference is never read, now or when its file changes.
            let mut watched = true;
            let mut first_unavailable = false;
            let credential = match &p.credential_ref {
                Some(reference) => match read_credential(reference, egress) {
                    Ok(c) => Some(c),
                    Err(e) if e.is_refusal() => {
                        tracing::error!(provider = %p.name, error = %e, "Provider credential refused by the egress policy; the provider is used without one.");
                        watched = false;
                        first_unavailable = true;
                        None
                    }
                    Err(e) => {
                        tracing::error!(provider = %p.name, error = %e, "Provider credential unavailable.");
                        first_unavailable = true;
                        None
                    }
                },
                None => None,
            };
            let mut provider = ProviderRuntime::new(
                p.name.clone(),
                p.kind,
                p.base_url.clone(),
                credential,
                Duration::from_millis(u64::try_from(p.timeout_ms).unwrap_or(60_000)),
                MockSettings::default(),
                p.options.clone(),
            )
            .watching_opt(p.credential_ref.as_deref(), watched)
            .connecting(egress);
            // A pool credential that cannot be used is left out of the
            // turn, logged; the others serve.
            for (i, reference) in p.options.credential_pool.iter().enumerate() {
                match read_credential(reference, egress) {
                    Ok(c) => provider = provider.pooled(i + 1, reference, &c),
                    Err(e) => {
                        tracing::error!(provider = %p.name, credential = i + 1, error = %e, "Provider pool credential unavailable; the pool goes on without it.");
                    }
                }
            }
            if first_unavailable {
                provider = provider.without_first();
            }
            by_name.insert(p.name.clone(), Arc::new(provider));
        }
        let mut table = HashMap::new();
        for Route { model, targets, .. } in &catalog.routes {
            let resolved = targets
                .iter()
                .enumerate()
                .filter_map(|(position, t)| {
                    by_name.get(&t.provider).map(|p| Target {
                        provider: Arc::clone(p),
                        upstream_model: t.upstream_model.clone(),
                        weight: u32::try_from(t.weight).unwrap_or(0),
                        priority: t
                            .priority
                            .and_then(|p| u32::try_from(p).ok())
                            .unwrap_or(position_priority(position)),
                    })
                })
                .collect();
            table.insert(model.clone(), resolved);
        }
        Catalog { routes: table }
    }
}

/// The priority of a target without one: its position in the route, so a
/// route without priorities is tried in order, as before weights.
fn position_priority(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(u32::MAX)
}

/// Reads a credential from `env:VARIABLE` or `file:/path` once `egress`
/// allows the reference (a file is judged where its links lead). The error
/// names the variable or file and the rule, never a value.
pub fn read_credential(
    reference: &str,
    egress: &EgressSettings,
) -> Result<SecretString, CredentialError> {
    CredentialRef::parse(reference)?.resolve(egress)
}

/// The catalog in use, swapped whole on reload.
#[derive(Debug, Default, Clone)]
pub struct SharedCatalog(Arc<RwLock<Arc<Catalog>>>);

impl SharedCatalog {
    pub fn new(catalog: Catalog) -> Self {
        SharedCatalog(Arc::new(RwLock::new(Arc::new(catalog))))
    }

    pub fn get(&self) -> Arc<Catalog> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set(&self, catalog: Catalog) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
    }
}

/// Reads every provider's `file:` credential and TLS files (CA bundle,
/// client certificate and key) again when they change (Kubernetes rotates
/// a mounted secret in place), every `every`, until `stop`: the new ones
/// are used from the next request, without a reload. A change that cannot
/// be used keeps the previous credential or TLS files.
pub async fn watch_credentials(
    catalog: SharedCatalog,
    egress: EgressSettings,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let current = catalog.get();
        let egress = egress.clone();
        // File system calls: off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(move || {
            for provider in current.providers() {
                if provider.refresh_credential(&egress) == Refresh::Reloaded {
                    tracing::info!(provider = %provider.name, "Provider credential file changed; the new credential is in use.");
                }
                if provider.connection.refresh(&egress) == Refresh::Reloaded {
                    tracing::info!(provider = %provider.name, "Provider TLS files changed; new connections use them.");
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::TargetConfig;

    /// A catalog with provider `p` (`credential_ref` file `a`, pool files
    /// `b` and `c`) on route `m`, and the directory holding the files.
    fn pooled() -> (Arc<ProviderRuntime>, EgressSettings, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(name), format!("sk-{name}")).unwrap();
        }
        let file = |name: &str| format!("file:{}/{name}", dir.path().display());
        let provider: ProviderConfig = toml::from_str(&format!(
            "name = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             credential = {:?}\n[options]\ncredential_pool = [{:?}, {:?}]\n",
            file("a"),
            file("b"),
            file("c"),
        ))
        .unwrap();
        let route = RouteConfig {
            model: "m".to_owned(),
            targets: vec![TargetConfig {
                provider: "p".to_owned(),
                upstream_model: None,
                weight: 1,
                priority: None,
            }],
        };
        let egress = EgressSettings {
            credential_dirs: vec![dir.path().to_path_buf()],
            ..EgressSettings::default()
        };
        let catalog = Catalog::from_config(&[provider], &[route], &egress).unwrap();
        let provider = Arc::clone(&catalog.route("m").unwrap()[0].provider);
        (provider, egress, dir)
    }

    fn bearer(pick: &CredentialPick) -> String {
        match &pick.authorization {
            Authorization::Bearer(v) => v.to_str().unwrap().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pool_takes_turns_and_skips_benched_credentials_until_all_are() {
        let (p, _, _dir) = pooled();
        assert_eq!(p.credential_count(), 3);
        let turns: Vec<String> = (0..4).map(|_| bearer(&p.pick_credential())).collect();
        assert_eq!(
            turns,
            ["Bearer sk-a", "Bearer sk-b", "Bearer sk-c", "Bearer sk-a"]
        );
        assert!(p.bench_credential(1, 60_000), "newly benched");
        assert!(!p.bench_credential(1, 60_000), "benched already");
        let turns: Vec<usize> = (0..4).map(|_| p.pick_credential().slot).collect();
        assert_eq!(turns, [0, 2, 0, 2], "b sits out; a and c share evenly");
        assert!(p.another_credential_ready(1));
        p.bench_credential(0, 60_000);
        assert!(!p.another_credential_ready(2), "only c is left");
        p.bench_credential(2, 60_000);
        // Every one benched: the turn goes on rather than failing.
        assert_eq!(p.pick_credential().slot, 2);
        assert_eq!(
            p.credential_reference(2).map(|r| r.ends_with("/c")),
            Some(true)
        );
    }

    #[test]
    fn a_rotated_bedrock_file_that_is_not_aws_credentials_keeps_the_last_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aws");
        std::fs::write(
            &path,
            r#"{"access_key_id":"AKIDONE","secret_access_key":"s1"}"#,
        )
        .unwrap();
        let provider: ProviderConfig = toml::from_str(&format!(
            "name = \"b\"\nkind = \"bedrock\"\nbase_url = \"http://127.0.0.1:9\"\n\
             credential = \"file:{}\"\n[options]\nregion = \"us-east-1\"\n",
            path.display()
        ))
        .unwrap();
        let route = RouteConfig {
            model: "m".to_owned(),
            targets: vec![TargetConfig {
                provider: "b".to_owned(),
                upstream_model: None,
                weight: 1,
                priority: None,
            }],
        };
        let egress = EgressSettings {
            credential_dirs: vec![dir.path().to_path_buf()],
            ..EgressSettings::default()
        };
        let catalog = Catalog::from_config(&[provider], &[route], &egress).unwrap();
        let p = &catalog.route("m").unwrap()[0].provider;
        let key_id = |p: &ProviderRuntime| match p.authorization() {
            Authorization::Aws(keys) => keys.access_key_id.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(key_id(p), "AKIDONE");
        std::fs::write(&path, "[default]\naws_access_key_id = A\n").unwrap();
        assert_eq!(p.refresh_credential(&egress), Refresh::Failed);
        assert_eq!(key_id(p), "AKIDONE");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = AKIDTWO\naws_secret_access_key = s2\n",
        )
        .unwrap();
        assert_eq!(p.refresh_credential(&egress), Refresh::Reloaded);
        assert_eq!(key_id(p), "AKIDTWO");
        // The secret never shows in the provider's Debug.
        assert!(!format!("{p:?}").contains("s2"));
    }

    #[test]
    fn a_pool_credential_s_file_is_read_again_when_it_changes() {
        let (p, egress, dir) = pooled();
        assert_eq!(p.refresh_credential(&egress), Refresh::Unchanged);
        // A different length: the stamp changes even within the mtime's
        // resolution.
        std::fs::write(dir.path().join("c"), "sk-c-rotated").unwrap();
        assert_eq!(p.refresh_credential(&egress), Refresh::Reloaded);
        let turns: Vec<String> = (0..3).map(|_| bearer(&p.pick_credential())).collect();
        assert_eq!(turns[2], "Bearer sk-c-rotated");
        assert_eq!(turns[0], "Bearer sk-a", "the others are as they were");
    }

    #[test]
    fn an_unreadable_first_credential_leaves_the_pool_its_others_in_database_mode() {
        let (_, egress, dir) = pooled();
        let file = |name: &str| format!("file:{}/{name}", dir.path().display());
        let row = obleth_config::model::Provider {
            id: uuid::Uuid::nil(),
            name: "p".to_owned(),
            kind: ProviderKind::OpenAi,
            base_url: "http://127.0.0.1:9/v1".to_owned(),
            credential_ref: Some(file("missing")),
            timeout_ms: 5_000,
            options: ProviderOptions {
                credential_pool: vec![file("b"), file("missing-too"), file("c")],
                ..ProviderOptions::default()
            },
        };
        let catalog = Catalog::from_db(
            &obleth_config::db::catalog::Catalog {
                providers: vec![row],
                routes: vec![Route {
                    id: uuid::Uuid::nil(),
                    model: "m".to_owned(),
                    targets: vec![obleth_config::model::RouteTarget::new("p", None)],
                }],
            },
            &egress,
        );
        let p = &catalog.route("m").unwrap()[0].provider;
        // The missing ones are left out; the others keep their slots.
        assert_eq!(p.credential_count(), 2);
        let slots: Vec<usize> = (0..2).map(|_| p.pick_credential().slot).collect();
        assert_eq!(slots, [1, 3]);
        assert_eq!(bearer(&p.pick_credential()), "Bearer sk-b");
    }
}
