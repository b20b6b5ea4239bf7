"""bench/scale's measuring half: how obleth's cost grows, on this machine.

- latency (p50, p99) and throughput against 1, 100 and 10,000 concurrent
  connections (closed loop, wrk), obleth in embedded mode and nginx reverse
  proxy, both in front of nginx `return 200`;
- memory (VmRSS) with 10,000 streamed completions open at once, from an
  asyncio client, through obleth and through nginx to a mock that streams
  slowly;
- throughput with 1, 2 and 3 embedded gateways behind HAProxy, all on this
  machine: a cost curve, not a scaling one;
- memory and warm-up against 100k, 1M and 10M keys, in PostgreSQL mode, by
  bench/harness/keystore.py's `scale_curve` when that file exists, else by
  keys.py's warm-up run.

Writes bench/SCALE.md and bench/SCALE.json. Every run is bounded in count and
time, talks only to 127.0.0.1, and every process it starts is stopped, also on
Ctrl-C."""

import argparse
import datetime
import importlib
import json
import os
import resource
import shutil
import signal
import sys
import time

import keys
import load
import scale_report
import streams
import targets
from facts import build_facts, machine_facts
from pg import Cluster
from procs import Group, free_port, http_status
from targets import Target, write
from upstream import start_mock, start_nginx_200

BENCH_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SECTIONS = ["connections", "streams", "haproxy", "keys"]
# Descriptors a gateway keeps for everything but client and upstream
# connections (listeners, the pool, logs): obleth_service's FD_RESERVE is 256.
FD_SPARE = 400
# The hook another part of the harness fills: bench/harness/keystore.py with a
# function of this name (see key_curve) replaces keys.py's warm-up run.
KEYSTORE_MODULE, KEYSTORE_HOOK = "keystore", "scale_curve"


def parse_args():
    p = argparse.ArgumentParser(prog="bench/scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", required=True,
                   help="this build's release binaries (bench/scale passes target/release; a later --bin-dir wins)")
    p.add_argument("--before", metavar="DIR",
                   help="another build's binaries: its obleth-gateway is measured beside this one in every curve")
    p.add_argument("--quick", action="store_true",
                   help="3 s runs, 1,000 streams, 100k keys: to try the harness, not to publish")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--duration", type=int, default=10, help="seconds of each load run (default 10)")
    p.add_argument("--connections", default="1,100,10000", help="concurrent connections of the latency curve")
    p.add_argument("--streams", type=int, default=10000, help="streams held open at once (default 10000)")
    p.add_argument("--stream-token-delay-ms", type=int, default=2000,
                   help="the streaming mock's delay before each token (default 2000)")
    p.add_argument("--stream-tokens", type=int, default=150,
                   help="tokens of each held stream: with the delay, how long a stream lasts (default 150)")
    p.add_argument("--open-limit-secs", type=int, default=180,
                   help="longest time to open every stream (default 180)")
    p.add_argument("--gateways", default="1,2,3", help="gateway counts behind HAProxy")
    p.add_argument("--keys", default="100000,1000000,10000000", help="key counts of the key curve")
    p.add_argument("--out", default=os.path.join(BENCH_DIR, "SCALE.md"), help="the markdown report")
    p.add_argument("--json", default=os.path.join(BENCH_DIR, "SCALE.json"), help="the raw figures")
    p.add_argument("--render", metavar="SCALE_JSON", help="measure nothing: write the report from a JSON")
    a = p.parse_args()
    if a.quick:
        a.duration, a.streams, a.keys = 3, 1000, "100000"
    a.sections = [s for s in a.sections.split(",") if s]
    unknown = set(a.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    a.connections = [int(c) for c in a.connections.split(",") if c]
    a.gateways = [int(g) for g in a.gateways.split(",") if g]
    a.key_sizes = [int(k) for k in a.keys.split(",") if k and int(k) > 0]
    if a.before and not os.path.isfile(os.path.join(a.before, "obleth-gateway")):
        p.error(f"--before {a.before}: no obleth-gateway there")
    return a


def log(msg):
    print(f"bench/scale: {msg}", flush=True)


def raise_fd_limit():
    """The soft open-file limit raised to the hard one (children inherit it);
    answers the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def gateways(args):
    """[(target name, gateway binary, migrator)] of the builds measured."""
    out = [("obleth", os.path.join(args.bin_dir, "obleth-gateway"), os.path.join(args.bin_dir, "obleth-migrator"))]
    if args.before:
        migrator = os.path.join(args.before, "obleth-migrator")
        if not os.path.isfile(migrator):
            migrator = out[0][2]
        out.append(("obleth-before", os.path.join(args.before, "obleth-gateway"), migrator))
    return out


def gateway_env(max_connections):
    """The [server] caps a gateway gets here: room for every client
    connection of the curve, the ops listener kept small; the gateway lowers
    both to fit the open-file limit (less its 256 spare) and logs it."""
    return {"RUST_LOG": "warn", "OBLETH_SERVER__MAX_CONNECTIONS": str(max_connections),
            "OBLETH_SERVER__OPS_MAX_CONNECTIONS": "64", "OBLETH_SERVER__DRAIN_TIMEOUT_SECS": "5"}


def label(name):
    return {"obleth": "obleth, embedded", "obleth-before": "obleth before, embedded",
            "nginx": "nginx reverse proxy"}.get(name, name)


def connections_curve(args, work, log_dir, fd_limit):
    """Closed loop at each connection count, against each target."""
    top = max(args.connections)
    group = Group(log_dir)
    rows = []
    try:
        up = start_nginx_200(group, work, worker_connections=fd_limit - 100, nofile=fd_limit)
        ts = [targets.start_nginx(group, work, up.port, worker_connections=fd_limit - 100, nofile=fd_limit)]
        for name, gw, _ in gateways(args):
            ts.append(targets.start_embedded(group, gw, work, up.port, name=name, label=label(name),
                                             env=gateway_env(top + 1000)))
        for c in args.connections:
            for t in [up] + ts:
                threads = min(2, c)
                log(f"{t.name}: {c} connections, wrk -t{threads}, {args.duration} s")
                load.wrk(t, work, 2, threads=threads, connections=c)  # warm-up, not recorded
                cpu = t.proc.cpu_secs()
                r = load.wrk(t, work, args.duration, threads=threads, connections=c)
                r["cpu_us"] = (t.proc.cpu_secs() - cpu) / r["requests"] * 1e6 if r["requests"] else None
                r["rss_kib"] = t.proc.rss_kib()
                r.update({"target": t.name, "connections": c})
                rows.append(r)
                log(f"{t.name}: {r['rps']:.0f} req/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
                    f"errors {r['socket_errors']} non-2xx {r['non_2xx']}")
    finally:
        group.stop_all()
    return {"rows": rows, "gateway_max_connections": top + 1000}


def feasible_streams(asked, fd_limit):
    """A stream holds two descriptors in the proxy (client and upstream):
    the most this open-file limit lets one proxy process hold, in hundreds."""
    fit = (fd_limit - FD_SPARE) // 2 // 100 * 100
    return min(asked, max(fit, 100))


def streams_curve(args, work, log_dir, fd_limit):
    """For each target: its VmRSS idle, then with a tenth of the streams and
    with all of them open at once."""
    n = feasible_streams(args.streams, fd_limit)
    steps = sorted({max(1, n // 10), n})
    out = {"asked": args.streams, "measured": n, "fd_limit": fd_limit, "steps": steps,
           "token_delay_ms": args.stream_token_delay_ms, "tokens": args.stream_tokens, "rows": []}
    names = ["nginx"] + [g[0] for g in gateways(args)]
    binaries = {g[0]: g[1] for g in gateways(args)}
    for name in names:
        for count in steps:
            group = Group(log_dir)
            try:
                mock = start_mock(group, args.bin_dir, args.stream_token_delay_ms, name="mock-streams",
                                  tokens=args.stream_tokens)
                if name == "nginx":
                    t = targets.start_nginx(group, work, mock.port, name="nginx-streams",
                                            worker_connections=fd_limit - 100, nofile=fd_limit)
                else:
                    t = targets.start_embedded(group, binaries[name], work, mock.port, name=f"{name}-streams",
                                               label=label(name), env=gateway_env(n + 1000))
                idle = t.proc.rss_kib()
                log(f"{name}: holding {count} streams open (idle {idle / 1024:.1f} MiB)")

                def sample(h, t=t, mock=mock):
                    return {"rss_kib": t.proc.rss_kib(), "mock_rss_kib": mock.proc.rss_kib(),
                            "open_at_sample": h.still_open()}

                h, s = streams.hold(t, count, args.open_limit_secs, sample)
                row = {"target": name, "streams": count, "idle_kib": idle, "opened": h.opened, "failed": h.failed,
                       "open_secs": h.open_secs, "errors": h.errors, **s}
                out["rows"].append(row)
                log(f"{name}: {h.opened} opened, {h.failed} failed, {s['open_at_sample']} open at the sample, "
                    f"{s['rss_kib'] / 1024:.1f} MiB")
            finally:
                group.stop_all()
    return out


def haproxy_conf(path, port, backends):
    servers = "".join(f"    server g{i} 127.0.0.1:{p} check port {ops}\n" for i, (p, ops) in enumerate(backends))
    write(path, (
        "global\n    maxconn 8192\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n"
        "    option http-keep-alive\n    http-reuse always\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend gateways\n"
        "backend gateways\n    balance roundrobin\n    option httpchk GET /readyz\n"
        "    http-check expect status 200\n    default-server inter 1s fall 2 rise 1\n" + servers
    ))
    return path


def start_haproxy(group, work, name, backends):
    """HAProxy in front of `backends` [(port, health-check port)]; ready once
    it answers with a backend up (anything but its own 503)."""
    port = free_port()
    conf = haproxy_conf(os.path.join(work, f"{name}.cfg"), port, backends)
    proc = group.start(name, [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", conf])
    deadline = time.monotonic() + 30
    while http_status(port, "/") in (None, 503):
        if not proc.alive():
            raise RuntimeError(f"{name} exited; log:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not forwarding on :{port} after 30 s; log:\n{proc.log_tail()}")
        time.sleep(0.1)
    return port, proc


def haproxy_curve(args, work, log_dir):
    """wrk through HAProxy to N embedded gateways of this build (and of the
    build before), and to the upstream directly (HAProxy's own cost)."""
    if not shutil.which("haproxy") and not os.path.exists("/usr/sbin/haproxy"):
        return {"skipped": "haproxy not installed (apt-get install haproxy)"}
    rows = []
    top = max(args.gateways)
    for name, gw, _ in gateways(args):
        group = Group(log_dir)
        try:
            up = start_nginx_200(group, work, name="upstream-nginx-haproxy")
            key = targets.new_key()
            procs = []
            for i in range(top):
                config, port, ops = targets.gateway_toml(work, f"{name}-fleet-{i + 1}", mock_port=up.port, key=key)
                proc = targets.start_gateway(group, gw, work, f"{name}-fleet-{i + 1}", config, port, ops,
                                             env=gateway_env(10000))
                procs.append((proc, port, ops))
            steps = ([0] if name == "obleth" else []) + args.gateways
            for n in steps:
                backends = [(up.port, up.port)] if n == 0 else [(p, o) for _, p, o in procs[:n]]
                hp_port, hp = start_haproxy(group, work, f"haproxy-{name}-{n}", backends)
                headers = {"Authorization": f"Bearer {key[0]}"}
                t = Target(name, label(name), hp_port, headers, hp)
                load.wrk(t, work, 2, connections=64)  # warm-up
                gws = [p for p, _, _ in procs[:n]]
                before = [p.cpu_secs() for p in gws], hp.cpu_secs()
                r = load.wrk(t, work, args.duration, connections=64)
                reqs = r["requests"] or 1
                r["gateway_cpu_us"] = sum(p.cpu_secs() - c for p, c in zip(gws, before[0])) / reqs * 1e6
                r["haproxy_cpu_us"] = (hp.cpu_secs() - before[1]) / reqs * 1e6
                r.update({"target": name if n else "upstream", "gateways": n})
                rows.append(r)
                log(f"haproxy -> {n or 'no'} {name} gateways: {r['rps']:.0f} req/s, "
                    f"gateways {r['gateway_cpu_us']:.1f} µs + haproxy {r['haproxy_cpu_us']:.1f} µs CPU a request")
                hp.stop()
                group.procs.remove(hp)
        finally:
            group.stop_all()
    return {"rows": rows}


def key_curve(args, work, log_dir):
    """Memory and warm-up against key counts. bench/harness/keystore.py,
    when present with `scale_curve(cluster, gateway, migrator, work,
    log_dir, sizes, db, tag, env)` answering rows like keys.warmup's (keys,
    warmup_secs, ready_secs, rss_kib...), measures it; until then keys.py's
    warm-up run does, with `cache.max_keys` raised to the largest count."""
    try:
        keystore = importlib.import_module(KEYSTORE_MODULE)
        hook = getattr(keystore, KEYSTORE_HOOK, None)
    except ImportError:
        keystore = hook = None
    source = (f"`{KEYSTORE_MODULE}.{KEYSTORE_HOOK}` (bench/harness/{KEYSTORE_MODULE}.py)" if hook else
              "`keys.warmup` (bench/harness/keys.py): bench/harness/keystore.py with `scale_curve` not present")
    run = hook or keys.warmup
    env = {"OBLETH_CACHE__MAX_KEYS": str(max(args.key_sizes) + 1000), "RUST_LOG": "warn"}
    out = {"source": source, "builds": {}}
    cluster = Cluster()
    try:
        cluster.start()
        out["postgres"] = cluster.pg_version
        for name, gw, migrator in gateways(args):
            suffix = "" if name == "obleth" else "_before"
            log(f"key curve ({name}): {', '.join(f'{k:,}' for k in args.key_sizes)} keys, by {source.split(' ')[0]}")
            out["builds"][name] = run(cluster, gw, migrator, work, log_dir, [0] + args.key_sizes,
                                      db=f"obleth_scale_keys{suffix}", tag=name, env=env)
    finally:
        cluster.stop()
    return out


def main():
    args = parse_args()
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        with open(args.out, "w") as f:
            f.write(scale_report.render(results))
        log(f"wrote {os.path.relpath(args.out)} from {args.render}")
        return
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = os.path.join(BENCH_DIR, "out", f"scale-{stamp}")
    log_dir = os.path.join(work, "logs")
    os.makedirs(log_dir)
    fd_limit = raise_fd_limit()
    log(f"logs in {os.path.relpath(work)}; open-file limit {fd_limit}")
    oha_bin = os.path.join(os.environ.get("BENCH_CACHE", ""), "cargo", "bin", "oha")
    results = {"args": vars(args), "facts": machine_facts(BENCH_DIR, args.bin_dir, oha_bin), "fd_limit": fd_limit,
               "builds": {n: build_facts(gw, mg) for n, gw, mg in gateways(args)}}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if "connections" in args.sections:
            results["connections"] = connections_curve(args, work, log_dir, fd_limit)
        if "streams" in args.sections:
            results["streams"] = streams_curve(args, work, log_dir, fd_limit)
        if "haproxy" in args.sections:
            results["haproxy"] = haproxy_curve(args, work, log_dir)
        if "keys" in args.sections and args.key_sizes:
            results["keys"] = key_curve(args, work, log_dir)
    finally:
        for path in (os.path.join(work, "scale.json"), args.json):
            with open(path, "w") as f:
                json.dump(results, f, indent=1)
    with open(args.out, "w") as f:
        f.write(scale_report.render(results))
    log(f"wrote {os.path.relpath(args.out)} and {os.path.relpath(args.json)}")


if __name__ == "__main__":
    main()
