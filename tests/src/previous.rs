//! The previous release's gateway, built from a pinned git revision in a cached
//! target directory of its own, for the N-1 / N upgrade scenario.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The release before the current one: the last revision without the fleet
/// governance migration (teams, prices, usage totals, quota counters), so
/// the current schema has an expand migration this gateway does not know,
/// and a trigger on the usage table it writes.
pub const PREVIOUS_REVISION: &str = "395f34c";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("obleth-e2e")
        .join(format!("gateway-{PREVIOUS_REVISION}"))
}

/// Builds (once per machine) and answers the previous gateway binary.
pub fn previous_gateway() -> anyhow::Result<PathBuf> {
    let cache = cache_dir();
    let binary = cache.join("target/debug/obleth-gateway");
    if binary.exists() {
        return Ok(binary);
    }
    let src = cache.join("src");
    if !src.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&src)?;
        let archive = Command::new("git")
            .arg("-C")
            .arg(repo_root())
            .args(["archive", "--format=tar", PREVIOUS_REVISION])
            .output()
            .context("cannot run git")?;
        if !archive.status.success() {
            bail!(
                "revision {PREVIOUS_REVISION} is not in this clone ({}); the N-1 scenario needs the repository's history (not a shallow clone)",
                String::from_utf8_lossy(&archive.stderr).trim()
            );
        }
        let tar = src.join("src.tar");
        std::fs::write(&tar, archive.stdout)?;
        let status = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .status()?;
        if !status.success() {
            bail!("cannot unpack revision {PREVIOUS_REVISION}");
        }
    }
    crate::evidence(&format!(
        "building the previous gateway ({PREVIOUS_REVISION}) in {}; once per machine",
        cache.display()
    ));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(&src)
        .args([
            "build",
            "--locked",
            "-p",
            "obleth-gateway",
            "--bin",
            "obleth-gateway",
        ])
        .env("CARGO_TARGET_DIR", cache.join("target"))
        .env("OBLETH_GIT_COMMIT", PREVIOUS_REVISION)
        .env_remove("RUSTFLAGS")
        .status()
        .context("cannot run cargo")?;
    if !status.success() || !binary.exists() {
        bail!("building the previous gateway failed");
    }
    Ok(binary)
}
