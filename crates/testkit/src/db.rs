//! Database fixtures through `obleth-config`: the schema applied as
//! `obleth-migrator up` applies it, the next release's migrations in a
//! directory, and providers, routes and keys written through the same
//! functions the admin API uses (so each write has its change-log row).

use std::path::Path;
use std::str::FromStr as _;

use anyhow::Context as _;
use obleth_config::db::catalog::{create_provider, create_route, NewProvider};
use obleth_config::db::keys::{create_key, NewKey};
use obleth_config::migrate::{MigrationSet, Mode, Runner, RunnerOptions};
use obleth_config::model::{ApiKey, ProviderKind, RouteTarget};
use secrecy::ExposeSecret as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tempfile::TempDir;

use crate::{fresh_database, TestDb};

/// Applies the embedded migrations to the database at `url` and answers a
/// pool on it.
pub async fn migrate(url: &str) -> anyhow::Result<PgPool> {
    migrate_from(MigrationSet::embedded()?, url).await
}

/// Applies `set` to the database at `url` through the one runner, as
/// `obleth-migrator up --source` does, and answers a pool on it.
pub async fn migrate_from(set: MigrationSet, url: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    Runner::new(set, RunnerOptions::default())
        .run(&options, Mode::Up)
        .await?;
    Ok(PgPool::connect(url).await?)
}

/// A fresh database with the embedded schema applied, and a pool on it.
pub async fn migrated() -> anyhow::Result<(TestDb, PgPool)> {
    let db = fresh_database().await?;
    let pool = migrate(&db.url).await?;
    Ok((db, pool))
}

/// The shipped migrations plus `extra` ones, in a directory as the next
/// release would ship them. Each extra is `(file name, SQL, manifest entry)`;
/// the entry is appended to `manifest.toml` as written.
pub fn migrations_with(extra: &[(&str, &str, &str)]) -> anyhow::Result<TempDir> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/migrations");
    let dir = tempfile::tempdir()?;
    for entry in std::fs::read_dir(&shipped).with_context(|| format!("{}", shipped.display()))? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.path().join(name))?;
        }
    }
    let manifest = dir.path().join("manifest.toml");
    let mut text = std::fs::read_to_string(&manifest)?;
    for (name, sql, entry) in extra {
        std::fs::write(dir.path().join(name), sql)?;
        text.push_str(entry);
    }
    std::fs::write(&manifest, text)?;
    Ok(dir)
}

/// A provider row named `name` of `kind` at `base_url`: no credential, a 5 s
/// timeout. Change fields with struct update syntax.
pub fn provider(name: &str, kind: ProviderKind, base_url: &str) -> NewProvider {
    NewProvider {
        name: name.to_owned(),
        kind,
        base_url: base_url.to_owned(),
        credential_ref: None,
        timeout_ms: 5_000,
        options: Default::default(),
    }
}

/// Creates `provider` and route `model` whose one target it is.
pub async fn provider_and_route(
    pool: &PgPool,
    provider: &NewProvider,
    model: &str,
) -> anyhow::Result<()> {
    create_provider(pool, provider).await?;
    create_route(
        pool,
        model,
        &[RouteTarget::new(provider.name.clone(), None)],
    )
    .await?;
    Ok(())
}

/// Creates a key named `test`, changed by `edit` first; answers the row and
/// the whole key, which exists nowhere else.
pub async fn key(
    pool: &PgPool,
    edit: impl FnOnce(&mut NewKey),
) -> anyhow::Result<(ApiKey, String)> {
    let mut new = NewKey {
        name: "test".to_owned(),
        ..NewKey::default()
    };
    edit(&mut new);
    let (key, generated) = create_key(pool, &new).await?;
    Ok((key, generated.secret.expose_secret().to_owned()))
}
