//! Earlier releases' binaries, built from pinned git revisions, for the
//! upgrade scenarios (N-1 → N → N-1, the online conversion, and the
//! N-2 → N-1 → N matrix). Each revision's source is unpacked once per
//! machine; all of them build into one cached target directory, so the
//! dependencies they share compile once, and each release's binaries are
//! copied out to a directory of their own.
//!
//! `scripts/test` starts the same builds (same source directory, target
//! directory and environment) in the background while the workspace's tests
//! build, reading the revisions from this file; a build here then waits on
//! cargo's lock and finds its work done. Keep the two in step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context};

/// A published release: its version and the revision it was cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub version: &'static str,
    pub revision: &'static str,
}

/// 0.1.0: before fleet governance and the usage ledger (schema
/// `20261122000003`); writes `usage_events`.
pub const V0_1_0: Release = Release {
    version: "0.1.0",
    revision: "395f34c",
};

/// 0.2.0: fleet governance, the usage ledger and the upgrade tools (schema
/// `20261128000007`, contract `20261128000005` pending until its `finish`).
pub const V0_2_0: Release = Release {
    version: "0.2.0",
    revision: "3f8e543",
};

/// The release before this one (N-1).
pub const PREVIOUS: Release = V0_2_0;
/// The release before that (N-2).
pub const BEFORE_PREVIOUS: Release = V0_1_0;

/// A variable of the test process's environment that a release's build
/// must not see: what cargo sets for the tests it runs (every `CARGO_*` but
/// the cargo home, and `OUT_DIR`), as `scripts/test` clears them too; the
/// build sets `CARGO_INCREMENTAL=0` itself.
fn inherited_by_tests(name: &str) -> bool {
    (name.starts_with("CARGO_") && name != "CARGO_HOME") || name == "OUT_DIR"
}

/// The binaries built of every release.
const BINARIES: [&str; 2] = ["obleth-gateway", "obleth-migrator"];

/// One build at a time in this process: the scenarios ask concurrently.
static BUILD: Mutex<()> = Mutex::new(());

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("obleth-e2e")
}

impl Release {
    /// The release's gateway.
    pub fn gateway(&self) -> anyhow::Result<PathBuf> {
        self.binary("obleth-gateway")
    }

    /// The release's migrator.
    pub fn migrator(&self) -> anyhow::Result<PathBuf> {
        self.binary("obleth-migrator")
    }

    /// Builds (once per machine) and answers one of the release's binaries.
    /// Both binaries build in one cargo run, as `scripts/test` builds them.
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        let out = cache_dir()
            .join(format!("{}-{}", self.version, self.revision))
            .join(name);
        if out.exists() {
            return Ok(out);
        }
        let src = self.source()?;
        let target = cache_dir().join("target");
        crate::evidence(&format!(
            "building {name} of release {} ({}) in {}; once per machine",
            self.version,
            self.revision,
            target.display()
        ));
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
        // The variables cargo sets for a test process (`CARGO_PKG_NAME`,
        // `CARGO_MANIFEST_DIR`...) go: build scripts that declare them
        // (`rerun-if-env-changed`) would otherwise see them change and
        // rebuild what `scripts/test` built without them.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if inherited_by_tests(&name) {
                cargo.env_remove(name.as_ref());
            }
        }
        let status = cargo
            .current_dir(&src)
            .args(["build", "--locked"])
            .args(BINARIES.iter().flat_map(|bin| ["--bin", bin]))
            .env("CARGO_TARGET_DIR", &target)
            .env("OBLETH_GIT_COMMIT", self.revision)
            // Built once per machine: incremental state would only take
            // disk (about half of a debug target).
            .env("CARGO_INCREMENTAL", "0")
            .env_remove("RUSTFLAGS")
            .status()
            .context("cannot run cargo")?;
        let built = target.join("debug").join(name);
        if !status.success() || !built.exists() {
            bail!(
                "building {name} of release {} ({}) failed",
                self.version,
                self.revision
            );
        }
        // Copied out: the next release's build replaces target/debug/<name>.
        // Both binaries, while this build is the newest in the target.
        for bin in BINARIES {
            let out = out.with_file_name(bin);
            std::fs::create_dir_all(out.parent().expect("a file in a directory"))?;
            let partial = out.with_extension(format!("partial-{}", std::process::id()));
            std::fs::copy(target.join("debug").join(bin), &partial)?;
            std::fs::rename(&partial, &out)?;
        }
        Ok(out)
    }

    /// The revision's source tree, unpacked once.
    fn source(&self) -> anyhow::Result<PathBuf> {
        let src = cache_dir().join(format!("src-{}", self.revision));
        if src.join("Cargo.toml").exists() {
            return Ok(src);
        }
        let archive = Command::new("git")
            .arg("-C")
            .arg(repo_root())
            .args(["archive", "--format=tar", self.revision])
            .output()
            .context("cannot run git")?;
        if !archive.status.success() {
            bail!(
                "revision {} (release {}) is not in this clone ({}); the upgrade scenarios need the repository's history (not a shallow clone)",
                self.revision,
                self.version,
                String::from_utf8_lossy(&archive.stderr).trim()
            );
        }
        // Unpacked beside and renamed, so an interrupted unpack is never taken
        // for a whole tree; named by process, as `scripts/test` may be
        // unpacking the same revision.
        let partial = cache_dir().join(format!(
            "src-{}.partial-{}",
            self.revision,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)?;
        let tar = partial.join("src.tar");
        std::fs::write(&tar, archive.stdout)?;
        let status = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&partial)
            .status()?;
        if !status.success() {
            bail!("cannot unpack revision {}", self.revision);
        }
        std::fs::remove_file(&tar)?;
        if let Err(e) = std::fs::rename(&partial, &src) {
            // Another unpack of the same revision finished first.
            let _ = std::fs::remove_dir_all(&partial);
            if !src.join("Cargo.toml").exists() {
                return Err(e).context(format!("cannot unpack revision {}", self.revision));
            }
        }
        Ok(src)
    }
}
