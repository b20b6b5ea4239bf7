"""PostgreSQL mode's usage writer and its tail (issue 12): two obleth-gateway
builds (before and after a change to the usage insert) in PostgreSQL mode in
front of an nginx that answers every chat completion itself (`return 200`),
on a throwaway PostgreSQL with pg_stat_statements, and the after build in
embedded mode (no database, no usage stored) as the floor.

At each fixed rate (oha, 1k and 3k req/s by default) every variant runs on a
gateway started for that run alone, in turn, for `--rounds` rounds:

- `before` and `after`: PostgreSQL mode, defaults (a batch every 250 ms or
  500 records);
- `after, pg nice 19`: every PostgreSQL process at nice 19, so the database
  yields the cores to the gateway (what a separate database host would do);
- `after, flush 1 s`: `usage.flush_interval_ms = 1000`, fewer and larger
  batches;
- `embedded`: the after build with its key in the file and no database.

For each run it prints p50, p99 and p99.9; the CPU PostgreSQL (every process
of the server) and the gateway used over the run, per usage row and as a
share of the machine's cores; and, from pg_stat_statements (`track = top`,
reset before each run): the usage INSERTs a second, rows per INSERT, the
distinct INSERT statement texts, the INSERT's own execution time per row
(the usage_totals trigger included) and its mean and max per call, and the
WAL bytes per row."""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import load
import obleth_db
from upstream import start_nginx_200
from pg import Cluster
from procs import Group, cpu_secs, free_port, tree
from targets import RPM_LIMIT, Target, new_key, render, write

DB = "obleth_usagewriter"
CORES = os.cpu_count() or 1


def log(msg):
    print(f"bench/usagewriter: {msg}", file=sys.stderr, flush=True)


def pg_cpu(cluster):
    """User plus system CPU seconds of every PostgreSQL process now running."""
    return sum(cpu_secs(p) for p in tree(cluster.pid()))


def renice_pg(cluster, nice):
    """Sets every PostgreSQL process (and so every backend forked later) to `nice`."""
    for pid in tree(cluster.pid()):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        except OSError:
            pass


def usage_rows(cluster):
    return int(cluster.psql(DB, "SELECT count(*) FROM usage_ledger").strip())


def settle(cluster, limit_secs=10):
    """Waits until usage_ledger stops growing for a second (the writer has
    flushed), at most `limit_secs`; answers the row count."""
    deadline = time.monotonic() + limit_secs
    last, since = usage_rows(cluster), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = usage_rows(cluster)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            break
    return last


def insert_stats(cluster):
    """The usage INSERTs since the last reset: statement texts, calls, rows,
    execution and planning ms, WAL bytes, max ms of one call; and the calls
    of every statement."""
    out = cluster.psql(DB, (
        "SELECT count(*), COALESCE(sum(calls), 0), COALESCE(sum(rows), 0), "
        "COALESCE(sum(total_exec_time), 0), COALESCE(sum(total_plan_time), 0), "
        "COALESCE(sum(wal_bytes), 0), COALESCE(max(max_exec_time), 0), "
        "(SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements a JOIN pg_database b ON b.oid = a.dbid "
        f"  WHERE b.datname = '{DB}' AND a.query NOT ILIKE '%pg_stat_statements%') "
        "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        f"WHERE d.datname = '{DB}' AND s.query ILIKE 'INSERT INTO usage_ledger%'"
    )).strip().split("|")
    texts, calls, rows, exec_ms, plan_ms, wal, max_ms, all_calls = out
    return {
        "texts": int(texts), "calls": int(calls), "rows": int(rows), "exec_ms": float(exec_ms),
        "plan_ms": float(plan_ms), "wal_bytes": int(wal), "max_ms": float(max_ms),
        "all_calls": int(all_calls),
    }


def start_gateway(group, bins, work, name, text, env):
    port, ops = free_port(), free_port()
    config = write(os.path.join(work, f"{name}.toml"), text.replace("@PORT@", str(port)).replace("@OPS@", str(ops)))
    proc = group.start(name, [os.path.join(bins, "obleth-gateway"), "--config", config],
                       env={"RUST_LOG": "warn", **env})
    proc.wait_http(ops, "/readyz", 60)
    return proc, port


def measure(args, group, work, cluster, url, nginx_port, variant, rate, keys):
    """One run of `variant` at `rate`; answers its figures."""
    name = f"{variant['id']}-{rate}"
    if variant["db"]:
        text = render("gateway-db.toml", PORT="@PORT@", OPS="@OPS@", NAME=name) + "\n" + variant.get("extra", "")
        env, key = {"OBLETH_DATABASE__URL": url}, keys["db"]
    else:
        _, public_id, sha = keys["embedded"]
        text = render("gateway-embedded.toml", PORT="@PORT@", OPS="@OPS@", MOCK_PORT=nginx_port,
                      PUBLIC_ID=public_id, SECRET_SHA256=sha, RPM_LIMIT=RPM_LIMIT)
        env, key = {}, keys["embedded"][0]
    if variant.get("pg_nice"):
        renice_pg(cluster, 19)
    proc = None
    try:
        proc, port = start_gateway(group, variant["bins"], work, name, text, env)
        target = Target(name, variant["label"], port, {"Authorization": f"Bearer {key}"}, proc)
        load.oha(args.oha, target, min(args.rates), 2)  # warm-up: connections, caches
        rows0 = settle(cluster) if variant["db"] else 0
        cluster.psql(DB, "SELECT pg_stat_statements_reset()")
        pg0, gw0, t0 = pg_cpu(cluster), proc.cpu_secs(), time.monotonic()
        log(f"{variant['label']}: {rate} req/s for {args.duration} s")
        latency = load.oha(args.oha, target, rate, args.duration)
        secs = time.monotonic() - t0
        gw1 = proc.cpu_secs()
        rows1 = settle(cluster) if variant["db"] else 0
        pg1 = pg_cpu(cluster)
        stats = insert_stats(cluster) if variant["db"] else None
    finally:
        if proc:
            proc.stop()
        if variant.get("pg_nice"):
            renice_pg(cluster, 0)
    rows = rows1 - rows0
    return {
        "latency": latency, "secs": secs, "rows": rows, "pg_cpu": pg1 - pg0, "gw_cpu": gw1 - gw0,
        "inserts": stats,
    }


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def report(args, variants, results, pg_version):
    print(f"\n## PostgreSQL mode's usage writer: {', '.join(v['label'] for v in variants)}\n")
    print(f"oha -q RATE -z {args.duration}s -c 64 --latency-correction -w; nginx `return 200` upstream; "
          f"PostgreSQL {pg_version} (fsync off) and the load generator on the same {CORES} cores; "
          f"{args.rounds} round(s), one gateway at a time, variants in turn; medians over rounds.\n")
    print("| rate req/s | variant | 2xx/s | p50 ms | p99 ms | p99.9 ms | gateway CPU µs/req | "
          "PostgreSQL CPU µs/row | PostgreSQL share of the cores | gateway share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate in args.rates:
        for v in variants:
            rs = results[v["id"]][rate]
            ok = [r["latency"]["ok"] for r in rs]
            per_req = median([r["gw_cpu"] * 1e6 / max(1, r["latency"]["ok"]) for r in rs])
            per_row = median([r["pg_cpu"] * 1e6 / r["rows"] for r in rs if r["rows"] > 0]) if v["db"] else None
            pg_share = median([r["pg_cpu"] / (r["secs"] * CORES) * 100 for r in rs]) if v["db"] else None
            gw_share = median([r["gw_cpu"] / (r["secs"] * CORES) * 100 for r in rs])
            print(f"| {rate:,} | {v['label']} | {median(ok) / args.duration:,.0f} | "
                  f"{f(median([r['latency']['p50_ms'] for r in rs]))} | "
                  f"{f(median([r['latency']['p99_ms'] for r in rs]))} | "
                  f"{f(median([r['latency']['p999_ms'] for r in rs]))} | {f(per_req, '{:.0f}')} | "
                  f"{f(per_row, '{:.1f}')} | {f(pg_share, '{:.1f}%')} | {f(gw_share, '{:.1f}%')} |")
    print("\nThe usage INSERT, from pg_stat_statements (`track = top`; its time includes the "
          "usage_totals trigger it fires):\n")
    print("| rate req/s | variant | INSERTs/s | rows/INSERT | statement texts | exec+plan µs/row | "
          "mean ms/INSERT | max ms/INSERT | WAL bytes/row | all statements/s | rows stored/sent |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rate in args.rates:
        for v in variants:
            if not v["db"]:
                continue
            rs = results[v["id"]][rate]
            ins = [r["inserts"] for r in rs]
            print(f"| {rate:,} | {v['label']} | "
                  f"{f(median([i['calls'] / r['secs'] for i, r in zip(ins, rs)]), '{:.1f}')} | "
                  f"{f(median([i['rows'] / i['calls'] for i in ins if i['calls']]), '{:.0f}')} | "
                  f"{f(median([i['texts'] for i in ins]), '{:.0f}')} | "
                  f"{f(median([(i['exec_ms'] + i['plan_ms']) * 1000 / i['rows'] for i in ins if i['rows']]))} | "
                  f"{f(median([i['exec_ms'] / i['calls'] for i in ins if i['calls']]))} | "
                  f"{f(median([i['max_ms'] for i in ins]))} | "
                  f"{f(median([i['wal_bytes'] / i['rows'] for i in ins if i['rows']]), '{:.0f}')} | "
                  f"{f(median([i['all_calls'] / r['secs'] for i, r in zip(ins, rs)]), '{:.1f}')} | "
                  f"{sum(r['rows'] for r in rs):,}/{sum(r['latency']['ok'] for r in rs):,} |")


def main():
    p = argparse.ArgumentParser(prog="bench/usagewriter", description=__doc__)
    p.add_argument("--before", required=True, help="bin dir of the before build (obleth-gateway)")
    p.add_argument("--after", required=True, help="bin dir of the after build (obleth-gateway, obleth-migrator)")
    p.add_argument("--oha", default=shutil.which("oha") or "oha", help="the oha binary")
    p.add_argument("--duration", type=int, default=15, help="seconds of each fixed-rate run (default 15)")
    p.add_argument("--rates", default="1000,3000", help="fixed rates, req/s (default 1000,3000)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every variant at every rate (default 2)")
    p.add_argument("--json", help="also write the raw figures here")
    args = p.parse_args()
    args.rates = [int(r) for r in args.rates.split(",") if r]
    for b in (os.path.join(args.before, "obleth-gateway"), os.path.join(args.after, "obleth-gateway"),
              os.path.join(args.after, "obleth-migrator")):
        if not os.path.exists(b):
            p.error(f"{b} not found")
    variants = [
        {"id": "before", "label": "before", "bins": args.before, "db": True},
        {"id": "after", "label": "after", "bins": args.after, "db": True},
        {"id": "nice", "label": "after, pg nice 19", "bins": args.after, "db": True, "pg_nice": True},
        {"id": "flush1s", "label": "after, flush 1 s", "bins": args.after, "db": True,
         "extra": "[usage]\nflush_interval_ms = 1000\n"},
        {"id": "embedded", "label": "embedded", "bins": args.after, "db": False},
    ]
    work = tempfile.mkdtemp(prefix="obleth-usagewriter-")
    group = Group(work)
    cluster = Cluster()
    try:
        nginx_port = start_nginx_200(group, work).port
        url = obleth_db.stats_database(cluster, DB, args.after, nginx_port)
        key, public_id, sha = new_key()
        obleth_db.add_key(cluster, DB, public_id, sha, "bench-usage", RPM_LIMIT)
        keys = {"db": key, "embedded": new_key()}
        results = {v["id"]: {rate: [] for rate in args.rates} for v in variants}
        for _ in range(args.rounds):
            for rate in args.rates:
                for v in variants:
                    results[v["id"]][rate].append(
                        measure(args, group, work, cluster, url, nginx_port, v, rate, keys))
        report(args, variants, results, cluster.pg_version)
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"variants": [{k: x for k, x in v.items()} for v in variants],
                           "results": {k: {str(r): x for r, x in v.items()} for k, v in results.items()}},
                          out, indent=2)
    finally:
        group.stop_all()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
