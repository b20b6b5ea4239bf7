"""A/B of two obleth-gateway builds: each in embedded mode in front of an nginx
that answers every chat completion itself (`return 200`), measured with wrk in
a closed loop, in alternating rounds on this machine, with nginx called
directly as the floor. An upstream far cheaper than the gateway, so the figures
show the gateway's own cost; compare the ratios, not absolute figures."""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

from load import wrk
from procs import Group, free_port
from targets import RPM_LIMIT, Target, new_key, render, start_nginx, write
from upstream import nginx_conf

def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("a", help="path of build A's obleth-gateway")
    p.add_argument("b", help="path of build B's obleth-gateway")
    p.add_argument("--names", default="A,B", help="labels of the two builds, comma-separated")
    p.add_argument("--duration", type=int, default=10, help="seconds a wrk run")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--no-proxy", action="store_true",
                   help="leave out nginx as a reverse proxy (the figure obleth's ratio is read against)")
    args = p.parse_args()
    names = args.names.split(",")
    work = tempfile.mkdtemp(prefix="obleth-ab-")
    group = Group(work)
    try:
        nginx_port = free_port()
        conf = write(os.path.join(work, "nginx.conf"), nginx_conf(work, nginx_port))
        nginx = group.start("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-p", work, "-c", conf, "-g", "daemon off;"])
        nginx.wait_http(nginx_port, "/", 10)
        key, public_id, sha = new_key()
        targets = [Target("direct", "nginx return 200 (floor)", nginx_port, {}, nginx)]
        if not args.no_proxy:
            # Issue 12's comparator: a plain reverse proxy to the same upstream.
            targets.append(start_nginx(group, work, nginx_port))
        for name, binary in zip(names, [args.a, args.b]):
            port, ops = free_port(), free_port()
            settings = render("gateway-embedded.toml", PORT=port, OPS=ops, MOCK_PORT=nginx_port,
                              PUBLIC_ID=public_id, SECRET_SHA256=sha, RPM_LIMIT=RPM_LIMIT)
            path = write(os.path.join(work, f"gateway-{name}.toml"), settings)
            proc = group.start(f"gateway-{name}", [binary, "--config", path],
                               env={**os.environ, "RUST_LOG": "warn"})
            proc.wait_http(ops, "/readyz", 30)
            targets.append(Target(name, f"obleth {name}", port, {"Authorization": f"Bearer {key}"}, proc))
        results = {t.name: [] for t in targets}
        for _ in range(args.rounds):
            for t in targets:
                wrk(t, work, 2)  # warm-up
                cpu = t.proc.cpu_secs()
                r = wrk(t, work, args.duration)
                # The target's own CPU (its process tree) over the run, a request.
                r["cpu_us"] = (t.proc.cpu_secs() - cpu) * 1e6 / max(r["requests"], 1)
                results[t.name].append(r)
        floor = statistics.median(r["rps"] for r in results["direct"])
        print(f"| target | req/s (median of {args.rounds}) | runs | p99 ms (median) | non-2xx | ratio to floor "
              f"| CPU µs a request (median) |")
        print("|---|---|---|---|---|---|---|")
        for t in targets:
            rs = results[t.name]
            rps = statistics.median(r["rps"] for r in rs)
            runs = ", ".join(f"{r['rps']:,.0f}" for r in rs)
            print(f"| {t.label} | {rps:,.0f} | {runs} | "
                  f"{statistics.median(r['p99_ms'] for r in rs):.2f} | {sum(r['non_2xx'] for r in rs)} | "
                  f"{rps / floor:.2f} | {statistics.median(r['cpu_us'] for r in rs):.1f} |")
        a, b = (statistics.median(r["rps"] for r in results[n]) for n in names)
        print(f"\n{names[1]} / {names[0]} throughput: {b / a:.3f}")
        if "nginx" in results:
            proxy = statistics.median(r["rps"] for r in results["nginx"])
            print(f"{names[0]} / nginx reverse proxy: {a / proxy:.3f}; {names[1]} / nginx reverse proxy: {b / proxy:.3f}")
    finally:
        group.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
