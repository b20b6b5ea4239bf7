//! A fleet for a scenario: a migrated database, the mock upstream, a route and a
//! key, three gateway processes and HAProxy in front of them. [`Prepared`] is
//! the first half, for a scenario that writes its own rows (keys, teams,
//! prices) before any gateway starts, so that every gateway warms up with them.

use std::path::PathBuf;
use std::time::Duration;

use obleth_config::migrate::MigrationSet;
use obleth_testkit::proc::bin;
use obleth_testkit::{db, MockConfig, MockUpstream};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tempfile::TempDir;
use uuid::Uuid;

use crate::haproxy::Haproxy;
use crate::load::LoadSpec;
use crate::procs::GatewayProc;

/// Everything a scenario runs against.
#[derive(Debug)]
pub struct Fleet {
    pub dir: TempDir,
    pub pool: PgPool,
    pub upstream: MockUpstream,
    pub gateways: Vec<GatewayProc>,
    pub haproxy: Haproxy,
    pub key: String,
}

/// Settings of a fleet.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub gateways: usize,
    pub gateway_binary: PathBuf,
    pub drain_delay_secs: u64,
    /// Streams take `stream_tokens` x `token_delay`.
    pub token_delay: Duration,
    /// Completion tokens of every answer of the mock, streamed or not.
    pub stream_tokens: u32,
    /// Appended to every gateway's settings file (whole sections).
    pub extra_settings: String,
    /// The gateways' `database.url` when it is not the fleet's database URL
    /// (a pooler in front of it), which then becomes their `database.direct_url`.
    pub pooled_url: Option<String>,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            gateways: 3,
            gateway_binary: bin("obleth-gateway"),
            drain_delay_secs: 1,
            token_delay: Duration::from_millis(50),
            stream_tokens: 40,
            extra_settings: String::new(),
            pooled_url: None,
        }
    }
}

/// The database and the upstream of a fleet whose gateways have not started.
#[derive(Debug)]
pub struct Prepared {
    pub dir: TempDir,
    pub pool: PgPool,
    pub upstream: MockUpstream,
    /// The whole key of the key named `load`.
    pub key: String,
    database_url: String,
}

impl Prepared {
    /// Migrates the database, starts the mock upstream, and writes provider
    /// `mock`, route `m` and key `load`.
    pub async fn new(database_url: &str, spec: &FleetSpec) -> anyhow::Result<Prepared> {
        Self::with_migrations(database_url, spec, MigrationSet::embedded()?).await
    }

    /// [`Prepared::new`] with the database migrated by `set` only (a schema
    /// an older release left, say). The catalog and key are written as on
    /// the first release's schema, whose columns every later one keeps, so
    /// this release's writes (which name its newer columns) never meet a
    /// schema without them.
    pub async fn with_migrations(
        database_url: &str,
        spec: &FleetSpec,
        set: MigrationSet,
    ) -> anyhow::Result<Prepared> {
        db::migrate_from(set, database_url).await?.close().await;
        Self::on_first_release_schema(database_url, spec).await
    }

    /// [`Prepared::new`] on a database that the first release's migrator
    /// migrated: the provider, route and key are written with the columns
    /// that release's schema has, which every later schema keeps.
    pub async fn on_first_release_schema(
        database_url: &str,
        spec: &FleetSpec,
    ) -> anyhow::Result<Prepared> {
        let pool = PgPool::connect(database_url).await?;
        let upstream = mock_upstream(spec).await?;
        let (provider, route) = (Uuid::new_v4(), Uuid::new_v4());
        let generated = obleth_config::apikey::generate();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO providers (id, name, kind, base_url, timeout_ms) \
             VALUES ($1, 'mock', 'openai', $2, 10000)",
        )
        .bind(provider)
        .bind(upstream.base_url())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO routes (id, model) VALUES ($1, 'm')")
            .bind(route)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO route_targets (route_id, position, provider_id) VALUES ($1, 0, $2)",
        )
        .bind(route)
        .bind(provider)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO api_keys (id, public_id, secret_hash, name) VALUES ($1, $2, $3, 'load')",
        )
        .bind(Uuid::new_v4())
        .bind(&generated.public_id)
        .bind(generated.secret_hash.as_slice())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Prepared {
            dir: tempfile::tempdir()?,
            pool,
            upstream,
            key: generated.secret.expose_secret().to_owned(),
            database_url: database_url.to_owned(),
        })
    }

    /// Starts the gateways, waits until each is ready, and puts HAProxy in front.
    pub async fn launch(self, spec: &FleetSpec) -> anyhow::Result<Fleet> {
        let Prepared {
            dir,
            pool,
            upstream,
            key,
            database_url,
        } = self;
        let mut gateways = Vec::new();
        for i in 0..spec.gateways {
            let mut g = GatewayProc::with_settings(
                dir.path(),
                &format!("gw{}", i + 1),
                spec.gateway_binary.clone(),
                spec.pooled_url.as_deref().unwrap_or(&database_url),
                spec.drain_delay_secs,
                &spec.extra_settings,
            )?;
            if spec.pooled_url.is_some() {
                g.direct_url = Some(database_url.clone());
            }
            g.start()?;
            gateways.push(g);
        }
        for g in &gateways {
            g.wait_ready(Duration::from_secs(60)).await?;
        }
        let haproxy = Haproxy::start(dir.path(), &gateways).await?;
        Ok(Fleet {
            dir,
            pool,
            upstream,
            gateways,
            haproxy,
            key,
        })
    }
}

/// The mock upstream with the fleet's answer shape.
async fn mock_upstream(spec: &FleetSpec) -> anyhow::Result<MockUpstream> {
    MockUpstream::start(MockConfig {
        token_delay: spec.token_delay,
        completion_tokens: spec.stream_tokens,
        ..MockConfig::default()
    })
    .await
}

impl Fleet {
    pub async fn start(database_url: &str, spec: &FleetSpec) -> anyhow::Result<Fleet> {
        Prepared::new(database_url, spec).await?.launch(spec).await
    }

    pub fn load_spec(&self, rate: u32, stream_every: u32) -> LoadSpec {
        LoadSpec {
            base_url: self.haproxy.url(""),
            key: self.key.clone(),
            model: "m".to_owned(),
            rate,
            stream_every,
        }
    }

    /// Replaces gateway `i` with `binary` (or the same one): SIGTERM, clean
    /// exit, start, ready, and a pause for HAProxy to see it up again.
    pub async fn roll(&mut self, i: usize, binary: Option<PathBuf>) -> anyhow::Result<()> {
        self.gateways[i].stop().await?;
        self.restart(i, binary).await
    }

    /// The second half of [`Fleet::roll`]: starts stopped gateway `i` again
    /// with `binary` (or the same one), waits until it is ready and HAProxy
    /// sees it up.
    pub async fn restart(&mut self, i: usize, binary: Option<PathBuf>) -> anyhow::Result<()> {
        let g = &mut self.gateways[i];
        if let Some(b) = binary {
            g.binary = b;
        }
        g.start()?;
        g.wait_ready(Duration::from_secs(60)).await?;
        // HAProxy marks a server up after two passing checks (100 ms apart).
        tokio::time::sleep(Duration::from_millis(800)).await;
        Ok(())
    }

    /// Stops every gateway cleanly (flushing usage) and HAProxy.
    pub async fn stop(mut self) -> anyhow::Result<Stopped> {
        for g in &mut self.gateways {
            g.stop().await?;
        }
        self.haproxy.stop().await;
        Ok(Stopped {
            pool: self.pool,
            _dir: self.dir,
        })
    }
}

/// What remains after a fleet stopped: its database.
#[derive(Debug)]
pub struct Stopped {
    pub pool: PgPool,
    _dir: TempDir,
}

impl Stopped {
    /// Usage rows with status 200.
    pub async fn successful_usage_rows(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM usage_ledger WHERE status = 200")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
