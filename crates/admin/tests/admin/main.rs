//! Admin API tests over real HTTP on loopback against a real, throwaway
//! PostgreSQL; gateways run in-process where a test needs the data plane.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod catalog;
mod console;
mod console_browser;
mod docs;
mod egress;
mod fleet;
mod keys;
mod limits;
mod maintenance;
mod openapi;
mod prices;
mod process;
mod prune;
mod rollout;
mod startup;
mod support;
mod teams;
mod usage;
mod validation;
mod webdriver;
