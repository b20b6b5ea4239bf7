"""bench/run's measuring half: starts every target against one mock upstream,
measures them one after another, then the key warm-up and revocation
propagation, and writes the results as JSON and as bench/RESULTS.md."""

import argparse
import datetime
import http.client
import json
import os
import signal
import sys
import time

import keys
import load
import obleth_db
import report
import revoke
import stream
import targets
from facts import machine_facts
from pg import Cluster
from procs import Group, cpu_secs, tree

BENCH_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ALL_TARGETS = ["direct", "nginx", "embedded", "db", "portkey", "litellm"]


def parse_args():
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--bin-dir", required=True, help="where the release binaries are (bench/run passes it)")
    p.add_argument("--quick", action="store_true",
                   help="3 s runs, 100k keys, 20 revokes, 30 streams: to try the harness, not to publish")
    p.add_argument("--duration", type=int, default=10, help="seconds of each load run (default 10)")
    p.add_argument("--rates", default="1000,3000", help="fixed rates for the latency runs, req/s")
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help=f"comma-separated subset of {','.join(ALL_TARGETS)}; direct is always measured")
    p.add_argument("--keys", default="100000,1000000", help="key counts for the warm-up runs (0 to skip)")
    p.add_argument("--revokes", type=int, default=100, help="revocations to time (0 to skip)")
    p.add_argument("--streams", type=int, default=100, help="streamed requests per target for TTFT")
    p.add_argument("--token-delay-ms", type=int, default=20, help="the mock's delay before each streamed token")
    p.add_argument("--out", default=os.path.join(BENCH_DIR, "RESULTS.md"), help="the markdown report")
    p.add_argument("--render", metavar="RESULTS_JSON",
                   help="measure nothing: write the report from an earlier run's results.json "
                        "(after editing FINDINGS.md)")
    a = p.parse_args()
    if a.quick:
        a.duration, a.keys, a.revokes, a.streams = 3, "100000", 20, 30
    a.rates = [int(r) for r in a.rates.split(",") if r]
    a.key_sizes = [int(k) for k in a.keys.split(",") if k and int(k) > 0]
    a.targets = ["direct"] + [t for t in a.targets.split(",") if t and t != "direct"]
    unknown = set(a.targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return a


def log(msg):
    print(f"bench: {msg}", flush=True)


def start_targets(args, group, cluster, work, mock, skipped):
    """Starts the chosen targets; a peer that cannot start is skipped with the reason."""
    cache = os.environ.get("BENCH_CACHE", os.path.expanduser("~/.cache/obleth-bench"))
    started = [mock]
    for name in args.targets[1:]:
        log(f"starting {name}")
        try:
            if name == "nginx":
                t = targets.start_nginx(group, work, mock.port)
            elif name == "embedded":
                t = targets.start_embedded(group, args.bin_dir, work, mock.port)
            elif name == "db":
                url = cluster.create_database("obleth_bench")
                obleth_db.migrate(args.bin_dir, url)
                obleth_db.add_catalog(cluster, "obleth_bench", mock.port)
                key, public_id, sha = targets.new_key()
                obleth_db.add_key(cluster, "obleth_bench", public_id, sha, "bench", targets.RPM_LIMIT)
                t = targets.start_db(group, args.bin_dir, work, url, key)
            elif name == "portkey":
                t = targets.start_portkey(group, cache, mock.port)
            elif name == "litellm":
                t = targets.start_litellm(group, cache, work, mock.port)
            if t is None:
                skipped[name] = "not installed (see bench/harness/install.sh output)"
                continue
            check(t)
            started.append(t)
        except Exception as e:  # a peer that does not run here is reported, not fatal
            if name in ("embedded", "db"):
                raise
            skipped[name] = f"could not start: {str(e).splitlines()[0]}"
            log(skipped[name])
    return started


def check(target):
    """One request that must succeed with a chat completion before measuring."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    headers = dict(target.headers, **{"Content-Type": "application/json"})
    conn.request("POST", target.path, body=targets.BODY, headers=headers)
    resp = conn.getresponse()
    body = resp.read().decode("utf-8", "replace")
    conn.close()
    if resp.status != 200 or "chat.completion" not in body:
        raise RuntimeError(f"{target.name}: check request answered {resp.status}: {body[:300]}")


def measure(args, cluster, work, ts, oha_bin, results):
    for t in ts:
        results["rss"][t.name] = {"idle_kib": t.proc.rss_kib()}
    pg_pid = cluster.pid()
    for t in ts:
        log(f"{t.name}: throughput (wrk, 2 threads, 32 connections, {args.duration} s)")
        load.wrk(t, work, 2)  # warm-up, not recorded
        cpu, pg_cpu = t.proc.cpu_secs(), cpu_secs_tree(pg_pid)
        r = load.wrk(t, work, args.duration)
        # CPU a request: what the target's own processes spent, whatever the
        # load generator and the mock took from the same cores.
        r["cpu_us"] = (t.proc.cpu_secs() - cpu) / r["requests"] * 1e6 if r["requests"] else None
        r["pg_cpu_us"] = (cpu_secs_tree(pg_pid) - pg_cpu) / r["requests"] * 1e6 if r["requests"] else None
        results["throughput"][t.name] = r
        log(f"{t.name}: {r['rps']:.0f} req/s, {r['cpu_us'] or 0:.1f} µs CPU a request")
    for rate in args.rates:
        for t in ts:
            log(f"{t.name}: {rate} req/s for {args.duration} s (oha)")
            r = load.oha(oha_bin, t, rate, args.duration)
            results["latency"].setdefault(str(rate), {})[t.name] = r
            log(f"{t.name}: p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms sustained={r['sustained']}")
    for t in ts:
        log(f"{t.name}: time to first token, {args.streams} streams")
        try:
            results["ttft"][t.name] = stream.ttft(t, args.streams)
        except (RuntimeError, OSError, http.client.HTTPException) as e:
            if t.name in ("direct", "embedded", "db"):
                raise
            results["ttft"][t.name] = {"error": str(e).splitlines()[0][:300]}
            log(f"{t.name}: streaming failed: {results['ttft'][t.name]['error']}")
    for t in ts:
        results["rss"][t.name]["after_kib"] = t.proc.rss_kib()


def cpu_secs_tree(pid):
    return sum(cpu_secs(p) for p in tree(pid))


def obleth_evidence(cluster, ts, results):
    """What the obleth targets say about their runs: the mean of their own
    overhead histogram, and for the database-mode one the usage rows written
    against the requests it answered."""
    results["self_overhead"] = {}
    for t in ts:
        if t.name not in ("embedded", "db"):
            continue
        if t.name == "db":
            time.sleep(1.5)  # the usage writer flushes every 250 ms
        m = keys.metrics(t.proc.ops_port)
        count = m.get("obleth_gateway_overhead_seconds_count", 0.0)
        results["self_overhead"][t.name] = {
            "count": count,
            "mean_us": m.get("obleth_gateway_overhead_seconds_sum", 0.0) / count * 1e6 if count else None,
        }
        if t.name == "db":
            rows = int(cluster.psql("obleth_bench", "SELECT count(*) FROM usage_events").strip())
            results["db_usage"] = {
                "usage_rows": rows,
                "written_total": m.get("obleth_usage_written_total", 0.0),
                "dropped_total": m.get("obleth_usage_dropped_total", 0.0),
                "requests_total": m.get("obleth_requests_total"),
                "rejected_total": m.get("obleth_rejected_requests_total", 0.0),
            }


def main():
    args = parse_args()
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        with open(args.out, "w") as f:
            f.write(report.render(results))
        log(f"wrote {os.path.relpath(args.out)} from {args.render}")
        return
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = os.path.join(BENCH_DIR, "out", stamp)
    log_dir = os.path.join(work, "logs")
    os.makedirs(log_dir)
    oha_bin = os.path.join(os.environ.get("BENCH_CACHE", ""), "cargo", "bin", "oha")
    log(f"logs and raw results in {os.path.relpath(work)}")
    results = {"args": {k: v for k, v in vars(args).items()}, "throughput": {}, "latency": {}, "ttft": {},
               "rss": {}, "skipped": {}, "targets": {}}
    results["facts"] = machine_facts(BENCH_DIR, args.bin_dir, oha_bin)
    # A Ctrl-C or SIGTERM unwinds through the finally blocks that stop everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = Cluster()
    group = Group(log_dir)
    try:
        cluster.start()
        results["facts"]["postgres"] = cluster.pg_version
        log(f"PostgreSQL {cluster.pg_version} on 127.0.0.1:{cluster.port}")
        mock = targets.start_mock(group, args.bin_dir, args.token_delay_ms)
        ts = start_targets(args, group, cluster, work, mock, results["skipped"])
        results["targets"] = {t.name: {"label": t.label, "note": t.note} for t in ts}
        measure(args, cluster, work, ts, oha_bin, results)
        obleth_evidence(cluster, ts, results)
        group.stop_all()
        if args.key_sizes:
            results["warmup"] = keys.warmup(cluster, args.bin_dir, work, log_dir, [0] + args.key_sizes)
        if args.revokes:
            log(f"revocation propagation: {args.revokes} revokes, 3 replicas")
            results["revoke"] = revoke.propagation(cluster, args.bin_dir, work, log_dir, args.revokes)
    finally:
        group.stop_all()
        cluster.stop()
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    with open(args.out, "w") as f:
        f.write(report.render(results))
    log(f"wrote {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
