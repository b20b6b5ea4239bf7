"""bench/run's measuring half: starts every target in front of one upstream,
measures them one after another, then the key warm-up and revocation
propagation, and writes the results as JSON and as bench/RESULTS.md.

The throughput and fixed-rate latency runs forward to an nginx that answers
every chat completion itself (`--upstream nginx`, the default), so that the
upstream's own cost does not hide the gateway's; the time-to-first-token runs
forward to obleth-mock-upstream, which streams with a delay before each token.
With `--before DIR`, another build's obleth-gateway is measured beside this
one in every section (`embedded-before`, `db-before`)."""

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
import upstream
from facts import build_facts, machine_facts
from pg import Cluster
from procs import Group, cpu_secs, tree

BENCH_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ALL_TARGETS = ["direct", "nginx", "embedded", "db", "portkey", "litellm"]
PEERS = ("portkey", "litellm")
# The obleth targets, and the build each runs: `embedded-before` and
# `db-before` exist only with --before.
OBLETH = {"embedded": "after", "db": "after", "embedded-before": "before", "db-before": "before"}
# The database of each PostgreSQL-mode target.
DATABASES = {"db": "obleth_bench", "db-before": "obleth_bench_before"}
REQUIRED = ("direct", "nginx", "embedded", "db")


class Build:
    """One obleth build: its gateway and the migrator that makes its schema."""

    def __init__(self, name, gateway, migrator, note=""):
        self.name, self.gateway, self.migrator, self.note = name, gateway, migrator, note


def parse_args():
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", required=True,
                   help="where this build's release binaries are: obleth-gateway, obleth-migrator, "
                        "obleth-mock-upstream (bench/run passes target/release; a later --bin-dir wins)")
    p.add_argument("--before", metavar="DIR",
                   help="another build's release binaries (obleth-gateway, and obleth-migrator if present): "
                        "adds the targets embedded-before and db-before to every section, and that build to "
                        "the warm-up and revocation runs")
    p.add_argument("--upstream", choices=["nginx", "mock"], default="nginx",
                   help="what the throughput and fixed-rate latency sections forward to: nginx answering "
                        "`return 200` itself (default), or obleth-mock-upstream; time to first token always "
                        "uses the mock")
    p.add_argument("--skip-peers", action="store_true", help="leave out Portkey and LiteLLM")
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
    chosen = [t for t in a.targets.split(",") if t]
    unknown = set(chosen) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if a.skip_peers:
        chosen = [t for t in chosen if t not in PEERS]
    if a.before and not os.path.isfile(os.path.join(a.before, "obleth-gateway")):
        p.error(f"--before {a.before}: no obleth-gateway there")
    # One order for every table: the floor, nginx, this build, the build
    # before, then the peers.
    order = ["direct", "nginx", "embedded", "db", "embedded-before", "db-before", *PEERS]
    wanted = set(chosen) | {"direct"}
    if a.before:
        wanted |= {f"{t}-before" for t in ("embedded", "db") if t in chosen}
    a.targets = [t for t in order if t in wanted]
    return a


def builds(args):
    after = Build("after", os.path.join(args.bin_dir, "obleth-gateway"),
                  os.path.join(args.bin_dir, "obleth-migrator"))
    out = {"after": after}
    if args.before:
        migrator = os.path.join(args.before, "obleth-migrator")
        note = ""
        if not os.path.isfile(migrator):
            migrator = after.migrator
            note = "no obleth-migrator in its directory: its databases were made by this build's migrator"
        out["before"] = Build("before", os.path.join(args.before, "obleth-gateway"), migrator, note)
    return out


LABELS = {
    "embedded": "obleth, embedded (no database)",
    "db": "obleth, PostgreSQL mode",
    "embedded-before": "obleth before, embedded (no database)",
    "db-before": "obleth before, PostgreSQL mode",
}


def log(msg):
    print(f"bench: {msg}", flush=True)


def prepare_databases(args, cluster, bs, upstream_port):
    """The catalog and one key in each PostgreSQL-mode target's database;
    answers {target: key}."""
    out = {}
    for name, db in DATABASES.items():
        if name not in args.targets:
            continue
        build = bs[OBLETH[name]]
        url = cluster.create_database(db)
        obleth_db.migrate(build.migrator, url)
        obleth_db.add_catalog(cluster, db, upstream_port)
        key, public_id, sha = targets.new_key()
        obleth_db.add_key(cluster, db, public_id, sha, "bench", targets.RPM_LIMIT)
        out[name] = key
    return out


def start_targets(args, group, cluster, work, up, bs, db_keys, skipped):
    """Starts the chosen targets in front of the upstream `up`; a peer or a
    build from before that cannot start is skipped with the reason."""
    cache = os.environ.get("BENCH_CACHE", os.path.expanduser("~/.cache/obleth-bench"))
    started = [up]
    for name in args.targets[1:]:
        if name in skipped:
            continue
        log(f"starting {name} (upstream :{up.port})")
        try:
            t = None
            if name == "nginx":
                t = targets.start_nginx(group, work, up.port)
            elif name in ("embedded", "embedded-before"):
                t = targets.start_embedded(group, bs[OBLETH[name]].gateway, work, up.port, name=name,
                                           label=LABELS[name])
            elif name in ("db", "db-before"):
                obleth_db.point_provider(cluster, DATABASES[name], up.port)
                t = targets.start_db(group, bs[OBLETH[name]].gateway, work, cluster.url(DATABASES[name]),
                                     db_keys[name], name=name, label=LABELS[name])
            elif name == "portkey":
                t = targets.start_portkey(group, cache, up.port)
            elif name == "litellm":
                t = targets.start_litellm(group, cache, work, up.port)
            if t is None:
                skipped[name] = "not installed (see bench/harness/install.sh output)"
                continue
            check(t)
            started.append(t)
        except Exception as e:  # a peer that does not run here is reported, not fatal
            if name in REQUIRED:
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


def measure_load(args, cluster, work, ts, oha_bin, results):
    """Throughput, fixed-rate latency and memory, with each target's CPU."""
    for t in ts:
        results["rss"][t.name] = {"idle_kib": t.proc.rss_kib()}
    pg_pid = cluster.pid()
    for t in ts:
        log(f"{t.name}: throughput (wrk, 2 threads, 32 connections, {args.duration} s)")
        load.wrk(t, work, 2)  # warm-up, not recorded
        cpu, pg_cpu = t.proc.cpu_secs(), cpu_secs_tree(pg_pid)
        r = load.wrk(t, work, args.duration)
        # CPU a request: what the target's own processes spent, whatever the
        # load generator and the upstream took from the same cores.
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
        results["rss"][t.name]["after_kib"] = t.proc.rss_kib()


def measure_ttft(args, ts, results):
    for t in ts:
        log(f"{t.name}: time to first token, {args.streams} streams")
        try:
            results["ttft"][t.name] = stream.ttft(t, args.streams)
        except (RuntimeError, OSError, http.client.HTTPException) as e:
            if t.name in REQUIRED:
                raise
            results["ttft"][t.name] = {"error": str(e).splitlines()[0][:300]}
            log(f"{t.name}: streaming failed: {results['ttft'][t.name]['error']}")


def cpu_secs_tree(pid):
    return sum(cpu_secs(p) for p in tree(pid))


def obleth_evidence(cluster, ts, results):
    """What the obleth targets say about their runs: the mean of their own
    overhead histogram, and for the database-mode ones the usage rows written
    against the requests they answered."""
    results.setdefault("self_overhead", {})
    results.setdefault("db_usage_by_target", {})
    obleth = [t for t in ts if t.name in OBLETH]
    if any(t.name in DATABASES for t in obleth):
        time.sleep(1.5)  # the usage writer flushes every 250 ms
    for t in obleth:
        m = keys.metrics(t.proc.ops_port)
        count = m.get("obleth_gateway_overhead_seconds_count", 0.0)
        results["self_overhead"][t.name] = {
            "count": count,
            "mean_us": m.get("obleth_gateway_overhead_seconds_sum", 0.0) / count * 1e6 if count else None,
        }
        if t.name in DATABASES:
            rows = int(cluster.psql(DATABASES[t.name], "SELECT count(*) FROM usage_ledger").strip())
            results["db_usage_by_target"][t.name] = {
                "usage_rows": rows,
                "written_total": m.get("obleth_usage_written_total", 0.0),
                "dropped_total": m.get("obleth_usage_dropped_total", 0.0),
                "requests_total": m.get("obleth_requests_total"),
                "rejected_total": m.get("obleth_rejected_requests_total", 0.0),
                "rejected_by": keys.labelled(t.proc.ops_port, "obleth_rejected_requests_total"),
            }


def phases(args):
    """(upstream kind, sections) in run order: the load sections against
    `--upstream`, time to first token against the mock."""
    if args.upstream == "mock":
        return [("mock", ("throughput", "latency", "memory", "ttft"))]
    return [("nginx", ("throughput", "latency", "memory")), ("mock", ("ttft",))]


def run_phase(args, kind, sections, cluster, work, log_dir, bs, db_keys, oha_bin, results):
    group = Group(log_dir)
    try:
        if kind == "nginx":
            up = upstream.start_nginx_200(group, work)
        else:
            up = upstream.start_mock(group, args.bin_dir, args.token_delay_ms)
        for s in sections:
            results["upstream"][s] = kind
        results["floor"][kind] = {"label": up.label, "note": up.note}
        ts = start_targets(args, group, cluster, work, up, bs, db_keys, results["skipped"])
        for t in ts[1:]:
            results["targets"].setdefault(t.name, {"label": t.label, "note": t.note})
        if "throughput" in sections:
            measure_load(args, cluster, work, ts, oha_bin, results)
            obleth_evidence(cluster, ts, results)
        if "ttft" in sections:
            measure_ttft(args, ts, results)
    finally:
        group.stop_all()


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
    bs = builds(args)
    results = {"args": {k: v for k, v in vars(args).items()}, "throughput": {}, "latency": {}, "ttft": {},
               "rss": {}, "skipped": {}, "targets": {"direct": {"label": "direct (the section's upstream)", "note": ""}},
               "upstream": {}, "floor": {}}
    results["facts"] = machine_facts(BENCH_DIR, args.bin_dir, oha_bin)
    results["builds"] = {name: build_facts(b.gateway, b.migrator, b.note) for name, b in bs.items()}
    # A Ctrl-C or SIGTERM unwinds through the finally blocks that stop everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = Cluster()
    try:
        cluster.start()
        results["facts"]["postgres"] = cluster.pg_version
        log(f"PostgreSQL {cluster.pg_version} on 127.0.0.1:{cluster.port}")
        db_keys = prepare_databases(args, cluster, bs, 0)
        for kind, sections in phases(args):
            log(f"upstream {kind}: {', '.join(sections)}")
            run_phase(args, kind, sections, cluster, work, log_dir, bs, db_keys, oha_bin, results)
        results["warmup"], results["revoke"] = {}, {}
        for name, b in bs.items():
            tag = "" if name == "after" else name
            suffix = "" if name == "after" else f"_{name}"
            if args.key_sizes:
                results["warmup"][name] = keys.warmup(cluster, b.gateway, b.migrator, work, log_dir,
                                                      [0] + args.key_sizes, db=f"obleth_keys{suffix}", tag=tag)
            if args.revokes:
                log(f"revocation propagation ({name}): {args.revokes} revokes, 3 replicas")
                results["revoke"][name] = revoke.propagation(cluster, b.gateway, b.migrator, work, log_dir,
                                                             args.revokes, db=f"obleth_revoke{suffix}", tag=tag)
    finally:
        cluster.stop()
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    with open(args.out, "w") as f:
        f.write(report.render(results))
    log(f"wrote {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
