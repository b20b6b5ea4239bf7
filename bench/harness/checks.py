"""The "Must show" targets of issue 12, each judged from one run's results:
a row of what was asked, what this build measured, what the build before
measured (with --before), and whether the target was met."""

from stream import percentile

MET, NOT_MET, NOT_MEASURED = "met", "**not met**", "not measured"
# 300 MB read strictly as 300 * 10^6 bytes (286.1 MiB).
RSS_LIMIT_BYTES = 300e6
READY_LIMIT_SECS = 2.0
TTFT_SLACK_MS = 0.2
KEYS_1M = 1_000_000


def _ratio_check(tp, name, floor):
    x, n = tp.get(name), tp.get("nginx")
    if not x or not n or not n.get("rps"):
        return None, None
    v = x["rps"] / n["rps"]
    return v >= floor, f"{v:.2f}x ({x['rps']:,.0f} against {n['rps']:,.0f} req/s)"


def _cpu_check(tp, name):
    x, n = tp.get(name), tp.get("nginx")
    if not x or not n or x.get("cpu_us") is None or n.get("cpu_us") is None:
        return None, None
    text = f"{x['cpu_us']:.1f} µs against {n['cpu_us']:.1f} µs ({x['cpu_us'] / n['cpu_us']:.2f}x)"
    if x.get("pg_cpu_us") is not None and name.startswith("db"):
        text += f"; PostgreSQL {x['pg_cpu_us']:.1f} µs more"
    return x["cpu_us"] <= n["cpu_us"], text


def added_p99(rows, name):
    """The target's p99 minus direct's at the same rate, in ms."""
    x, d = rows.get(name), rows.get("direct")
    if not x or not d or x.get("p99_ms") is None or d.get("p99_ms") is None:
        return None
    return x["p99_ms"] - d["p99_ms"]


def _p99_check(lat, rate, name):
    rows = lat.get(str(rate), {})
    mine, theirs = added_p99(rows, name), added_p99(rows, "nginx")
    if mine is None or theirs is None:
        return None, None
    ok = mine <= theirs and rows[name]["sustained"]
    text = f"{mine:+.3f} ms against nginx's {theirs:+.3f} ms"
    if not rows[name]["sustained"]:
        text += f"; rate not sustained ({rows[name]['achieved_rps']:,.0f} req/s 2xx)"
    return ok, text


def _ttft_check(tt, name):
    x, n = tt.get(name), tt.get("nginx")
    if not x or not n or "error" in x or "error" in n:
        return None, None
    mine, theirs = percentile(x["ttft_ms"], 50), percentile(n["ttft_ms"], 50)
    d = mine - theirs
    return d <= TTFT_SLACK_MS, f"p50 {mine:.2f} ms against nginx's {theirs:.2f} ms ({d:+.2f} ms)"


def _keys_row(warm, build):
    rows = (warm or {}).get(build) or []
    return next((x for x in rows if x["keys"] == KEYS_1M), None)


def _ready_check(warm, build):
    x = _keys_row(warm, build)
    if not x or x.get("ready_secs") is None:
        return None, None
    text = f"{x['ready_secs']:.2f} s spawn to ready"
    if x.get("warmup_secs") is not None:
        text += f" (warm-up {x['warmup_secs']:.2f} s)"
    return x["ready_secs"] <= READY_LIMIT_SECS, text


def _rss_check(warm, build):
    x = _keys_row(warm, build)
    if not x or not x.get("rss_kib"):
        return None, None
    b = x["rss_kib"] * 1024
    return b <= RSS_LIMIT_BYTES, f"{b / 1e6:,.0f} MB ({x['rss_kib'] / 1024:,.1f} MiB) VmRSS"


def verdict(ok):
    return NOT_MEASURED if ok is None else (MET if ok else NOT_MET)


def must_show(r):
    """Rows of [target, this build, verdict, before], from results `r`."""
    tp, lat, tt = r.get("throughput", {}), r.get("latency", {}), r.get("ttft", {})
    warm = r.get("warmup") or {}
    rows = []

    def add(what, check, name_after, name_before):
        ok, text = check(name_after)
        _, before = check(name_before)
        rows.append([what, text or "n/a", verdict(ok), before or "n/a"])

    add("closed-loop throughput, embedded ≥ 1.0x nginx", lambda n: _ratio_check(tp, n, 1.0),
        "embedded", "embedded-before")
    add("closed-loop throughput, PostgreSQL mode ≥ 0.9x nginx", lambda n: _ratio_check(tp, n, 0.9),
        "db", "db-before")
    add("CPU a request ≤ nginx's, embedded", lambda n: _cpu_check(tp, n), "embedded", "embedded-before")
    add("CPU a request ≤ nginx's, PostgreSQL mode (the gateway's own processes)",
        lambda n: _cpu_check(tp, n), "db", "db-before")
    for rate in sorted(int(k) for k in lat):
        for mode, label in (("embedded", "embedded"), ("db", "PostgreSQL mode")):
            add(f"added p99 at {rate:,} req/s ≤ nginx's, {label}", lambda n, rate=rate: _p99_check(lat, rate, n),
                mode, f"{mode}-before")
    add(f"time to first token within {TTFT_SLACK_MS} ms of nginx, embedded", lambda n: _ttft_check(tt, n),
        "embedded", "embedded-before")
    add(f"time to first token within {TTFT_SLACK_MS} ms of nginx, PostgreSQL mode",
        lambda n: _ttft_check(tt, n), "db", "db-before")
    add(f"1M keys ready ≤ {READY_LIMIT_SECS:.0f} s", lambda b: _ready_check(warm, b), "after", "before")
    add("1M keys in ≤ 300 MB", lambda b: _rss_check(warm, b), "after", "before")
    return rows
