//! The phase of a migration: additive (`expand`) or destructive (`contract`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether a migration keeps the previous release working.
///
/// `expand` migrations are additive and run on `obleth-migrator up` and at admin
/// start; `contract` migrations are destructive and run only through
/// `obleth-migrator finish`, once no older node is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Expand,
    Contract,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Expand => "expand",
            Phase::Contract => "contract",
        }
    }

    /// Parses the phase as it is recorded in the database. Anything unknown is
    /// treated as `contract`, the safe reading for an older binary.
    pub fn from_recorded(s: Option<&str>) -> Phase {
        match s {
            Some("expand") => Phase::Expand,
            _ => Phase::Contract,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
