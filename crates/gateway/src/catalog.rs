//! Providers and routes as the proxy uses them: model name to an ordered list of
//! providers, with credentials read from where each provider's config points,
//! when `[egress]` allows it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::HeaderValue;
use obleth_config::egress::{CredentialError, CredentialRef};
use obleth_config::model::{AzureAuth, ProviderKind, ProviderOptions, Route};
use obleth_config::EgressSettings;
use secrecy::{ExposeSecret, SecretString};

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
    /// The credential header sent upstream, made from the credential when
    /// it is read (marked sensitive: never printed by `Debug`), and again
    /// when its file changes ([`ProviderRuntime::refresh_credential`]).
    authorization: RwLock<Authorization>,
    /// A `file:` credential's reference and what its file looked like when
    /// it was last read.
    credential_file: Option<CredentialFile>,
    /// Consecutive failures and ejection ([`crate::retry`]); a catalog
    /// reload starts it afresh.
    pub health: crate::retry::TargetHealth,
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
    /// The credential has characters a header cannot carry: every call fails.
    Invalid,
}

/// A credential file and the stamp it had when it was read.
#[derive(Debug)]
struct CredentialFile {
    reference: String,
    path: std::path::PathBuf,
    stamp: std::sync::Mutex<Option<FileStamp>>,
}

/// What a file looks like from outside: enough to see it was replaced
/// (Kubernetes swaps a mounted secret's files through a symbolic link).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
}

fn stamp_of(path: &std::path::Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
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
        let authorization = Self::header(kind, &options, credential.as_ref());
        ProviderRuntime {
            name_header: HeaderValue::from_str(&name).ok(),
            name,
            kind,
            base_url,
            timeout,
            mock,
            options,
            authorization: RwLock::new(authorization),
            credential_file: None,
            health: crate::retry::TargetHealth::default(),
        }
    }

    /// Watches `reference`'s file, when it is a `file:` reference: a later
    /// [`ProviderRuntime::refresh_credential`] reads it again once it changes.
    fn watching_opt(mut self, reference: Option<&str>) -> Self {
        let Some(reference) = reference else {
            return self;
        };
        if let Ok(CredentialRef::File(path)) = CredentialRef::parse(reference) {
            let stamp = stamp_of(&path);
            self.credential_file = Some(CredentialFile {
                reference: reference.to_owned(),
                path,
                stamp: std::sync::Mutex::new(stamp),
            });
        }
        self
    }

    /// The header the credential is sent as, now.
    pub fn authorization(&self) -> Authorization {
        self.authorization
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads a `file:` credential again when its file changed since it was
    /// last read (a rotated Kubernetes secret), within `egress`; a file
    /// that cannot be read or is refused keeps the credential in use.
    pub fn refresh_credential(&self, egress: &EgressSettings) -> Refresh {
        let Some(file) = &self.credential_file else {
            return Refresh::Unchanged;
        };
        let now = stamp_of(&file.path);
        let mut seen = file.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return Refresh::Unchanged;
        }
        *seen = now;
        match read_credential(&file.reference, egress) {
            Ok(credential) => {
                let header = Self::header(self.kind, &self.options, Some(&credential));
                *self
                    .authorization
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = header;
                Refresh::Reloaded
            }
            Err(e) => {
                tracing::error!(provider = %self.name, error = %e, "Provider credential file changed but cannot be used; the previous credential stays.");
                Refresh::Failed
            }
        }
    }

    fn header(
        kind: ProviderKind,
        options: &ProviderOptions,
        credential: Option<&SecretString>,
    ) -> Authorization {
        match credential {
            None => Authorization::None,
            Some(c) => {
                let (value, wrap): (String, fn(HeaderValue) -> Authorization) = match kind {
                    ProviderKind::Anthropic => {
                        (c.expose_secret().to_owned(), Authorization::ApiKey)
                    }
                    ProviderKind::Azure if options.azure_auth() == AzureAuth::ApiKey => {
                        (c.expose_secret().to_owned(), Authorization::AzureKey)
                    }
                    ProviderKind::OpenAi | ProviderKind::Mock | ProviderKind::Azure => (
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
            by_name.insert(
                p.name.clone(),
                Arc::new(
                    ProviderRuntime::new(
                        p.name.clone(),
                        p.kind,
                        p.base_url.clone().unwrap_or_default(),
                        credential,
                        Duration::from_millis(p.timeout_ms),
                        p.mock.clone(),
                        p.options.clone(),
                    )
                    .watching_opt(p.credential.as_deref()),
                ),
            );
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
            let mut watched = p.credential_ref.as_deref();
            let credential = match &p.credential_ref {
                Some(reference) => match read_credential(reference, egress) {
                    Ok(c) => Some(c),
                    Err(e) if e.is_refusal() => {
                        tracing::error!(provider = %p.name, error = %e, "Provider credential refused by the egress policy; the provider is used without one.");
                        watched = None;
                        None
                    }
                    Err(e) => {
                        tracing::error!(provider = %p.name, error = %e, "Provider credential unavailable.");
                        None
                    }
                },
                None => None,
            };
            by_name.insert(
                p.name.clone(),
                Arc::new(
                    ProviderRuntime::new(
                        p.name.clone(),
                        p.kind,
                        p.base_url.clone(),
                        credential,
                        Duration::from_millis(u64::try_from(p.timeout_ms).unwrap_or(60_000)),
                        MockSettings::default(),
                        p.options.clone(),
                    )
                    .watching_opt(watched),
                ),
            );
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

/// Reads every provider's `file:` credential again when its file changes
/// (Kubernetes rotates a mounted secret in place), every `every`, until
/// `stop`: the new credential is used from the next request, without a
/// reload. A change that cannot be read keeps the previous credential.
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
            }
        })
        .await;
    }
}
