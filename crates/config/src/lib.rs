//! obleth-config: settings, shared types, Postgres access and the embedded,
//! phased migrations with their runner and compatibility check.

pub mod apikey;
pub mod db;
pub mod egress;
pub mod glob;
pub mod migrate;
pub mod model;
pub mod money;
pub mod ops;
pub mod pricing;
pub mod process;
pub mod settings;
pub mod telemetry;
pub mod text;
pub mod version;

pub use egress::EgressSettings;
pub use settings::{
    load, DatabaseSettings, DatabaseUrl, InvalidSetting, LogSettings, MigrationSettings,
    SettingsError,
};
