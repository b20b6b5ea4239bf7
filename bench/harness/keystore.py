"""The key store's scale curve: database-mode gateways started over 100k, 1M
and 10M keys, for one or more builds side by side (the base release and this
one). For each: the warm-up metric, seconds from spawn to /readyz, resident
memory once ready and its peak (VmHWM), and bytes a key over an empty gateway.

    bench/keystore --builds base=/work/bin/base,new=target/release --sizes 0,100000,1000000,10000000
"""

import argparse
import json
import os
import sys
import tempfile
import time

import obleth_db
import targets
from keys import metrics
from pg import Cluster
from procs import Group, cpu_secs, http_status, tree, vm_kib

# cache.max_keys of every run: at least the gateway's default, and never below
# the keys in the table (past it the store would be incomplete).
DEFAULT_MAX_KEYS = 2_000_000

# Keys are inserted in chunks, each one statement: 10M keys in one statement
# would hold a transaction (and its memory) for minutes.
CHUNK = 1_000_000


def insert_keys(cluster, db, have, n):
    """Keys number have+1 to n, the bench's bulk keys (an allowed-models list
    and a rate limit each, like a real key)."""
    first = have + 1
    while first <= n:
        last = min(n, first + CHUNK - 1)
        obleth_db.insert_bulk_keys(cluster, db, "k", first, last)
        first = last + 1


def pg_cpu(cluster):
    return sum(cpu_secs(p) for p in tree(cluster.pid()))


def measure(cluster, bins, name, work, log_dir, url, n, ready_secs):
    group = Group(log_dir)
    try:
        config, port, ops = targets.gateway_toml(work, name, db=True)
        with open(config, "a") as f:
            f.write(f"\n[cache]\nmax_keys = {max(n, DEFAULT_MAX_KEYS)}\n")
        pg_before = pg_cpu(cluster)
        proc = targets.start_gateway(group, bins, work, name, config, port, ops, url, ready_secs=ready_secs)
        gateway_cpu = proc.cpu_secs()
        postgres_cpu = pg_cpu(cluster) - pg_before
        rss_ready = proc.rss_kib()
        hwm = vm_kib(proc.pid, "VmHWM")
        m = metrics(ops)
        check = None
        if n:
            key = obleth_db.bulk_key("k", n // 2 + 1)
            status = http_status(port, "/v1/models", {"Authorization": f"Bearer {key}"})
            check = {"status": status, "db_lookups": metrics(ops).get("obleth_key_db_lookups_total", 0.0)}
        return {
            "keys": n,
            "warmup_secs": m.get("obleth_key_cache_warmup_seconds"),
            "warmup_keys": m.get("obleth_key_cache_warmup_keys"),
            "ready_secs": proc.ready_secs,
            "rss_ready_kib": rss_ready,
            "rss_peak_kib": hwm,
            "gateway_cpu_secs": gateway_cpu,
            "postgres_cpu_secs": postgres_cpu,
            "load": float(open("/proc/loadavg").read().split()[0]),
            "check": check,
        }
    finally:
        group.stop_all()


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def render(rows):
    lines = [
        "| build | keys | warm-up s | spawn to ready s | RSS ready MiB | peak RSS MiB | bytes a key "
        "| CPU s gateway / PostgreSQL | check |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    empty = {r["build"]: r["rss_ready_kib"] for r in rows if r["keys"] == 0}
    for r in rows:
        per_key = None
        if r["keys"] and r["build"] in empty:
            per_key = (r["rss_ready_kib"] - empty[r["build"]]) * 1024 / r["keys"]
        check = "-" if not r["check"] else f"{r['check']['status']}, {int(r['check']['db_lookups'])} db lookups"
        lines.append(
            f"| {r['build']} | {r['keys']:,} | {fmt(r['warmup_secs'], '.2f')} | {fmt(r['ready_secs'], '.2f')} "
            f"| {r['rss_ready_kib'] / 1024:.0f} | {r['rss_peak_kib'] / 1024:.0f} | {fmt(per_key, '.0f')} "
            f"| {r['gateway_cpu_secs']:.1f} / {r['postgres_cpu_secs']:.1f} | {check} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builds", default="new=target/release",
                    help="name=bin-dir pairs, comma-separated; the first one's obleth-migrator migrates")
    ap.add_argument("--sizes", default="0,100000,1000000,10000000")
    ap.add_argument("--max-keys-for", default="",
                    help="name=N pairs: only sizes up to N for that build (the base build at 10M "
                         "keys would take about 13 GiB)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds.split(",")]
    caps = dict((k, int(v)) for k, v in (p.split("=", 1) for p in args.max_keys_for.split(",") if p))
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = tempfile.mkdtemp(prefix="obleth-keystore-")
    log_dir = os.path.join(work, "logs")
    os.makedirs(log_dir)
    cluster = Cluster()
    rows = []
    try:
        cluster.start()
        db = "obleth_keys"
        url = cluster.create_database(db)
        obleth_db.migrate(builds[0][1], url)
        have = 0
        for n in sizes:
            if n > have:
                t = time.monotonic()
                insert_keys(cluster, db, have, n)
                cluster.psql(db, "VACUUM ANALYZE api_keys")
                print(f"keystore: {n:,} keys inserted in {time.monotonic() - t:.0f} s", flush=True)
                have = n
            for name, bins in builds:
                if n > caps.get(name, n):
                    continue
                row = measure(cluster, bins, f"{name}-{n}", work, log_dir, url, n, ready_secs=900)
                row["build"] = name
                rows.append(row)
                print(f"keystore: {json.dumps(row)}", flush=True)
    finally:
        cluster.stop()
    print(render(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
