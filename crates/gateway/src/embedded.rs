//! The embedded (database-less) mode: keys, providers, routes and prices from
//! the settings file, through the same cache, policy and proxy code; SIGHUP
//! reloads.

use std::path::{Path, PathBuf};

use chrono::Utc;
use obleth_config::model::ApiKey;
use obleth_config::{InvalidSetting, SettingsError};
use tracing::{error, info};

use crate::catalog::{Catalog, CatalogLoadError};
use crate::settings::{GatewaySettings, KeyConfig};
use crate::state::AppState;

/// Why the file's keys, providers and routes cannot be loaded. Messages name
/// the key's public id or the provider, never a hash or a credential.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("keys `{public_id}`: secret_sha256 is not hex")]
    KeyHash { public_id: String },
    #[error(transparent)]
    Catalog(#[from] CatalogLoadError),
    /// A `[[prices]]` entry (names the field, as `prices[1].model`).
    #[error(transparent)]
    Prices(#[from] InvalidSetting),
}

/// Why a SIGHUP reload left the previous configuration in force.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("database.url appeared in the file; restart to switch modes")]
    ModeSwitch,
    #[error(transparent)]
    Load(#[from] EmbeddedError),
}

/// The key record of a configured key. Its id is derived from its hash, so it
/// is stable across reloads.
pub fn key_from_config(k: &KeyConfig) -> Result<ApiKey, EmbeddedError> {
    let hash = decode_hex(&k.secret_sha256).ok_or_else(|| EmbeddedError::KeyHash {
        public_id: k.public_id.clone(),
    })?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash[..16]);
    let now = Utc::now();
    Ok(ApiKey {
        id: uuid::Builder::from_random_bytes(id).into_uuid(),
        public_id: k.public_id.clone(),
        secret_hash: hash,
        name: k.name.clone(),
        owner: k.owner.clone(),
        allowed_models: k.allowed_models.clone(),
        rpm_limit: k.rpm_limit,
        tpm_limit: k.tpm_limit,
        token_budget: k.token_budget,
        // Checked by `GatewaySettings::validate`, which every load runs.
        budget_usd_micros: k
            .budget_usd
            .and_then(|usd| obleth_config::money::usd_to_micros(usd).ok()),
        budget_period: k.budget_period,
        expires_at: k.expires_at,
        revoked_at: k.revoked.then_some(now),
        created_at: now,
        updated_at: now,
        previous_secret_hash: None,
        previous_expires_at: None,
        team_id: None,
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Loads keys and the catalog of `settings` into the state.
pub fn load(state: &AppState, settings: &GatewaySettings) -> Result<(), EmbeddedError> {
    let catalog = Catalog::from_config(&settings.providers, &settings.routes, &settings.egress)?;
    let prices = crate::pricing::table_from_settings(&settings.prices)?;
    let keys = settings
        .keys
        .iter()
        .map(key_from_config)
        .collect::<Result<Vec<_>, _>>()?;
    let count = keys.len();
    state.keys.replace_all(keys);
    state.catalog.set(catalog);
    state.prices.set(prices);
    info!(
        keys = count,
        routes = settings.routes.len(),
        prices = settings.prices.len(),
        "Embedded configuration loaded."
    );
    Ok(())
}

/// Reloads the file on SIGHUP; a bad file is logged and the previous
/// configuration stays in force.
pub async fn reload_on_sighup(
    state: AppState,
    file: Option<PathBuf>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        error!("Cannot listen for SIGHUP; reloads are disabled.");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = hup.recv() => if received.is_none() { return },
        }
        match reload(&state, file.as_deref()) {
            Ok(()) => info!("Configuration reloaded on SIGHUP."),
            Err(e) => error!(error = %e, "Reload failed; keeping the previous configuration."),
        }
    }
}

fn reload(state: &AppState, file: Option<&Path>) -> Result<(), ReloadError> {
    let settings = GatewaySettings::load(file)?;
    if settings.uses_database() {
        return Err(ReloadError::ModeSwitch);
    }
    Ok(load(state, &settings)?)
}
