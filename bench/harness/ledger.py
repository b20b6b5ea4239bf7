"""The partitioned usage ledger at scale (issue 10): a throwaway PostgreSQL
migrated with obleth-migrator, N usage rows (100 million by default)
generated in SQL straight into `usage_ledger` over the last 30 days, then
the figures the issue asks for, through obleth's real code
(`obleth_config::db::usage`, driven by the `ledger_bench` example):

- admin totals for one key over 30 days and for all keys over a day, each
  hour-aligned and not (median and p95 of 20 runs; target under 50 ms);
- the raw records of one key over a day (the admin's first page and the next);
- the budget refresh read, `periods_totals`, for 1,000 subjects and for one;
- the writer's sustained rate through `insert_usage` with the ledger's
  trigger on (it queues the rollups) and the rollup fold running every
  second beside it, as a gateway runs it, from 4 and 8 concurrent writers
  in batches of 500 and 5,000 (target 50,000 rows/s);
- the bytes on disk a row: ledger heap, each index, rollups and running
  totals separately.

The load is N rows in time order, one statement per piece of at most
1,000,000 rows, one UTC day per job, `--jobs` days at once. Each statement
fires the ledger's statement trigger as the writer's statements do, and the
rollup queue it fills is then folded (`obleth_fold_usage`, timed), so the
hourly rollups and the running totals are the production code's, and are
checked against the ledger afterwards. Before it, a 1,000,000-row probe load
measures the bytes a row; the bench refuses to start when the disk's free
space is short of N rows' estimate plus 8 GB (`--rows fit` loads the most
that fits). PostgreSQL runs with fsync off (a throwaway server: see
pg.Cluster) and its data directory is deleted at the end (`--keep` keeps it).

    bench/ledger [--rows 100000000|fit] [--jobs 2] [--runs 20] [--write-secs 30]
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

import obleth_db
from facts import cpu_model, sh
from pg import Cluster
from procs import CLOCK_TICKS, cpu_secs, tree

DB = "obleth_ledger"
GB = 1 << 30
MARGIN = 8 * GB
PROBE_ROWS = 1_000_000
PIECE_ROWS = 1_000_000
TARGET_MS = 50.0
TARGET_ROWS_PER_SEC = 50_000
# The rollups and running totals, as the fold (and the daily rollups'
# triggers) keep them.
ROLLUPS = ("usage_hourly", "usage_daily_keys", "usage_daily_models", "usage_totals")
NOTES_MARK = "<!-- notes: everything below this line is kept when bench/ledger rewrites the file -->"

# What the server adds to pg.Cluster's throwaway settings: enough shared
# buffers and WAL for a bulk load on a 23 GB machine. wal_level minimal
# (no replica) writes less WAL; max_wal_size bounds the WAL on disk.
SERVER_CONF = (
    "shared_buffers = 2GB\n"
    "max_wal_size = 2GB\n"
    "wal_level = minimal\n"
    "max_wal_senders = 0\n"
    "maintenance_work_mem = 512MB\n"
    "checkpoint_timeout = 30min\n"
    "log_min_messages = warning\n"
)

MODELS = ["gpt-4o-mini", "gpt-4o", "o3-mini", "claude-3-5-haiku", "claude-sonnet-4",
          "gemini-2.0-flash", "llama-3.3-70b", "mistral-large"]
PROVIDERS = ["openai", "anthropic", "google"]


def log(msg):
    print(f"bench/ledger: {msg}", file=sys.stderr, flush=True)


def sql_array(items):
    return "ARRAY[" + ", ".join(f"'{x}'" for x in items) + "]"


def keys_sql(keys, teams):
    """The bench's keys: `k` 0..keys-1, a uuid each, and a team (`k % teams`),
    except every 20th key, which is in no team. ledger_bench reads it too."""
    return (
        "CREATE TABLE bench_keys (k INT PRIMARY KEY, key_id UUID NOT NULL, team_id UUID);\n"
        "INSERT INTO bench_keys SELECT k, md5('key' || k)::uuid, "
        f"CASE WHEN k % 20 = 0 THEN NULL ELSE md5('team' || (k % {teams}))::uuid END "
        f"FROM generate_series(0, {keys - 1}) AS k;\n"
        "ANALYZE bench_keys;\n"
    )


def load_sql(lo, hi, n, keys):
    """One statement inserting `n` rows with lo <= created_at < hi, in time
    order. Key k = floor(keys * r^3): the busiest key gets about 4.6% of
    requests and half the keys share about a fifth. 85% of a key's requests
    use its own model (k % 8); the provider follows the model; 97% answer
    200, then 429, 400, 500, 502, and 0.2% are 401s without a key. Tokens
    only on 200s; two models have no price (cost NULL)."""
    return f"""
SET work_mem = '256MB';
INSERT INTO usage_ledger (request_id, key_id, model, provider, prompt_tokens, completion_tokens,
    total_tokens, status, latency_ms, streamed, node_id, created_at, cost_micros, estimated, team_id)
SELECT gen_random_uuid(), CASE WHEN s.status = 401 THEN NULL ELSE b.key_id END,
       ({sql_array(MODELS)})[s.m + 1], ({sql_array(PROVIDERS)})[s.m % 3 + 1],
       s.p, s.c, s.p + s.c, s.status, s.latency, s.streamed, 'gw-' || (s.i % 4), s.at,
       CASE WHEN s.m < 6 THEN (s.p + s.c)::bigint * (s.m + 1) END, s.estimated,
       CASE WHEN s.status = 401 THEN NULL ELSE b.team_id END
FROM (
    SELECT t.*,
           CASE WHEN t.status = 200 THEN 50 + floor(random() * 2000)::int END AS p,
           CASE WHEN t.status = 200 THEN floor(random() * 800)::int END AS c
    FROM (
        SELECT i, at, k,
               CASE WHEN u1 < 0.85 THEN k % 8 ELSE floor(u2 * 8)::int END AS m,
               CASE WHEN rs < 0.97 THEN 200 WHEN rs < 0.985 THEN 429 WHEN rs < 0.99 THEN 400
                    WHEN rs < 0.995 THEN 500 WHEN rs < 0.998 THEN 502 ELSE 401 END::smallint AS status,
               100 + floor(random() * 3000)::int AS latency, random() < 0.4 AS streamed,
               random() < 0.02 AS estimated
        FROM (
            SELECT i, '{lo}'::timestamptz + ('{hi}'::timestamptz - '{lo}'::timestamptz) * ((i + random()) / {n}) AS at,
                   floor({keys} * power(random(), 3))::int AS k,
                   random() AS u1, random() AS u2, random() AS rs
            FROM generate_series(0, {n - 1}) AS i
            OFFSET 0
        ) AS r
        OFFSET 0
    ) AS t
    OFFSET 0
) AS s
JOIN bench_keys b ON b.k = s.k;
"""


def day_chunks(start, end, rows):
    """[(day, [(lo, hi, n), ...])]: `rows` spread evenly over [start, end),
    cut at UTC midnights, each day in pieces of at most PIECE_ROWS."""
    span = (end - start).total_seconds()
    out, given = [], 0
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        lo, hi = max(start, day), min(end, day + datetime.timedelta(days=1))
        total = round(rows * (hi - start).total_seconds() / span) - given
        given += total
        pieces, at, left = [], lo, total
        parts = max(1, -(-total // PIECE_ROWS))
        for j in range(parts):
            n = left // (parts - j)
            nxt = hi if j == parts - 1 else lo + (hi - lo) * ((total - left + n) / total)
            if n:
                pieces.append((at, nxt, n))
            at, left = nxt, left - n
        out.append((day.date(), pieces))
        day += datetime.timedelta(days=1)
    return out


def load(cluster, start, end, rows, keys, jobs):
    """Loads `rows` rows, `jobs` days at once; answers seconds and per-day seconds."""
    chunks = day_chunks(start, end, rows)
    cluster.psql(DB, "".join(f"SELECT obleth_usage_partition('{d}');\n" for d, _ in chunks))

    def one_day(chunk):
        day, pieces = chunk
        t = time.monotonic()
        for lo, hi, n in pieces:
            cluster.psql(DB, load_sql(lo.isoformat(), hi.isoformat(), n, keys), timeout=7200)
        return day, sum(n for _, _, n in pieces), time.monotonic() - t

    t0 = time.monotonic()
    done = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for day, n, secs in pool.map(one_day, chunks):
            done.append((day, n, secs))
            if rows >= 10 * PROBE_ROWS:
                log(f"loaded {day}: {n:,} rows in {secs:.0f} s ({time.monotonic() - t0:.0f} s so far)")
    return time.monotonic() - t0, done


def db_bytes(cluster):
    return int(cluster.psql(DB, f"SELECT pg_database_size('{DB}')").strip())


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def scalar(cluster, sql):
    return cluster.psql(DB, sql).strip()


def verify(cluster):
    """The rollups and running totals against the ledger: every request
    counted once in usage_hourly and once per key in usage_totals (after
    folding the rollup queue into them)."""
    while int(scalar(cluster, "SELECT obleth_fold_usage(20000)")) > 0:
        pass
    row = scalar(cluster, """
        SELECT (SELECT count(*) FROM usage_ledger),
               (SELECT LEAST(h.r, k.r, m.r) FROM (SELECT sum(requests) AS r FROM usage_hourly) h,
                   (SELECT sum(requests) AS r FROM usage_daily_keys) k,
                   (SELECT sum(requests) AS r FROM usage_daily_models) m),
               (SELECT sum(total_tokens) FROM usage_ledger),
               (SELECT sum(total_tokens) FROM usage_hourly),
               (SELECT count(*) FROM usage_ledger WHERE key_id IS NOT NULL),
               (SELECT sum(t.requests) FROM usage_totals t JOIN bench_keys b ON b.key_id = t.subject_id
                 WHERE t.period = 'total')""").split("|")
    ledger, hourly, ledger_tokens, hourly_tokens, keyed, totals = (int(x or 0) for x in row)
    daily = scalar(cluster, """
        SELECT (SELECT sum(requests) FROM usage_daily_keys) = (SELECT sum(requests) FROM usage_hourly)
           AND (SELECT sum(requests) FROM usage_daily_models) = (SELECT sum(requests) FROM usage_hourly)
           AND (SELECT sum(total_tokens) FROM usage_daily_keys) = (SELECT sum(total_tokens) FROM usage_hourly)
           AND (SELECT sum(cost_micros) FROM usage_daily_models) = (SELECT sum(cost_micros) FROM usage_hourly)""")
    ok = daily == "t" and ledger == hourly and ledger_tokens == hourly_tokens and keyed == totals
    return {"ledger_rows": ledger, "hourly_requests": hourly, "ledger_tokens": ledger_tokens,
            "hourly_tokens": hourly_tokens, "keyed_rows": keyed, "totals_requests": totals, "ok": ok}


def vacuum(cluster, jobs):
    names = scalar(cluster, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                            "WHERE i.inhparent = 'usage_ledger'::regclass ORDER BY 1").split()
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda n: cluster.psql(DB, f"VACUUM (ANALYZE) {n}", timeout=7200),
                      names + list(ROLLUPS) + ["usage_rollup_queue"]))
    cluster.psql(DB, "ANALYZE usage_ledger", timeout=7200)
    return time.monotonic() - t0


def sizes(cluster):
    """Bytes of the ledger's partitions (heap with its toast, free space and
    visibility maps; each index summed over the partitions), the rollups
    and the running totals, with their row counts."""
    out = {}
    out["ledger_total"] = int(scalar(cluster, (
        "SELECT sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i "
        "WHERE i.inhparent = 'usage_ledger'::regclass")))
    out["ledger_heap"] = int(scalar(cluster, (
        "SELECT sum(pg_table_size(i.inhrelid)) FROM pg_inherits i "
        "WHERE i.inhparent = 'usage_ledger'::regclass")))
    out["ledger_indexes"] = {}
    for line in cluster.psql(DB, (
            "SELECT p.relname, sum(pg_relation_size(i.inhrelid)) FROM pg_inherits i "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relkind = 'I' "
            "AND p.relname IN ('usage_ledger_key_time', 'usage_ledger_id', 'usage_ledger_time', "
            "'usage_ledger_request_once') GROUP BY 1 ORDER BY 1")).split():
        name, size = line.split("|")
        out["ledger_indexes"][name] = int(size)
    out["partitions"] = int(scalar(cluster, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_ledger'::regclass"))
    for table in ROLLUPS:
        heap, idx, rows = scalar(cluster, (
            f"SELECT pg_table_size('{table}'), pg_indexes_size('{table}'), count(*) FROM {table}")).split("|")
        out[table] = {"heap": int(heap), "indexes": int(idx), "rows": int(rows)}
    out["database"] = db_bytes(cluster)
    return out


def pg_cpu(cluster):
    """CPU seconds of the server: its live processes, and the backends that
    exited (the postmaster's reaped children, cutime and cstime)."""
    pid = cluster.pid()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(cpu_secs(p) for p in tree(pid)) + (int(fields[13]) + int(fields[14])) / CLOCK_TICKS


def machine_busy():
    """CPU seconds every process on the machine used, from /proc/stat."""
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    return (sum(cpu) - cpu[3] - cpu[4]) / CLOCK_TICKS


def write_run(args, cluster, writers, batch, fold, binary=None):
    """One writer run, with the CPU PostgreSQL, the client and everything
    else on the machine used during it. `fold`: "beside" (the fold every
    second while the writers run, as a gateway runs it) or "after" (the
    writers alone, the queue folded once they stop). `binary`: another
    build's ledger_bench instead of --client."""
    pg0, busy0 = pg_cpu(cluster), machine_busy()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = client(args, cluster, "write", writers, batch, args.write_secs, fold, binary=binary)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["pg_cpu_secs"] = pg_cpu(cluster) - pg0
    out["client_cpu_secs"] = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    out["other_cpu_secs"] = max(0.0, machine_busy() - busy0 - out["pg_cpu_secs"] - out["client_cpu_secs"])
    return out


def client(args, cluster, *argv, explain=False, binary=None):
    env = dict(os.environ)
    if explain:
        env["OBLETH_BENCH_EXPLAIN"] = "1"
    out = subprocess.run([binary or args.client, cluster.url(DB), *map(str, argv)], capture_output=True,
                         text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"ledger_bench {' '.join(map(str, argv))} failed:\n{out.stdout}{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def explain(args, cluster, hot, cold):
    """One call of every read with auto_explain on: the plans PostgreSQL
    chose for the real statements, from the server's log."""
    with open(cluster.log, "rb") as f:
        f.seek(0, os.SEEK_END)
        offset = f.tell()
    client(args, cluster, "totals", hot, 0, explain=True)
    client(args, cluster, "list", hot, 0, explain=True)
    client(args, cluster, "list", cold, 0, explain=True)
    client(args, cluster, "budget", 1000, 0, explain=True)
    time.sleep(0.5)
    with open(cluster.log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return re.sub(r"^\S+ \S+ \S+ \[\d+\] ", "", text, flags=re.M)


def mb(n):
    return f"{n / (1 << 20):,.1f} MiB"


def gib(n):
    return f"{n / GB:,.2f} GiB"


def ms(x):
    """Milliseconds, or a dash for none (a run whose fold waited until
    after it: NaN in the client, null in its JSON)."""
    return "-" if x is None or x != x else f"{x:.1f}"


def met(ok):
    return "met" if ok else "**not met**"


def render(r):
    a = r["args"]
    s = r["sizes"]
    rows = r["verify"]["ledger_rows"]
    lines = [
        "# The partitioned usage ledger at scale (`bench/ledger`)",
        "",
        "Written by `bench/ledger` (`bench/harness/ledger.py`); see [README.md](README.md#the-usage-ledger-at-scale).",
        "Not part of CI.",
        "",
        f"- Date: {r['facts']['date']}; commit {r['facts']['commit']}",
        f"- Machine: {r['facts']['cpu']}, {r['facts']['nproc']} cores, {r['facts']['memory']} memory, "
        f"kernel {r['facts']['kernel']}; PostgreSQL {r['pg_version']} on the same machine, "
        "fsync, synchronous_commit and full_page_writes off (a throwaway server), shared_buffers 2GB, "
        "wal_level minimal, max_wal_size 2GB, other settings default (work_mem 4MB, JIT on)",
        f"- Parameters: {rows:,} rows (asked: {a['rows']}) over the last {a['days']} days, "
        f"{r['partitions_loaded']} daily partitions; {a['keys']:,} keys (key `floor({a['keys']} * r^3)`, "
        f"the busiest with about 4.6% of requests), {a['teams']} teams, 8 models, 3 providers, "
        "97% status 200; load in pieces of at most 1,000,000 rows, "
        f"{a['jobs']} days at once; reads {a['runs']} timed runs each after one warm-up; writers {a['writers']} "
        f"for {a['write_secs']} s each"
        + (f", each also with the build before (`--before-client`, {a['before_client']}), just before this build's"
           if a.get("before_client") else ""),
        "",
        "## The issue's targets",
        "",
        "| target | figure | |",
        "|---|---|---|",
    ]
    totals = r["totals"]["totals"]
    for t in totals:
        if t["case"].startswith("one key, 30 days") or "by key" in t["case"]:
            lines.append(f"| admin totals, {t['case']}: under {TARGET_MS:.0f} ms | "
                         f"median {t['timing']['median_ms']:.1f} ms, p95 {t['timing']['p95_ms']:.1f} ms | "
                         f"{met(t['timing']['p95_ms'] < TARGET_MS)} |")
    for fold, what in (("beside", "the fold beside it"), ("after", "the fold after it")):
        runs = [w for w in r["writes"] if w.get("fold", "beside") == fold and w.get("build") != "before"]
        if not runs:
            continue
        best = max(runs, key=lambda w: w["rows_per_sec"])
        lines.append(f"| writer's sustained rate, {what}, ≥ {TARGET_ROWS_PER_SEC:,} rows/s | best {best['rows_per_sec']:,.0f} rows/s "
                     f"({best['writers']} writers × {best['batch']:,}) | {met(best['rows_per_sec'] >= TARGET_ROWS_PER_SEC)} |")
    lines.append(f"| budget refresh cost | {r['budget']['many']['median_ms']:.2f} ms for {r['budget']['subjects']:,} "
                 f"subjects ({r['budget']['many']['median_ms'] * 1000 / r['budget']['subjects']:.1f} µs a subject), "
                 f"{r['budget']['one']['median_ms']:.2f} ms for one | (no target) |")
    lines.append(f"| bytes on disk a row | {s['ledger_total'] / rows:.0f} bytes in the ledger's partitions, "
                 f"{(s['ledger_total'] + sum(s[t]['heap'] + s[t]['indexes'] for t in ROLLUPS)) / rows:.0f} "
                 "with rollups and running totals | (no target) |")
    lines += [
        "",
        "## Load",
        "",
        f"- Probe: {PROBE_ROWS:,} rows in {r['probe']['secs']:.1f} s, {r['probe'].get('grown_per_row', 0):.0f} bytes a row "
        f"of database growth; {r['probe']['bytes_per_row']:.0f} bytes a row estimated (the ledger's partitions' bytes a row "
        f"and half again for the rollups); estimate for {rows:,} rows {gib(r['probe']['bytes_per_row'] * rows)}; "
        f"free disk before the load {gib(r['probe']['free'])}",
        f"- Load: {rows:,} rows in {r['load_secs']:,.0f} s = {rows / r['load_secs']:,.0f} rows/s, "
        "through the ledger's statement trigger (the rollup queue filled as the writer's "
        f"statements fill it), {a['jobs']} days at once",
        f"- Fold of the queue after the load (`obleth_fold_usage` until empty): {r['fold_after_load']['folded']:,} "
        f"queued groups in {r['fold_after_load']['ms'] / 1000:,.1f} s",
        f"- VACUUM (ANALYZE) of every partition, the rollups, the totals (and the rollup queue), then ANALYZE usage_ledger: {r['vacuum_secs']:,.0f} s",
        f"- Check: ledger rows {r['verify']['ledger_rows']:,} = rollup requests (hourly and both daily) {r['verify']['hourly_requests']:,}; "
        f"tokens {r['verify']['ledger_tokens']:,} = {r['verify']['hourly_tokens']:,}; keyed rows "
        f"{r['verify']['keyed_rows']:,} = running totals {r['verify']['totals_requests']:,}: "
        f"{'consistent' if r['verify']['ok'] else '**INCONSISTENT**'}",
        "",
        "## Admin totals (`db::usage::usage_totals`)",
        "",
        "Whole UTC days from a daily rollup (`usage_daily_keys` by key, `usage_daily_models` by model), "
        "the other whole hours from `usage_hourly`, partial hours from the ledger; key = the busiest key. "
        f"JIT off for these reads (`SET LOCAL`). "
        f"{a['runs']} runs after a warm-up.",
        "",
        "| case | groups | requests | median ms | p95 ms | max ms | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in totals:
        lines.append(f"| {t['case']} | {t['groups']:,} | {t['requests']:,} | {t['timing']['median_ms']:.1f} | "
                     f"{t['timing']['p95_ms']:.1f} | {t['timing']['max_ms']:.1f} | {met(t['timing']['p95_ms'] < TARGET_MS)} |")
    lines += [
        "",
        "## Raw records (`db::usage::list_usage`, one key, now-24h..now, pages of 100)",
        "",
        "| key | first page median ms | p95 | next page median ms | p95 |",
        "|---|---|---|---|---|",
    ]
    for name, l in (("busiest key", r["list_hot"]), ("a rare key (k = keys - 1)", r["list_cold"])):
        lines.append(f"| {name} ({l['rows']} rows) | {l['first_page']['median_ms']:.1f} | {l['first_page']['p95_ms']:.1f} | "
                     f"{l['second_page']['median_ms']:.1f} | {l['second_page']['p95_ms']:.1f} |")
    b = r["budget"]
    lines += [
        "",
        "## Budget refresh (`db::usage::periods_totals`)",
        "",
        f"- {b['subjects']:,} subjects (keys, every tenth a team; day, week, month and total periods), one query: "
        f"median {b['many']['median_ms']:.2f} ms, p95 {b['many']['p95_ms']:.2f} ms "
        f"({b['many']['median_ms'] * 1000 / b['subjects']:.1f} µs a subject; {b['with_usage']:,} with usage)",
        f"- One subject: median {b['one']['median_ms']:.2f} ms, p95 {b['one']['p95_ms']:.2f} ms",
        "",
        "## Writer (`db::usage::insert_usage`, into today's partition, the rollup queue's trigger on)",
        "",
        "| build | writers | rows a call | fold | rows/s | calls | call median ms | call p95 ms | call max ms | "
        "PostgreSQL CPU µs a row | client CPU µs a row | other processes' CPU, cores | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in r["writes"]:
        cpu = (f"{w['pg_cpu_secs'] * 1e6 / max(1, w['rows']):.0f} | {w['client_cpu_secs'] * 1e6 / max(1, w['rows']):.0f} | "
               f"{w['other_cpu_secs'] / w['secs']:.2f}") if "pg_cpu_secs" in w else "- | - | -"
        target = "(before)" if w.get("build") == "before" else met(w["rows_per_sec"] >= TARGET_ROWS_PER_SEC)
        lines.append(f"| {w.get('build', 'this')} | {w['writers']} | {w['batch']:,} | {w.get('fold', 'beside')} | "
                     f"{w['rows_per_sec']:,.0f} | {w['calls']:,} | "
                     f"{w['call_median_ms']:.1f} | {w['call_p95_ms']:.1f} | {w['call_max_ms']:.1f} | {cpu} | {target} |")
    if any("folds" in w for w in r["writes"]):
        lines += ["", "The rollup fold beside the writers (one task, every second, as each gateway runs it; "
                  "its PostgreSQL CPU is in the table's) or not until they stop (after), and the rest of the "
                  "queue folded after them (drain; not in the writers' rows/s):", "",
                  "| build | writers | rows a call | fold | folds | groups folded | fold median ms | fold max ms | "
                  "queued at the end | drained groups | drain ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for w in r["writes"]:
            lines.append(f"| {w.get('build', 'this')} | {w['writers']} | {w['batch']:,} | {w.get('fold', 'beside')} | {w['folds']} | {w['folded_groups']:,} | "
                         f"{ms(w['fold_median_ms'])} | {ms(w['fold_max_ms'])} | {w['queued_at_end']:,} | "
                         f"{w['drained_groups']:,} | {w['drain_ms']:.0f} |")
    va = r["verify_after_writes"]
    lines.append(f"\nAfter the writer runs: ledger rows {va['ledger_rows']:,}, rollup requests {va['hourly_requests']:,}, "
                 f"running totals {va['totals_requests']:,} of {va['keyed_rows']:,} keyed rows: "
                 f"{'consistent' if va['ok'] else '**INCONSISTENT**'}.")
    lines += [
        "",
        "The client (Rust, the same tokio runtime the gateway uses, 2 threads) makes the records and runs "
        "on the same cores as PostgreSQL.",
        "",
        "## Bytes on disk (before the writer runs)",
        "",
        "| what | bytes | a ledger row |",
        "|---|---|---|",
        f"| ledger partitions, all (`pg_total_relation_size`) | {mb(s['ledger_total'])} | {s['ledger_total'] / rows:.1f} |",
        f"| ledger heap (with toast, FSM, VM) | {mb(s['ledger_heap'])} | {s['ledger_heap'] / rows:.1f} |",
    ]
    for name, size in s["ledger_indexes"].items():
        lines.append(f"| index {name} | {mb(size)} | {size / rows:.1f} |")
    for table in ROLLUPS:
        t = s[table]
        lines.append(f"| {table} heap ({t['rows']:,} rows) | {mb(t['heap'])} | {t['heap'] / rows:.1f} |")
        lines.append(f"| {table} indexes | {mb(t['indexes'])} | {t['indexes'] / rows:.1f} |")
    lines.append(f"| the whole database | {mb(s['database'])} | {s['database'] / rows:.1f} |")
    lines += ["", "The plans of every read, from auto_explain, are in [LEDGER.plans.txt](LEDGER.plans.txt).", ""]
    return "\n".join(lines)


def write_report(path, text):
    kept = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if NOTES_MARK in old:
            kept = old[old.index(NOTES_MARK) + len(NOTES_MARK):]
    with open(path, "w") as f:
        f.write(text + "\n" + NOTES_MARK + (kept if kept else "\n"))


def parse_rows(text):
    if text == "fit":
        return text
    n = int(text.replace("_", "").replace(",", ""))
    if n < PROBE_ROWS:
        raise argparse.ArgumentTypeError(f"at least {PROBE_ROWS:,} rows")
    return n


def main():
    p = argparse.ArgumentParser(prog="bench/ledger", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--migrator", required=True, help="the obleth-migrator binary")
    p.add_argument("--client", required=True, help="the ledger_bench example binary")
    p.add_argument("--before-client", help="the ledger_bench of an earlier build: each writer run is made "
                   "with it too, just before this build's, for a same-run comparison")
    p.add_argument("--rows", type=parse_rows, default=100_000_000,
                   help="rows to load, or 'fit': the most the free disk allows (default 100,000,000)")
    p.add_argument("--days", type=int, default=30, help="days the rows cover, ending now (default 30)")
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--teams", type=int, default=100)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="days loaded at once (default: cores)")
    p.add_argument("--runs", type=int, default=20, help="timed runs of every read (default 20)")
    p.add_argument("--writers", default="4x500,4x5000,8x5000,8x5000:after",
                   help="writer runs, WRITERSxBATCH[:beside|:after], the fold beside the writers "
                        "(default) or after them (default 4x500,4x5000,8x5000,8x5000:after)")
    p.add_argument("--write-secs", type=int, default=30)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "LEDGER.md"))
    p.add_argument("--json", help="also write the raw figures here")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL data directory (and print it)")
    args = p.parse_args()
    for b in (args.migrator, args.client):
        if not os.access(b, os.X_OK):
            p.error(f"{b} not found or not executable")
    writers = []
    for w in filter(None, args.writers.split(",")):
        spec, _, fold = w.partition(":")
        n, batch = (int(x) for x in spec.split("x"))
        if fold not in ("", "beside", "after"):
            p.error(f"--writers {w}: the fold is beside or after, not {fold}")
        writers.append((n, batch, fold or "beside"))

    bench_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    repo = os.path.dirname(bench_dir)
    commit = sh(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo)
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    mem = next((l for l in sh(["free", "-h"]).splitlines() if l.startswith("Mem:")), "").split()
    r = {"args": {**vars(args), "rows": str(args.rows)},
         "facts": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "commit": commit + (" (with uncommitted changes)" if dirty else ""),
                   "nproc": sh(["nproc"]), "memory": mem[1] if len(mem) > 1 else "unknown",
                   "kernel": sh(["uname", "-r"]), "cpu": cpu_model()}}
    cluster = Cluster()
    try:
        log(f"PostgreSQL in {cluster.dir} ({'kept' if args.keep else 'deleted'} at the end)")
        cluster.start(SERVER_CONF)
        r["pg_version"] = cluster.pg_version
        url = cluster.create_database(DB)
        obleth_db.migrate(args.migrator, url)
        cluster.psql(DB, keys_sql(args.keys, args.teams))
        end = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        start = end - datetime.timedelta(days=args.days)

        log(f"probe: {PROBE_ROWS:,} rows")
        before = db_bytes(cluster)
        probe_secs, _ = load(cluster, start, end, PROBE_ROWS, args.keys, args.jobs)
        cluster.psql(DB, "CHECKPOINT")
        grown = (db_bytes(cluster) - before) / PROBE_ROWS
        ledger_row = int(scalar(cluster, "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                                         "WHERE inhparent = 'usage_ledger'::regclass")) / PROBE_ROWS
        # At 1M rows the rollups hold about a row for every ledger row; at
        # scale they compress (0.38 hourly rows a ledger row at 20M) and took
        # 39% of the ledger's bytes at 20M. The estimate: the ledger's bytes
        # a row plus half again for the rollups, and never more than the
        # probe's whole growth a row.
        per_row = min(grown, ledger_row * 1.5)
        cluster.psql(DB, f"TRUNCATE usage_ledger, {', '.join(ROLLUPS)}, usage_rollup_queue; CHECKPOINT")
        free = free_bytes(cluster.dir)
        if args.rows == "fit":
            rows = int((free - MARGIN) / per_row) // PROBE_ROWS * PROBE_ROWS
            if rows < PROBE_ROWS:
                raise SystemExit(f"bench/ledger: {gib(free)} free on the disk of {cluster.dir}, less than "
                                 f"{PROBE_ROWS:,} rows need ({per_row:.0f} bytes a row) plus the {gib(MARGIN)} margin")
            log(f"--rows fit: {rows:,} rows fit in {gib(free)} free ({per_row:.0f} bytes a row, {gib(MARGIN)} margin)")
        else:
            rows = args.rows
            need = per_row * rows + MARGIN
            if free < need:
                fit = int((free - MARGIN) / per_row) // PROBE_ROWS * PROBE_ROWS
                raise SystemExit(
                    f"bench/ledger: refusing to load {rows:,} rows: at {per_row:.0f} bytes a row (from a "
                    f"{PROBE_ROWS:,}-row probe) they need about {gib(per_row * rows)} plus a {gib(MARGIN)} margin "
                    f"(WAL, temporary files, builds), {gib(need)} in all, and {gib(free)} are free on the disk "
                    f"of {cluster.dir}. Free some space, or pass --rows {max(fit, 0):,} (--rows fit picks it).")
        r["probe"] = {"secs": probe_secs, "bytes_per_row": per_row, "grown_per_row": grown, "free": free}

        log(f"loading {rows:,} rows over {args.days} days, {args.jobs} days at once")
        r["load_secs"], days = load(cluster, start, end, rows, args.keys, args.jobs)
        r["partitions_loaded"] = len(days)
        r["load_days"] = [(str(d), n, s) for d, n, s in days]
        log(f"loaded in {r['load_secs']:.0f} s; folding the rollup queue")
        r["fold_after_load"] = client(args, cluster, "fold")
        log(f"folded {r['fold_after_load']['folded']:,} queued groups in {r['fold_after_load']['ms']:.0f} ms; checking the rollups")
        r["verify"] = verify(cluster)
        log(f"check: {r['verify']}")
        log("VACUUM (ANALYZE)")
        r["vacuum_secs"] = vacuum(cluster, args.jobs)
        r["sizes"] = sizes(cluster)
        log(f"sizes: {r['sizes']}")

        hot = scalar(cluster, "SELECT key_id FROM bench_keys WHERE k = 0")
        cold = scalar(cluster, f"SELECT key_id FROM bench_keys WHERE k = {args.keys - 1}")
        log("admin totals")
        r["totals"] = client(args, cluster, "totals", hot, args.runs)
        log("raw records")
        r["list_hot"] = client(args, cluster, "list", hot, args.runs)
        r["list_cold"] = client(args, cluster, "list", cold, args.runs)
        log("budget refresh")
        r["budget"] = client(args, cluster, "budget", 1000, args.runs)
        log("plans")
        plans = explain(args, cluster, hot, cold)
        with open(os.path.join(os.path.dirname(args.out), "LEDGER.plans.txt"), "w") as f:
            f.write(f"# auto_explain of every read of bench/ledger, {rows:,} rows, {r['facts']['date']}\n\n{plans}")
        r["writes"] = []
        for n, batch, fold in writers:
            log(f"writer: {n} writers x {batch} rows for {args.write_secs} s, fold {fold}")
            if args.before_client:
                # The earlier build first, then this one, run after run: the
                # same data and the same moment, for a ratio.
                r["writes"].append(dict(write_run(args, cluster, n, batch, fold, args.before_client),
                                        build="before"))
                log(f"  before: {r['writes'][-1]['rows_per_sec']:,.0f} rows/s")
            r["writes"].append(dict(write_run(args, cluster, n, batch, fold), build="this"))
            log(f"  {r['writes'][-1]['rows_per_sec']:,.0f} rows/s")
        r["verify_after_writes"] = verify(cluster)
        # The raw figures first: a report that fails to render loses nothing.
        raw = args.json or os.path.join(os.path.dirname(args.out), "LEDGER.json")
        with open(raw, "w") as f:
            json.dump(r, f, indent=2, default=str)
        log(f"wrote {raw}")
        write_report(args.out, render(r))
        log(f"wrote {args.out}")
    finally:
        if args.keep:
            cluster.psql("postgres", "SELECT 1")
            log(f"kept {cluster.dir} (port {cluster.port}); stop it with pg_ctl stop -D {cluster.data}")
        else:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
