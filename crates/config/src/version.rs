//! Build and version information shared by every obleth binary.

use serde::Serialize;

/// The release of this build (the workspace package version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this build came from, or `unknown` when built outside git.
pub const COMMIT: &str = env!("OBLETH_GIT_COMMIT");

/// Version facts as services report them in `/api/version` and the nodes table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
    pub major: u64,
}

/// The build info of the running binary.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: VERSION,
        commit: COMMIT,
        major: release().major,
    }
}

/// This build's release as a semantic version.
pub fn release() -> semver::Version {
    // CARGO_PKG_VERSION is validated as semver by cargo itself, so this cannot fail
    // for a build cargo accepted; the fallback keeps the function total anyway.
    semver::Version::parse(VERSION).unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_matches_the_package_version() {
        let info = build_info();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.major, release().major);
        assert!(!info.commit.is_empty());
    }
}
