//! A detached shell that tears a cluster down once the test process is gone.
//!
//! Statics are never dropped when a test binary exits, and a killed process
//! runs no destructors at all, so a cluster cannot count on `Drop` alone. The
//! watchdog polls the test process with `kill -0`; when it has gone, it stops
//! the server with `pg_ctl stop -m immediate` and removes the cluster's dir.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

/// Positional parameters: `$1` the pid to watch, `$2` the cluster dir, `$3`
/// the data dir, then the argument vector that runs `pg_ctl`.
///
/// A zombie still answers `kill -0`, and a dead test process may stay one for
/// a while when its parent is gone and the init process is slow to reap, so
/// `alive` also reads the state from `/proc` where there is one.
const SCRIPT: &str = r#"
pid=$1; dir=$2; data=$3; shift 3
alive() {
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/status" ]; then
        ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
    fi
}
while alive; do sleep 0.5 || sleep 1; done
"$@" stop -D "$data" -m immediate -w -t 30
rm -rf "$dir"
"#;

/// Spawns the watchdog for the cluster in `dir` with data dir `data`;
/// `pg_ctl` is the argument vector that runs `pg_ctl` as the right user.
///
/// Its stdio is `/dev/null`, because a child holding the test harness's
/// stdout or stderr pipe would keep `cargo test` waiting for EOF after the
/// tests finished. It runs in a process group of its own, so the Ctrl-C that
/// stops a test run reaches the tests but not the watchdog.
pub(super) fn spawn(dir: &Path, data: &Path, pg_ctl: Vec<OsString>) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;

    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("obleth-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(data)
        .args(pg_ctl)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawning the PostgreSQL cleanup watchdog (sh)")
}
