"""The dashboard and the alert rules against what the binaries export.

    dashboard_metrics.py --bin-dir BIN --dashboard deploy/grafana/obleth-dashboard.json \
        --rules deploy/prometheus/obleth-alerts.yaml [--runbooks docs/observability.md] \
        [--docs docs/gateway.md docs/admin-api.md]
    dashboard_metrics.py self-test
    dashboard_metrics.py rendered-rules RENDER --rules FILE --out FILE
    dashboard_metrics.py scrape --bin-dir BIN --config examples/quickstart.toml

Reads every PromQL expression of the Grafana dashboard (panel targets and
template variable queries) and of the alert rules, extracts the metric names
they reference, and checks each against the names `obleth-gateway wiring` and
`obleth-admin wiring` list (their registries' metrics, including those with no
series yet, which a scrape of /metrics would leave out). A histogram's
`_bucket`, `_sum` and `_count` series map to its base name. With --runbooks,
each alert's runbook_url must name a heading of that file; with --docs, every
exported metric must be named (in backquotes) by one of those files, so the
metrics tables stay complete. Exits 1, naming
each unknown metric and where it is used, if anything is not exported.

`rendered-rules` checks that a chart render holds exactly one PrometheusRule
whose groups are those of the rules file, and writes them to --out as a rules
file (for `promtool check rules` of what the chart deploys).

`scrape` runs the real gateway in embedded mode with the given settings file
(on free loopback ports), sends one whole and one streamed chat completion
with the file's demo key, scrapes its ops /metrics and checks that every
metric family served is one `wiring` lists, and that the per-model request,
token and time-to-first-token series are there for the routed model and its
provider: the list the dashboard check trusts is what the binary serves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli import Binaries, CheckError  # noqa: E402

# PromQL words that look like identifiers but name no metric.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "atan2", "start", "end",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects. Strings, label matchers, range and
    subquery brackets, grouping clauses and function calls are removed
    first; what remains as an identifier is a metric name. Grafana's
    `$variables` are taken out as well."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        # A duration or number suffix (`5m`, `1e3`) is never matched: the
        # lookbehind and the leading letter rule out digits before it.
        names.add(word)
    return names


def label_values_metric(query: str) -> set[str]:
    """The metric of a Grafana `label_values(metric, label)` or
    `query_result(expr)` variable query."""
    m = re.match(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)", query)
    if m:
        return {m.group(1)}
    m = re.match(r"\s*(?:query_result|metrics)\((.*)\)\s*$", query)
    return metric_names(m.group(1)) if m else set()


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, expression) for every panel target, nested rows included, and
    every query variable."""
    out = []

    def panels(items):
        for p in items or []:
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append((f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]))
            panels(p.get("panels"))

    panels(dashboard.get("panels"))
    for v in (dashboard.get("templating") or {}).get("list") or []:
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if q:
                out.append((f"variable ${v.get('name')}", "label_values:" + q))
    return out


def rule_exprs(rules: dict) -> list[tuple[str, str, dict]]:
    return [
        (f"rule {r.get('alert') or r.get('record')!r}", r["expr"], r)
        for g in rules.get("groups") or []
        for r in g.get("rules") or []
    ]


def base_name(name: str, exported: set[str]) -> str:
    if name in exported:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in exported:
            return name[: -len(suffix)]
    return name


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[`*_]", "", m.group(1)).strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


def check(dashboard: dict, rules: dict, exported: set[str], runbooks: str | None) -> list[str]:
    """The problems found; empty when everything references an exported metric."""
    problems = []
    used: dict[str, list[str]] = {}
    exprs = [(w, e) for w, e in dashboard_exprs(dashboard)] + [(w, e) for w, e, _ in rule_exprs(rules)]
    if not exprs:
        problems.append("no expressions found in the dashboard or the rules")
    for where, expr in exprs:
        names = (label_values_metric(expr[len("label_values:"):]) if expr.startswith("label_values:")
                 else metric_names(expr))
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        for n in names:
            used.setdefault(n, []).append(where)
    for name, wheres in sorted(used.items()):
        if base_name(name, exported) not in exported:
            problems.append(f"{name} is not exported by the gateway or the admin (used by {', '.join(wheres)})")
        else:
            print(f"  ok    {name} ({len(wheres)} uses)")
    if runbooks is not None:
        known = anchors(runbooks)
        for where, _, rule in rule_exprs(rules):
            url = (rule.get("annotations") or {}).get("runbook_url", "")
            anchor = url.partition("#")[2]
            if not anchor or anchor not in known:
                problems.append(f"{where}: runbook_url {url!r} names no heading of the runbook file")
            for key in ("summary", "description"):
                if not (rule.get("annotations") or {}).get(key):
                    problems.append(f"{where}: no {key} annotation")
            if rule.get("alert") and not rule.get("for"):
                problems.append(f"{where}: no `for`")
            if rule.get("alert") and not (rule.get("labels") or {}).get("severity"):
                problems.append(f"{where}: no severity label")
    return problems


def exported_names(bins: Binaries) -> set[str]:
    names = set()
    for binary in ("obleth-gateway", "obleth-admin"):
        w = bins.wiring(binary, None, {})
        listed = w.get("metrics")
        if not listed:
            raise CheckError(f"`{binary} wiring` lists no metrics")
        print(f"  {binary}: {len(listed)} metrics")
        names.update(listed)
    return names


def self_test() -> int:
    """The extractor on known expressions, and a dashboard naming a metric
    nobody exports must fail."""
    cases = {
        'sum by (le, model) (rate(obleth_x_bucket{job=~"$job",model="a b"}[$__rate_interval]))': {"obleth_x_bucket"},
        "a / on(job) group_left(version) b offset 5m": {"a", "b"},
        'histogram_quantile(0.95, sum without (instance) (rate(m_total[5m:1m])))': {"m_total"},
        "max by (job) (obleth_fleet_uniform) == 0": {"obleth_fleet_uniform"},
        'up{job="x"} and bool 1e3 > 2': {"up"},
    }
    failed = 0
    for expr, want in cases.items():
        got = metric_names(expr)
        if got != want:
            print(f"  FAIL  {expr!r}: {sorted(got)} != {sorted(want)}")
            failed += 1
    exported = {"obleth_x", "obleth_y_total"}
    good = {"panels": [{"title": "p", "targets": [{"refId": "A", "expr": "rate(obleth_x_count[5m]) + obleth_y_total"}]}]}
    bad = {"panels": [{"title": "p", "targets": [{"refId": "A", "expr": "rate(obleth_no_such_metric_total[5m])"}]}]}
    if check(good, {}, exported, None):
        print("  FAIL  a dashboard of exported metrics was refused")
        failed += 1
    problems = check(bad, {}, exported, None)
    if not any("obleth_no_such_metric_total is not exported" in p for p in problems):
        print(f"  FAIL  a dashboard naming an unknown metric passed: {problems}")
        failed += 1
    print(f"self-test: {'ok' if not failed else f'{failed} failed'}")
    return 1 if failed else 0


def rendered_rules(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="dashboard_metrics.py rendered-rules")
    ap.add_argument("render")
    ap.add_argument("--rules", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    docs = [d for d in yaml.safe_load_all(Path(a.render).read_text()) if d]
    found = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(found) != 1:
        print(f"  FAIL  {a.render}: {len(found)} PrometheusRules, want 1")
        return 1
    want = yaml.safe_load(Path(a.rules).read_text())["groups"]
    got = found[0]["spec"]["groups"]
    if got != want:
        print(f"  FAIL  the PrometheusRule's groups differ from {a.rules}")
        return 1
    Path(a.out).write_text(yaml.safe_dump({"groups": got}, sort_keys=False))
    rules = sum(len(g["rules"]) for g in got)
    print(f"  ok    PrometheusRule {found[0]['metadata']['name']}: the {rules} rules of {a.rules}")
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, key: str | None = None) -> tuple[int, str]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="dashboard_metrics.py scrape")
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--config", required=True)
    a = ap.parse_args(argv)
    bins = Binaries(a.bin_dir)
    listed = set(bins.wiring("obleth-gateway", None, {})["metrics"])
    text = Path(a.config).read_text()
    key = re.search(r"demo key: (obk_\w+)", text)
    route = re.search(r'^model = "([^"]+)"', text, re.M)
    provider = re.search(r'^name = "([^"]+)"', text, re.M)
    if not (key and route and provider):
        print(f"  FAIL  {a.config}: no demo key, route or provider found")
        return 1
    key, model, provider = key.group(1), route.group(1), provider.group(1)
    proxy, ops = free_port(), free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "OBLETH_SERVER__LISTEN": f"127.0.0.1:{proxy}", "OBLETH_SERVER__OPS_LISTEN": f"127.0.0.1:{ops}"}
    gw = subprocess.Popen([bins.path("obleth-gateway"), "--config", a.config], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    problems = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http("GET", f"http://127.0.0.1:{ops}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if gw.poll() is not None or time.monotonic() > deadline:
                print(f"  FAIL  the gateway did not get ready: {gw.stderr.read() if gw.poll() is not None else 'timeout'}")
                return 1
            time.sleep(0.1)
        chat = {"model": model, "messages": [{"role": "user", "content": "Hello!"}]}
        for stream in (False, True):
            status, body = http("POST", f"http://127.0.0.1:{proxy}/v1/chat/completions", {**chat, "stream": stream}, key)
            if status != 200:
                problems.append(f"chat (stream {stream}) answered {status}: {body[:200]}")
        _, metrics = http("GET", f"http://127.0.0.1:{ops}/metrics")
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gw.kill()
    served = set(re.findall(r"^# TYPE (\S+) ", metrics, re.M))
    print(f"  gateway served {len(served)} metric families after two requests; wiring lists {len(listed)}")
    for name in sorted(served - listed):
        problems.append(f"{name} is served by /metrics but not listed by wiring")
    samples = []
    for line in metrics.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    ours = {"model": model, "provider": provider}
    for name, extra, want in (("obleth_model_requests_total", {"class": "2xx"}, 2.0),
                              ("obleth_tokens_total", {"kind": "completion"}, None),
                              ("obleth_tokens_total", {"kind": "prompt"}, None),
                              ("obleth_time_to_first_token_seconds_count", {}, 2.0)):
        match = {**ours, **extra}
        got = sum(v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in match.items()))
        ok = got == want if want is not None else got > 0
        desc = f"{name}{match} = {got}" + (f" (want {want})" if want is not None else " (want > 0)")
        if ok:
            print(f"  ok    {desc}")
        else:
            problems.append(desc)
    for p in problems:
        print(f"  FAIL  {p}")
    print(f"scrape: {'ok' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


def main() -> int:
    if sys.argv[1:] == ["self-test"]:
        return self_test()
    if sys.argv[1:2] == ["rendered-rules"]:
        return rendered_rules(sys.argv[2:])
    if sys.argv[1:2] == ["scrape"]:
        return scrape(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--runbooks")
    ap.add_argument("--docs", nargs="*", default=[])
    a = ap.parse_args()
    try:
        exported = exported_names(Binaries(a.bin_dir))
    except CheckError as e:
        print(f"  FAIL  {e}")
        return 1
    dashboard = json.loads(Path(a.dashboard).read_text())
    rules = yaml.safe_load(Path(a.rules).read_text())
    runbooks = Path(a.runbooks).read_text() if a.runbooks else None
    problems = check(dashboard, rules, exported, runbooks)
    documented = "".join(Path(d).read_text() for d in a.docs)
    for name in sorted(exported) if a.docs else []:
        if f"`{name}`" not in documented and f"`{name}{{" not in documented:
            problems.append(f"{name} is exported but named by none of {', '.join(a.docs)}")
    for p in problems:
        print(f"  FAIL  {p}")
    print(f"dashboard and rules: {'every metric exported' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
