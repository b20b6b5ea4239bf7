"""The load generators: wrk for closed-loop throughput, oha for latency at a
fixed rate. Both run here, on the same two cores as the targets."""

import json
import os
import subprocess

from targets import BODY

WRK_SCRIPT = """-- Written by bench/harness/load.py for one target.
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
{headers}
-- Exact counts instead of wrk's unit-formatted summary.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def lua_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk(target, work, secs, threads=2, connections=32):
    """Closed loop: `connections` connections send back to back for `secs`.
    Answers successful requests a second and the counts behind it."""
    headers = "\n".join(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in target.headers.items())
    script = os.path.join(work, f"wrk-{target.name}.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT.format(body=BODY, headers=headers))
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{secs}s", "--timeout", "5s",
                          "-s", script, target.url], capture_output=True, text=True, timeout=secs + 60)
    line = next((l for l in out.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result for {target.name}:\n{out.stdout}{out.stderr}")
    r = json.loads(line[len("BENCH_JSON "):])
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    # wrk counts non-2xx answers in `status`, and they are among `requests`.
    ok = r["requests"] - r["status"]
    secs_run = r["duration_us"] / 1e6
    return {
        "rps": ok / secs_run,
        "requests": r["requests"],
        "non_2xx": r["status"],
        "socket_errors": errors,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "secs": secs_run,
    }


def oha(bin_path, target, rate, secs, connections=64, body=BODY):
    """Open loop: `rate` requests a second for `secs`, latency measured from when
    each request was due (--latency-correction), so a target that falls behind
    shows its queue in the percentiles rather than hiding it."""
    argv = [bin_path, "--no-tui", "--output-format", "json", "-z", f"{secs}s", "-q", str(rate),
            "-c", str(connections), "--latency-correction", "-w", "-t", "10s",
            "-m", "POST", "-T", "application/json", "-d", body]
    for k, v in target.headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(target.url)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 120)
    if out.returncode != 0:
        raise RuntimeError(f"oha failed for {target.name}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    r = json.loads(out.stdout)
    summary = r["summary"]
    codes = r.get("statusCodeDistribution", {})
    errors = r.get("errorDistribution", {})
    ok = sum(n for code, n in codes.items() if str(code).startswith("2"))
    total = sum(codes.values()) + sum(errors.values())
    p = r.get("latencyPercentiles", {})

    def ms(key):
        v = p.get(key)
        return None if v is None else v * 1000

    achieved = ok / secs
    return {
        "rate": rate,
        "achieved_rps": achieved,
        "requests": total,
        "ok": ok,
        "non_2xx": sum(codes.values()) - ok,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "p50_ms": ms("p50"),
        "p99_ms": ms("p99"),
        "p999_ms": ms("p99.9"),
        "sustained": achieved >= 0.97 * rate and total == ok,
        "success_rate": summary.get("successRate"),
    }
