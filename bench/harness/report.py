"""Renders one run's results as bench/RESULTS.md: tables with ratios, the
machine and tool facts, then the hand-written findings (bench/FINDINGS.md)."""

import os

from checks import must_show
from stream import percentile
from upstream import DESCRIPTION

BENCH_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def ms(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def signed(v, digits=2):
    return "n/a" if v is None else f"{v:+.{digits}f}"


def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def mib(kib):
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def short_wrk(version):
    """`wrk debian/4.1.0-3+b2 [epoll] Copyright ...` as `wrk 4.1.0-3+b2`."""
    words = version.split()
    return f"wrk {words[1].split('/')[-1]}" if len(words) > 1 else version


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def normalise(r):
    """Results of runs from before --before and --upstream read as today's."""
    r = dict(r)
    r.setdefault("upstream", {})
    for section in ("throughput", "latency", "memory", "ttft"):
        r["upstream"].setdefault(section, "mock")
    r.setdefault("floor", {})
    r.setdefault("builds", {})
    if isinstance(r.get("warmup"), list):
        r["warmup"] = {"after": r["warmup"]}
    if r.get("revoke") and "replicas" in r["revoke"]:
        r["revoke"] = {"after": r["revoke"]}
    if r.get("db_usage") and not r.get("db_usage_by_target"):
        r["db_usage_by_target"] = {"db": r["db_usage"]}
    return r


def upstream_line(r, section):
    kind = r["upstream"].get(section, "mock")
    return f"Upstream: {DESCRIPTION[kind]}; `direct` is that upstream called directly."


def render(r):
    r = normalise(r)
    f, args = r["facts"], r["args"]
    names = [n for n in r["targets"] if n in r["throughput"] or n in r["ttft"]]
    label = {n: r["targets"][n]["label"] for n in names}
    secs = args["duration"]
    parts = [
        "# obleth benchmark results\n",
        f"Written by `bench/run` on {f['date']} at commit `{f['commit']}`. Every figure comes from "
        "that one run; [README.md](README.md) says how each is measured and how to run it again.\n",
        "**Read ratios, not absolute figures.** The load generator (wrk, oha or the harness's Python "
        f"clients), the upstream, the target and, in PostgreSQL mode, PostgreSQL all share the "
        f"machine's {f['nproc']} cores. Figures from different runs or machines do not compare; "
        "ratios within one run do.\n",
        "## Machine\n",
        table(["", ""], [
            ["CPU", f"{f['cpu']}, `nproc` = {f['nproc']}"],
            ["memory (`free -h`)", f["memory"]],
            ["kernel (`uname -r`)", f["kernel"]],
            ["date", f["date"]],
            ["commit", f"`{f['commit']}`"],
            ["tools", f"{f['rustc']}; {f['nginx']}; {short_wrk(f['wrk'])}; {f['oha']}; "
                      f"PostgreSQL {f.get('postgres', 'n/a')}; node {f['node']}; {f['python']}"],
        ]),
    ]
    if r["builds"]:
        parts.append(builds(r["builds"]))
    parts += [
        "## Targets\n",
        table(["target", "name below", "set-up"], [[label[n], f"`{n}`", r["targets"][n]["note"] or "-"]
                                                   for n in names if n != "direct"]),
        upstreams(r),
        "PostgreSQL, for the PostgreSQL-mode targets and for the warm-up and revocation runs, is a "
        "throwaway server on the same machine with `fsync`, `synchronous_commit` and `full_page_writes` "
        "off.\n",
    ]
    if r["skipped"]:
        parts.append("Not measured: " + "; ".join(f"`{k}`: {v}" for k, v in r["skipped"].items()) + ".\n")
    parts.append(targets_met(r))
    parts.append(throughput(r, names, label, secs))
    for rate, rows in r["latency"].items():
        parts.append(latency(rate, rows, names, label, secs, upstream_line(r, "latency")))
    parts.append(ttft(r, names, label, args))
    parts.append(memory(r, names, label))
    if r.get("self_overhead"):
        parts.append(self_overhead(r["self_overhead"], label))
    if r.get("db_usage_by_target"):
        parts.append(usage(r["db_usage_by_target"], label))
    for build, rows in (r.get("warmup") or {}).items():
        parts.append(warmup(rows, build_title(r, build)))
    for build, v in (r.get("revoke") or {}).items():
        parts.append(revocation(v, build_title(r, build)))
    findings = os.path.join(BENCH_DIR, "FINDINGS.md")
    if os.path.exists(findings):
        with open(findings) as fh:
            parts.append(fh.read())
    return "\n".join(parts)


def build_title(r, build):
    """How a warm-up or revocation heading names the build: nothing with one
    build; ', this build' or ', build before', with the start of its SHA-256."""
    if len(r["builds"]) < 2:
        return ""
    sha = r["builds"].get(build, {}).get("sha256")
    return (", this build" if build == "after" else f", build {build}") + (f" (`{sha}`)" if sha else "")


def builds(bs):
    rows = []
    for name, b in bs.items():
        rows.append([name if name != "after" else "this build (after)", f"`{b['gateway']}`", b["version"],
                     f"`{b['sha256']}`", b["built"], b.get("note") or "-"])
    return ("## Builds\n\n"
            "The obleth builds measured. Targets named `-before` run the build before; the others run "
            "this one.\n\n"
            + table(["build", "obleth-gateway", "--version", "SHA-256 (first 12)", "modified", "note"], rows))


def upstreams(r):
    rows = []
    for section, title in (("throughput", "maximum throughput"), ("latency", "latency at fixed rates"),
                           ("memory", "memory"), ("ttft", "time to first token")):
        kind = r["upstream"].get(section, "mock")
        rows.append([title, DESCRIPTION[kind]])
    delay = r["args"].get("token_delay_ms")
    return ("Every target forwards `POST /v1/chat/completions` to one upstream on this machine; which "
            "one depends on the section. nginx's `return 200` costs far less than any gateway, so the "
            "throughput and latency figures show the gateway's own cost; the mock streams one token every "
            f"{delay} ms, which nginx cannot, so time to first token uses it.\n\n"
            + table(["section", "upstream (also the `direct` floor)"], rows))


def targets_met(r):
    return ("## The issue's targets\n\n"
            "Issue 12's \"Must show\" list, each judged from the figures below. CPU a request counts the "
            "target's own processes; added p99 is the target's p99 minus `direct`'s at the same rate, and a "
            "rate not sustained is not met; time to first token compares p50s; the 1M-key rows are the "
            "warm-up runs' (300 MB read as 300 × 10⁶ bytes). Where a target is not met, "
            "[FINDINGS.md](FINDINGS.md) says why and what would close it.\n\n"
            + table(["target", "this build", "verdict", "build before"], must_show(r)))


def throughput(r, names, label, secs):
    t = r["throughput"]
    direct, nginx = t["direct"]["rps"], t.get("nginx", {}).get("rps")
    nginx_cpu = t.get("nginx", {}).get("cpu_us")
    rows = []
    for n in names:
        x = t.get(n)
        if x is None:
            continue
        cpu = ms(x.get("cpu_us"), 1)
        if n.startswith("db") and x.get("pg_cpu_us") is not None:
            cpu += f" (+ PostgreSQL {x['pg_cpu_us']:.1f})"
        before = t.get(f"{n}-before", {}).get("rps")
        rows.append([label[n], f"{x['rps']:,.0f}", ratio(x["rps"], direct), ratio(x["rps"], nginx), cpu,
                     ratio(x.get("cpu_us"), nginx_cpu), ratio(x["rps"], before),
                     ms(x["p50_ms"]), ms(x["p99_ms"]), x["non_2xx"], x["socket_errors"]])
    return ("## Maximum throughput\n\n"
            f"Closed loop: `wrk -t2 -c32 -d{secs}s`, after a 2 s warm-up. {upstream_line(r, 'throughput')} "
            "req/s counts 2xx answers only. CPU a request is the user and system time the target's own "
            "processes (not the upstream's, not wrk's) used during the run, from `/proc/PID/stat`, divided "
            "by the requests: the cost of a request, less bound to the shared cores than req/s. \"CPU of "
            "nginx\" is that cost over nginx reverse proxy's; \"of before\" is req/s over the build "
            "before's in the same mode.\n\n"
            + table(["target", "req/s", "of direct", "of nginx", "CPU µs a request", "CPU of nginx", "of before",
                     "p50 ms", "p99 ms", "non-2xx", "socket errors"], rows))


def latency(rate, rows, names, label, secs, upstream_text):
    d = rows["direct"]
    out = []
    for n in names:
        x = rows.get(n)
        if x is None:
            continue
        over = [None if x[k] is None or d[k] is None else x[k] - d[k] for k in ("p50_ms", "p99_ms", "p999_ms")]
        sustained = "yes" if x["sustained"] else f"**no**: {x['achieved_rps']:,.0f} req/s answered 2xx"
        if x["errors"] or x["non_2xx"]:
            sustained += f" ({x['non_2xx']} non-2xx, {x['errors']} errors)"
        out.append([label[n], ms(x["p50_ms"], 3), ms(x["p99_ms"], 3), ms(x["p999_ms"], 3),
                    signed(over[0], 3), signed(over[1], 3), signed(over[2], 3), sustained])
    return (f"## Latency at {int(rate):,} req/s\n\n"
            f"Open loop: `oha -q {rate} -z {secs}s -c 64 --latency-correction -w`; each latency counts from "
            f"when the request was due, so a target that falls behind shows its queue. {upstream_text} "
            "Overhead (the added latency) is the target's percentile minus direct's at the same "
            "percentile, in ms.\n\n"
            + table(["target", "p50 ms", "p99 ms", "p99.9 ms", "overhead p50", "overhead p99", "overhead p99.9",
                     "sustained the rate"], out))


def ttft(r, names, label, args):
    d = r["ttft"]["direct"]["ttft_ms"]
    rows = []
    for n in names:
        x = r["ttft"].get(n)
        if x is None:
            continue
        if "error" in x:
            rows.append([label[n], "failed", "", "", "", f"every streamed request failed: `{x['error']}`"])
            continue
        a, s = x["ttft_ms"], x["stream_ms"]
        rows.append([label[n], ms(percentile(a, 50)), ms(percentile(a, 99)),
                     signed(percentile(a, 50) - percentile(d, 50)), signed(percentile(a, 99) - percentile(d, 99)),
                     ms(percentile(s, 50))])
    return ("## Streaming: time to first token\n\n"
            f"{upstream_line(r, 'ttft')} {args['streams']} streamed chat completions per target, one at a time on a kept-alive connection "
            f"(`\"stream\": true, \"max_tokens\": 3`), after 5 unrecorded ones. The mock waits "
            f"{args['token_delay_ms']} ms before each token, so direct's first token arrives just after "
            f"{args['token_delay_ms']} ms; a target that buffers would add the whole stream.\n\n"
            + table(["target", "TTFT p50 ms", "TTFT p99 ms", "over direct p50", "over direct p99",
                     "whole stream p50 ms"], rows))


def memory(r, names, label):
    rows = [[label[n], mib(r["rss"][n].get("idle_kib")), mib(r["rss"][n].get("after_kib"))]
            for n in names if n in r["rss"]]
    return ("## Memory\n\n"
            f"{upstream_line(r, 'memory')} VmRSS from `/proc/PID/status`, summed over the process and its children (nginx's and "
            "LiteLLM's workers), in MiB: once started and ready, and after all the load runs above. "
            "PostgreSQL's memory is not counted in obleth's.\n\n"
            + table(["target", "idle MiB", "after load MiB"], rows))


def self_overhead(o, label):
    rows = [[label[n], f"{x['count']:,.0f}", ms(x["mean_us"], 1)] for n, x in o.items()]
    return ("## obleth's own view of its overhead\n\n"
            "The mean of `obleth_gateway_overhead_seconds` over the whole run: the time a successful "
            "request spent in the gateway itself, not waiting on the upstream. The overhead measured from "
            "outside also holds the extra hop's network and the extra process's CPU share.\n\n"
            + table(["target", "requests observed", "mean µs"], rows))


def usage(by_target, label):
    rows = [[label.get(n, n), f"{u['requests_total']:,.0f}" if u["requests_total"] is not None else "n/a",
             f"{u['usage_rows']:,}", f"{u['written_total']:,.0f}", f"{u['dropped_total']:,.0f}",
             f"{u['rejected_total']:,.0f}" + rejected_by(u.get("rejected_by"))] for n, u in by_target.items()]
    return ("## PostgreSQL mode: usage recorded\n\n"
            "Evidence that each PostgreSQL-mode target recorded usage while it was measured: every request "
            "it answered in the throughput and fixed-rate runs (and the check before them) should have a "
            "row, read once those runs end.\n\n"
            + table(["target", "requests the gateway counted", "usage rows in the database",
                     "rows written (metric)", "records dropped (metric)", "gateway errors (metric)"], rows))


def rejected_by(by):
    """` (429 {reason="..."} 12, ...)`: the non-zero labels of the errors metric."""
    parts = [f"`{k}` {v:,.0f}" for k, v in (by or {}).items() if v]
    return f" ({', '.join(parts)})" if parts else ""


def warmup(rows, title=""):
    base = next((x["rss_kib"] for x in rows if x["keys"] == 0), None)
    out = []
    for x in rows:
        if x["keys"] == 0:
            continue
        extra = None if base is None else x["rss_kib"] - base
        per_key = "n/a" if extra is None else f"{extra * 1024 / x['keys']:.0f}"
        check = x.get("check") or {}
        out.append([f"{x['keys']:,}", ms(x["warmup_secs"], 2), ms(x["ready_secs"], 2), mib(x["rss_kib"]),
                    mib(extra), per_key,
                    f"{check.get('status')} / {check.get('db_lookups', 0):.0f}",
                    ms(x["insert_secs"], 1)])
    return (f"## Key cache warm-up{title}\n\n"
            "A PostgreSQL-mode gateway started over a table of N keys (each with a 32-byte hash, "
            "a name, an owner, two allowed-model globs and a rate limit). Warm-up is the gateway's "
            "`obleth_key_cache_warmup_seconds`; ready is spawn to `/readyz` 200 (it includes the schema "
            "check and process start); memory is VmRSS 2 s after ready. The check presents a key from the "
            "middle of the table: its status, and `obleth_key_db_lookups_total` after it (0: answered "
            f"from the cache). The same gateway over no keys uses {mib(base)} MiB.\n\n"
            + table(["keys", "warm-up s", "spawn to ready s", "VmRSS MiB", "over no keys MiB", "bytes a key",
                     "check: status / DB lookups", "SQL insert s"], out))


def revocation(v, title=""):
    def row(name, xs):
        return [name, len(xs), ms(percentile(xs, 50)), ms(percentile(xs, 99)), ms(max(xs))]
    rows = [row("each replica, each revoke", v["all_ms"]), row("slowest of the replicas, each revoke", v["worst_ms"])]
    rows += [row(f"replica {i + 1}", xs) for i, xs in enumerate(v["per_replica_ms"])]
    return (f"## Revocation propagation{title}\n\n"
            f"{v['replicas']} PostgreSQL-mode gateways on one database. {v['revokes']} keys revoked one after "
            "another, each by one transaction that does what `obleth_config::db::keys::revoke_key` does "
            "(UPDATE, then under the change-log lock an INSERT into `changes` and `pg_notify` with its JSON "
            "payload). Time runs from writing the transaction to a psql session to each replica's first 403 "
            "for that key; every replica is polled (`GET /v1/models` with the key) on its own kept-alive "
            f"connection, on average every {ms(v['mean_poll_ms'])} ms. Keys revoked in the database at the "
            f"end: {v['revoked_in_db']}.\n\n"
            + table(["", "samples", "p50 ms", "p99 ms", "max ms"], rows))
