//! Gateway tests over real HTTP on loopback: embedded mode, PostgreSQL mode
//! (real, throwaway database) and the binary as a process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anthropic;
mod azure;
mod bedrock;
mod connections;
mod database;
mod egress;
mod embedded;
mod feed;
mod gemini;
mod hardening;
mod keystore;
mod limits;
mod metrics;
mod netsupport;
mod process;
mod props;
mod quota;
mod responses;
mod retry;
mod routing;
mod streams;
mod support;
mod trace;
mod usage;
mod vertex;
