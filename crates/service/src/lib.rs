//! obleth-service: the service lifecycle the gateway and the admin share.
//! Hardened HTTP/1.1 listeners (`server`), the readiness facts (`health`),
//! the node heartbeat (`node`), the drain steps (`drain`), metric registration
//! (`metrics`) and the ops routes' shapes (`ops`). See ARCHITECTURE.md.

pub mod drain;
pub mod health;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod ratelog;
pub mod server;

pub use health::Health;
pub use server::{serve, ConnectionLimits, Listener, ServerEnded, ServerHandle};
