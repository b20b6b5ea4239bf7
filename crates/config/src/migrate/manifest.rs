//! The migration manifest (`migrations/manifest.toml`): the phase of every migration file.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::phase::Phase;
use super::SetError;

/// The parsed manifest, by version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub entries: BTreeMap<i64, ManifestEntry>,
}

/// What the manifest says about one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub version: i64,
    pub phase: Phase,
    /// For `contract` migrations: the oldest release that must run on every live
    /// node before `finish` may apply it.
    pub requires_release: Option<semver::Version>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    migration: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    version: i64,
    phase: Phase,
    requires_release: Option<String>,
}

impl Manifest {
    /// Parses manifest text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, SetError> {
        let bad = |message: String| SetError::Manifest {
            file: file.to_owned(),
            message,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut entries = BTreeMap::new();
        for entry in raw.migration {
            let requires_release = match (entry.phase, entry.requires_release) {
                (Phase::Contract, None) => {
                    return Err(bad(format!(
                        "migration {} is `contract` and needs `requires_release`, the oldest release that must run everywhere before it",
                        entry.version
                    )))
                }
                (Phase::Expand, Some(_)) => {
                    return Err(bad(format!(
                        "migration {} is `expand`; `requires_release` is only for `contract` migrations",
                        entry.version
                    )))
                }
                (_, Some(v)) => Some(semver::Version::parse(&v).map_err(|e| {
                    bad(format!(
                        "migration {}: requires_release `{v}` is not a semantic version: {e}",
                        entry.version
                    ))
                })?),
                (_, None) => None,
            };
            let version = entry.version;
            let previous = entries.insert(
                version,
                ManifestEntry {
                    version,
                    phase: entry.phase,
                    requires_release,
                },
            );
            if previous.is_some() {
                return Err(bad(format!("migration {version} is listed twice")));
            }
        }
        Ok(Manifest { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_phases() {
        let m = Manifest::parse(
            "[[migration]]\nversion = 1\nphase = \"expand\"\n\n[[migration]]\nversion = 2\nphase = \"contract\"\nrequires_release = \"0.2.0\"\n",
            "manifest.toml",
        )
        .unwrap();
        assert_eq!(m.entries[&1].phase, Phase::Expand);
        assert_eq!(m.entries[&2].phase, Phase::Contract);
        assert_eq!(
            m.entries[&2].requires_release,
            Some(semver::Version::new(0, 2, 0))
        );
    }

    #[test]
    fn rejects_bad_manifests_with_a_reason() {
        let cases = [
            ("[[migration]]\nversion = 1\nphase = \"contract\"\n", "needs `requires_release`"),
            ("[[migration]]\nversion = 1\nphase = \"expand\"\nrequires_release = \"1.0.0\"\n", "only for `contract`"),
            ("[[migration]]\nversion = 1\nphase = \"sideways\"\n", "sideways"),
            ("[[migration]]\nversion = 1\nphase = \"contract\"\nrequires_release = \"soon\"\n", "not a semantic version"),
            ("[[migration]]\nversion = 1\nphase = \"expand\"\n[[migration]]\nversion = 1\nphase = \"expand\"\n", "listed twice"),
            ("[[migration]]\nversion = 1\nphase = \"expand\"\nphaze = 1\n", "phaze"),
        ];
        for (text, needle) in cases {
            let err = Manifest::parse(text, "m.toml").unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should contain {needle}");
            assert!(err.contains("m.toml"), "{err} should name the file");
        }
    }
}
