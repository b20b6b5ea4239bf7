"""The facts a reader needs to weigh the figures: the machine, the date, the
commit measured and the versions of every tool in the run."""

import datetime
import hashlib
import os
import subprocess


def sh(argv, cwd=None):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=30)
        return (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_facts(bench_dir, bin_dir, oha_bin):
    repo = os.path.dirname(bench_dir)
    commit = sh(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo)
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    free = sh(["free", "-h"]).splitlines()
    mem = next((l for l in free if l.startswith("Mem:")), "").split()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "nproc": sh(["nproc"]),
        "memory": mem[1] if len(mem) > 1 else "unknown",
        "kernel": sh(["uname", "-r"]),
        "cpu": cpu_model(),
        "rustc": sh(["rustc", "--version"]),
        "nginx": sh(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": sh(["wrk", "-v"]).splitlines()[0] if sh(["wrk", "-v"]) else "unknown",
        "oha": sh([oha_bin, "--version"]),
        "node": sh(["node", "--version"]),
        "python": sh(["python3", "--version"]),
    }


def build_facts(gateway, migrator, note=""):
    """What tells one obleth build from another: the gateway's path, its
    `--version`, the start of its SHA-256 and its modification time."""
    digest = hashlib.sha256()
    try:
        with open(gateway, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        mtime = datetime.datetime.fromtimestamp(os.path.getmtime(gateway), datetime.timezone.utc)
        built = mtime.strftime("%Y-%m-%d %H:%M UTC")
    except OSError:
        built = "unknown"
    return {
        "gateway": gateway,
        "migrator": migrator,
        "version": sh([gateway, "--version"]),
        "sha256": digest.hexdigest()[:12],
        "built": built,
        "note": note,
    }
