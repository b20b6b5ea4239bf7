//! obleth-gateway: the data plane. An OpenAI-compatible proxy with a warmed key
//! cache, live revocation, per-key policy, routing with fallback, usage records,
//! ops endpoints and a graceful drain. See ARCHITECTURE.md for the map.

pub mod answer;
pub mod app;
pub mod auth;
pub mod aws;
pub mod catalog;
pub mod connection;
pub mod embedded;
pub mod error;
pub mod estimate;
pub mod feed;
pub mod fold;
pub mod google_auth;
pub mod health;
pub mod history;
pub mod keycache;
pub mod ledger;
pub mod memcheck;
pub mod metrics;
pub mod misses;
pub mod mock;
pub mod ops;
pub mod otel;
pub mod peek;
pub mod policy;
pub mod pooler;
pub mod pricing;
pub mod protocol;
pub mod proxy;
pub mod quota;
pub mod reframe;
pub mod relay;
pub mod request_id;
pub mod resolve;
pub mod retry;
pub mod settings;
pub mod sse;
pub mod state;
pub mod timeouts;
pub mod trace;
pub mod translate;
pub mod upstream;
pub mod usage;
pub mod warmup;

pub use app::{proxy_router, Gateway, RunError, StartError};
pub use settings::GatewaySettings;
