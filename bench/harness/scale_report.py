"""Renders one bench/scale run as bench/SCALE.md: a table a curve, with the
set-up each used and the machine it ran on."""

from report import mib, ms, short_wrk, table

LABELS = {"upstream": "nginx return 200, direct", "direct": "nginx return 200, direct", "nginx": "nginx reverse proxy", "obleth": "obleth, embedded",
          "obleth-before": "obleth before, embedded"}


BUILDS = {"obleth": "this build", "obleth-before": "build before"}


def name(n):
    return LABELS.get(n, n)


def render(r):
    f, args = r["facts"], r["args"]
    parts = [
        "# obleth scale curves\n",
        f"Written by `bench/scale` on {f['date']} at commit `{f['commit']}`; every figure comes from that "
        "one run ([README.md](README.md#scale-curves) says how each is measured). Everything, the load "
        f"generator included, shares this machine's {f['nproc']} cores: read each curve as what the next "
        "step costs here, not as what more machines would give.\n",
        table(["", ""], [
            ["CPU", f"{f['cpu']}, `nproc` = {f['nproc']}"],
            ["memory (`free -h`)", f["memory"]],
            ["kernel", f["kernel"]],
            ["open-file limit (soft, raised to the hard one)", f"{r['fd_limit']:,}"],
            ["tools", f"{f['nginx']}; {short_wrk(f['wrk'])}; {f['python']}"],
        ]),
    ]
    parts.append(table(["build", "obleth-gateway", "--version", "SHA-256 (first 12)", "modified"],
                       [[BUILDS.get(n, n), f"`{b['gateway']}`", b["version"], f"`{b['sha256']}`", b["built"]]
                        for n, b in r["builds"].items()]))
    if r.get("connections"):
        parts.append(connections(r["connections"], args))
    if r.get("streams"):
        parts.append(streams(r["streams"]))
    if r.get("haproxy"):
        parts.append(haproxy(r["haproxy"], args))
    if r.get("keys"):
        parts.append(keys(r["keys"]))
    return "\n".join(parts)


def connections(c, args):
    rows = [[name(x["target"]), f"{x['connections']:,}", f"{x['rps']:,.0f}", ms(x["p50_ms"]), ms(x["p99_ms"]),
             ms(x.get("cpu_us"), 1), mib(x.get("rss_kib")), x["non_2xx"], x["socket_errors"]] for x in c["rows"]]
    return ("## Latency against concurrent connections\n\n"
            f"Closed loop: `wrk -t2 -c N -d{args['duration']}s` (`-t1` for one connection) after a 2 s "
            "warm-up, every target in front of nginx `return 200`. Each connection sends its next request as "
            "soon as the last is answered, so latency grows with the queue: compare targets at the same N. "
            "For 10,000 connections the harness raises the soft open-file limit to the hard one, gives nginx "
            "`worker_connections` and `worker_rlimit_nofile` to match, and starts obleth with "
            f"`server.max_connections = {c['gateway_max_connections']:,}` "
            "(`OBLETH_SERVER__MAX_CONNECTIONS`; the default, 10,000, is exactly the count, and wrk's "
            "reconnects would be refused) and `server.ops_max_connections = 64`; the gateway lowers both to "
            "fit the open-file limit less 256 and logs it if they do not. Its connections to the upstream "
            "count against the same limit. Memory is VmRSS after the run. wrk opens its connections when "
            "it starts, so at 10,000 the run includes establishing them: keep `--duration` well above "
            "the seconds that takes.\n\n"
            + table(["target", "connections", "req/s", "p50 ms", "p99 ms", "CPU µs a request", "VmRSS MiB",
                     "non-2xx", "socket errors"], rows))


def slope(rows, x):
    """KiB a stream between the smaller count's row of the same target and
    this one: the cost of one more stream, without the fixed start-up part."""
    low = [y for y in rows if y["target"] == x["target"] and y["opened"] < x["opened"]]
    if not low:
        return "-"
    y = max(low, key=lambda y: y["opened"])
    return f"{(x['rss_kib'] - y['rss_kib']) / (x['opened'] - y['opened']):.1f}"


def streams(s):
    rows = []
    for x in s["rows"]:
        held = x["rss_kib"] - x["idle_kib"]
        per = "n/a" if not x["opened"] else f"{held / x['opened']:.1f}"
        errors = "; ".join(f"{k} ×{v}" for k, v in x["errors"].items()) or "-"
        rows.append([name(x["target"]), f"{x['streams']:,}", f"{x['opened']:,}", f"{x['open_at_sample']:,}",
                     mib(x["idle_kib"]), mib(x["rss_kib"]), mib(held), per, slope(s["rows"], x),
                     ms(x["open_secs"], 1),
                     mib(x["mock_rss_kib"]), errors])
    note = ""
    if s["measured"] < s["asked"]:
        note = (f" **{s['asked']:,} streams were asked for; {s['measured']:,} were held**: each stream holds two "
                f"descriptors in the proxy (its client and its upstream connection), and the hard open-file "
                f"limit here is {s['fd_limit']:,} (`ulimit -Hn`; raising it needs CAP_SYS_RESOURCE outside "
                "this container). The per-stream figure scales the rest.")
    return ("## Memory of concurrent open streams\n\n"
            "One asyncio client (bench/harness/streams.py) opens N connections, at most 256 connecting at "
            "once, each sending one streamed chat completion without `max_tokens`, and reads until its first "
            "token; the mock (obleth-mock-upstream) sends one token every "
            f"{s['token_delay_ms']:,} ms, {s['tokens']} in all, so every stream stays open. Once all are "
            "open (or the opening time limit passed), 1 s later, VmRSS of the target's processes is read; "
            "then every connection is dropped. Each row is a fresh target and mock. KiB a stream is held "
            "memory (VmRSS over idle) over the streams open; KiB a stream more is the slope from the "
            "target's smaller count, without the fixed part (buffers and pools that grow once)."
            f"{note}\n\n"
            + table(["target", "streams asked", "opened", "open at the reading", "idle MiB", "VmRSS MiB",
                     "held MiB", "KiB a stream", "KiB a stream more", "opening s", "mock MiB", "errors"], rows))


def haproxy(h, args):
    if h.get("skipped"):
        return f"## Throughput behind HAProxy\n\nNot measured: {h['skipped']}.\n"
    rows = []
    for x in h["rows"]:
        who = "none: HAProxy to the upstream" if x["gateways"] == 0 else f"{x['gateways']} × {name(x['target'])}"
        rows.append([who, f"{x['rps']:,.0f}", ms(x["p50_ms"]), ms(x["p99_ms"]), ms(x["gateway_cpu_us"], 1),
                     ms(x["haproxy_cpu_us"], 1), x["non_2xx"], x["socket_errors"]])
    return ("## Throughput behind HAProxy\n\n"
            f"HAProxy (`balance roundrobin`, `http-reuse always`, a `/readyz` check of each gateway) in front "
            "of 1, 2 and 3 embedded gateways, all forwarding to one nginx `return 200`; `wrk -t2 -c64 "
            f"-d{args['duration']}s` after a 2 s warm-up. The first row is HAProxy straight to the upstream: "
            "its own cost. Every process shares the same cores, so more gateways cannot add throughput "
            "here; the curve shows what a gateway more costs (CPU a request summed over the gateways).\n\n"
            + table(["gateways", "req/s", "p50 ms", "p99 ms", "gateways' CPU µs a request",
                     "HAProxy CPU µs a request", "non-2xx", "socket errors"], rows))


def keys(k):
    out = ["## Memory and warm-up against keys\n\n"
           f"Measured by {k['source']}. A PostgreSQL-mode gateway (PostgreSQL {k.get('postgres', 'n/a')}, "
           "a throwaway server on the same machine) started over N keys, `cache.max_keys` above the "
           "largest N. Warm-up is the gateway's own `obleth_key_cache_warmup_seconds`; ready is spawn to "
           "`/readyz` 200; VmRSS 2 s after ready.\n"]
    for build, rows in k["builds"].items():
        base = next((x["rss_kib"] for x in rows if x["keys"] == 0), None)
        t = []
        for x in rows:
            if x["keys"] == 0:
                continue
            extra = None if base is None else x["rss_kib"] - base
            t.append([f"{x['keys']:,}", ms(x.get("warmup_secs")), ms(x.get("ready_secs")), mib(x["rss_kib"]),
                      "n/a" if extra is None else f"{extra * 1024 / x['keys']:.0f}"])
        out.append(f"{BUILDS.get(build, build)} (over no keys: {mib(base)} MiB):\n\n"
                   + table(["keys", "warm-up s", "spawn to ready s", "VmRSS MiB", "bytes a key"], t))
    return "\n".join(out)
