//! obleth-admin: the management API. Keys, providers, routes, usage, the fleet
//! and maintenance mode over PostgreSQL, with safe startup migrations and an
//! OpenAPI document generated from the handlers. See ARCHITECTURE.md.

pub mod api;
pub mod app;
pub mod auth;
pub mod console;
pub mod dropped;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod prune;
pub mod rollout;
pub mod router;
pub mod settings;
pub mod startup;
pub mod state;
pub mod throttle;
pub mod tokens;

pub use app::{Admin, RunError, StartError};
pub use router::{router, routes, Access, RouteSpec};
pub use settings::AdminSettings;
