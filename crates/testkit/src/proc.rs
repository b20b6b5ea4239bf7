//! Processes for tests: the workspace's built binaries found next to the test
//! binary, free loopback ports, commands whose child is killed when dropped,
//! and signals.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _};

/// The path of a workspace binary such as `obleth-gateway`: a test binary
/// runs from `target/<profile>/deps`, the binaries sit one level up. A test
/// of the crate that builds it should prefer `env!("CARGO_BIN_EXE_<name>")`,
/// which also makes cargo build it.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A loopback port that was free a moment ago (bound and released), for a
/// process that must be told its port before it starts. In-process servers
/// bind `127.0.0.1:0` instead.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// A command for `program` with no stdin, whose child is killed if the test
/// drops it (a failing assertion never leaves a process behind).
pub fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// A signal [`signal`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: drain and stop.
    Term,
    /// SIGKILL: die at once.
    Kill,
    /// SIGHUP: reload the settings file.
    Hup,
}

/// Sends `sig` to `child` (through `kill(1)`, as an operator or an
/// orchestrator would); an error if it has already been reaped.
pub fn signal(child: &tokio::process::Child, sig: Signal) -> anyhow::Result<()> {
    let pid = child.id().context("the process has already exited")?;
    let flag = match sig {
        Signal::Term => "-TERM",
        Signal::Kill => "-KILL",
        Signal::Hup => "-HUP",
    };
    let status = std::process::Command::new("kill")
        .args([flag, &pid.to_string()])
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill {flag} {pid} failed");
    }
    Ok(())
}
