"""The request-path cost of shared limits and budgets (issue 9): one
obleth-gateway build in PostgreSQL mode in front of an nginx that answers every
chat completion itself (`return 200`), with a key whose rpm_limit, tpm_limit,
token_budget and budget_usd are far above anything the run can use (so every
check runs and none refuses), and a price for the model (so spend is counted).

oha sends fixed rates (1k and 3k req/s by default) with `[limits] enabled =
true`, then again with `enabled = false`: the same build in the same run, one
gateway at a time. It prints p50 and p99 per rate and mode and what the limits
add, and the database queries a second the gateway sends at 1k req/s, by
statement kind, from pg_stat_statements (reset just before the run, read just
after it, divided by the seconds between). A build that refuses the `[limits]`
section (before issue 9) is measured as it is, limits off left out."""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import load
import obleth_db
from pg import Cluster
from procs import Group, free_port
from targets import MODEL, Target, new_key, render, write
from upstream import start_nginx_200

DB = "obleth_quota"
# Far above what a run can use: 3k req/s for a minute is 180k requests, and
# with no max_tokens in the body each reserves about 1,050 tokens.
RPM_LIMIT = 1_000_000_000
TPM_LIMIT = 2_000_000_000  # the column is an INTEGER
TOKEN_BUDGET = 10**15
BUDGET_USD_MICROS = 10**15
# gpt-4o-mini's list price, $0.15 and $0.60 per 1M input and output tokens.
PRICE_MICROS_PER_MTOK = (150_000, 600_000)

MODES = {
    "on": "[limits]\nenabled = true\n",
    "off": "[limits]\nenabled = false\n",
}


def log(msg):
    print(f"bench/quota: {msg}", file=sys.stderr, flush=True)


def add_governed_key(cluster, public_id, sha):
    """The key with every limit and budget set, and the model's price; each
    with its change row, as the admin writes them."""
    cluster.psql(DB, (
        "BEGIN;\n"
        "INSERT INTO api_keys (id, public_id, secret_hash, name, rpm_limit, tpm_limit, token_budget, "
        "budget_usd_micros, budget_period) "
        f"VALUES (gen_random_uuid(), '{public_id}', decode('{sha}', 'hex'), 'bench-quota', {RPM_LIMIT}, "
        f"{TPM_LIMIT}, {TOKEN_BUDGET}, {BUDGET_USD_MICROS}, 'day');\n"
        + obleth_db.record_change("api_key", f"SELECT id::text FROM api_keys WHERE public_id = '{public_id}'", "insert")
        + "INSERT INTO prices (id, model, input_micros_per_mtok, output_micros_per_mtok) "
        f"VALUES (gen_random_uuid(), '{MODEL}', {PRICE_MICROS_PER_MTOK[0]}, {PRICE_MICROS_PER_MTOK[1]});\n"
        + obleth_db.record_change("setting", "SELECT 'prices'", "insert")
        + "COMMIT;\n"
    ))


def accepts(gateway, config, url):
    """Whether `gateway check` accepts the settings file `config`."""
    out = subprocess.run([gateway, "--config", config, "check"], capture_output=True, text=True,
                         env={**os.environ, "OBLETH_DATABASE__URL": url, "RUST_BACKTRACE": "0",
                              "RUST_LIB_BACKTRACE": "0"})
    return out.returncode == 0, (out.stdout + out.stderr).strip()


def statement_kind(query):
    """`VERB table` of a normalised statement: its first word and the first
    table after INTO, UPDATE or FROM; a statement without a table is shown
    as its first 48 characters."""
    verb = (re.match(r"\s*(\w+)", query) or re.match(r"(.*)", query)).group(1).upper()
    table = re.search(r"\b(?:into|update|from)\s+([a-z_][a-z0-9_.]*)", query, re.IGNORECASE)
    if table:
        return f"{verb} {table.group(1).lower()}"
    return verb if verb in ("BEGIN", "COMMIT", "ROLLBACK") else query.strip()[:48]


def statements(cluster):
    """Calls per statement kind in this database since the last reset."""
    out = cluster.psql(DB, (
        "SELECT s.calls || chr(31) || regexp_replace(s.query, '\\s+', ' ', 'g') "
        "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        f"WHERE d.datname = '{DB}' AND s.query NOT ILIKE '%pg_stat_statements%'"
    ))
    kinds = {}
    for line in out.splitlines():
        if "\x1f" not in line:
            continue
        calls, query = line.split("\x1f", 1)
        kind = statement_kind(query)
        kinds[kind] = kinds.get(kind, 0) + int(calls)
    return kinds


def measure(args, group, work, cluster, url, mode, extra, key, rate):
    """One gateway with settings `extra`, started for this run alone: a
    warm-up, then `rate` for `--duration`; the statements when `rate` is
    `--db-rate`."""
    port, ops = free_port(), free_port()
    text = render("gateway-db.toml", PORT=port, OPS=ops, NAME=f"quota-{mode}-{rate}") + "\n" + extra
    config = write(os.path.join(work, f"gateway-{mode}-{rate}.toml"), text)
    proc = group.start(f"gateway-{mode}-{rate}", [args.gateway, "--config", config],
                       env={"RUST_LOG": "warn", "OBLETH_DATABASE__URL": url})
    target = Target(mode, f"limits {mode}", port, {"Authorization": f"Bearer {key}"}, proc)
    try:
        proc.wait_http(ops, "/readyz", 60)
        load.oha(args.oha, target, min(args.rates), 2)  # warm-up: connections, caches, leases
        db_run = rate == args.db_rate
        if db_run:
            cluster.psql(DB, "SELECT pg_stat_statements_reset()")
            started = time.monotonic()
        log(f"limits {mode}: {rate} req/s for {args.duration} s")
        latency = load.oha(args.oha, target, rate, args.duration)
        db = None
        if db_run:
            secs = time.monotonic() - started
            db = {"secs": secs, "calls": statements(cluster)}
    finally:
        proc.stop()
    return latency, db


def ms(v):
    return "-" if v is None else f"{v:.2f}"


def report(args, results, note):
    print(f"\n## obleth-gateway `{args.gateway}`: shared limits and budgets, on and off\n")
    if note:
        print(f"{note}\n")
    print(f"oha -q RATE -z {args.duration}s -c 64 --latency-correction -w; nginx `return 200` upstream; "
          "one gateway at a time (on and off alternate at each rate), PostgreSQL on the same cores.\n")
    print("| rate req/s | limits | 2xx/s | non-2xx | errors | p50 ms | p99 ms | sustained |")
    print("|---|---|---|---|---|---|---|---|")
    for rate in args.rates:
        for mode, r in results.items():
            x = r["latency"][rate]
            print(f"| {rate:,} | {mode} | {x['achieved_rps']:,.0f} | {x['non_2xx']} | {x['errors']} | "
                  f"{ms(x['p50_ms'])} | {ms(x['p99_ms'])} | {'yes' if x['sustained'] else 'NO'} |")
    if "on" in results and "off" in results:
        print("\n| rate req/s | added p50 ms | added p99 ms |")
        print("|---|---|---|")
        for rate in args.rates:
            on, off = results["on"]["latency"][rate], results["off"]["latency"][rate]
            d50 = None if None in (on["p50_ms"], off["p50_ms"]) else on["p50_ms"] - off["p50_ms"]
            d99 = None if None in (on["p99_ms"], off["p99_ms"]) else on["p99_ms"] - off["p99_ms"]
            print(f"| {rate:,} | {ms(d50)} | {ms(d99)} |")
    runs = {m: r["db"] for m, r in results.items() if r["db"]}
    if not runs:
        return
    print(f"\nDatabase queries a second, one gateway at {args.db_rate:,} req/s (pg_stat_statements calls "
          "between a reset before the run and a read after it, over the seconds between):\n")
    modes = list(runs)
    kinds = sorted({k for r in runs.values() for k in r["calls"]},
                   key=lambda k: -max(r["calls"].get(k, 0) / r["secs"] for r in runs.values()))
    head = " | ".join(f"limits {m}" for m in modes)
    added = len(modes) == 2
    print(f"| statement | {head} |" + (" added |" if added else ""))
    print("|---|" + "---|" * len(modes) + ("---|" if added else ""))

    def qps(m, k):
        return runs[m]["calls"].get(k, 0) / runs[m]["secs"]

    for k in kinds + ["total"]:
        vals = [sum(qps(m, x) for x in kinds) if k == "total" else qps(m, k) for m in modes]
        row = f"| {'**total**' if k == 'total' else '`' + k + '`'} | " + " | ".join(f"{v:,.1f}" for v in vals) + " |"
        if added:
            row += f" {vals[0] - vals[1]:+,.1f} |"
        print(row)


def main():
    p = argparse.ArgumentParser(prog="bench/quota", description=__doc__)
    p.add_argument("--bin-dir", required=True, help="where obleth-gateway and obleth-migrator are")
    p.add_argument("--oha", default=shutil.which("oha") or "oha", help="the oha binary")
    p.add_argument("--duration", type=int, default=15, help="seconds of each fixed-rate run (default 15)")
    p.add_argument("--rates", default="1000,3000", help="fixed rates, req/s (default 1000,3000)")
    p.add_argument("--db-rate", type=int, default=1000, help="the rate whose database queries are counted")
    p.add_argument("--json", help="also write the raw figures here")
    args = p.parse_args()
    args.rates = [int(r) for r in args.rates.split(",") if r]
    if args.db_rate not in args.rates:
        p.error("--db-rate must be one of --rates")
    args.gateway = os.path.join(args.bin_dir, "obleth-gateway")
    for b in (args.gateway, os.path.join(args.bin_dir, "obleth-migrator")):
        if not os.path.exists(b):
            p.error(f"{b} not found; build it: cargo build --release -p obleth-gateway -p obleth-migrator")
    if not (os.path.exists(args.oha) or shutil.which(args.oha)):
        p.error(f"oha not found ({args.oha}); install it: cargo install oha --locked")

    work = tempfile.mkdtemp(prefix="obleth-quota-")
    group = Group(work)
    cluster = Cluster()
    try:
        nginx_port = start_nginx_200(group, work).port
        url = obleth_db.stats_database(cluster, DB, args.bin_dir, nginx_port)
        key, public_id, sha = new_key()
        add_governed_key(cluster, public_id, sha)

        modes = dict(MODES)
        note = ""
        ok, why = accepts(args.gateway, write(os.path.join(work, "check-off.toml"),
                                              render("gateway-db.toml", PORT=free_port(), OPS=free_port(),
                                                     NAME="check") + "\n" + MODES["off"]), url)
        if not ok:
            modes = {"on": ""}
            note = ("This build refuses the `[limits]` section (it predates issue 9), so limits off is not "
                    f"measured; limits on is its own per-replica limiter. `check` said: {why.splitlines()[-1].strip()}")
            log(note)
        # On and off alternate at each rate, each on a gateway of its own, so
        # that neither mode always runs on a warmer (or busier) machine.
        results = {mode: {"latency": {}, "db": None} for mode in modes}
        for rate in args.rates:
            for mode, extra in modes.items():
                latency, db = measure(args, group, work, cluster, url, mode, extra, key, rate)
                results[mode]["latency"][rate] = latency
                results[mode]["db"] = db or results[mode]["db"]
        report(args, results, note)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"gateway": args.gateway, "note": note, "results": results}, f, indent=2)
    finally:
        group.stop_all()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
