"""The wiring test: rendered manifests agree with what the binaries serve.

    python wiring.py manifests FILE --label NAME --bin-dir DIR [--helm-hooks]
    python wiring.py compose FILE --bin-dir DIR
    python wiring.py equivalent CHART_RENDER KUSTOMIZE_RENDER
    python wiring.py same-image RENDER_A RENDER_B

For each gateway and admin Deployment it reads the settings file the container
is given (`--config`, resolved through its volume mounts to the rendered
ConfigMap), runs `<binary> --config FILE wiring` with the container's
environment, and checks the manifests against that answer: container ports,
probe paths and ports, no preStop sleep beside `drain_delay_secs`, the grace
period against the drain budget, `maxUnavailable: 0`, Services, the
ServiceMonitor, the security context. It checks the migration Job (and the
Helm hook annotations with --helm-hooks) and every obleth command line against
the binaries' --help. Nothing here retypes a port, a path or a timing of the
binaries: those come from `wiring`.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys

import yaml

from cli import Binaries, CheckError

# After the drain timeout the gateway ends open streams (up to 5 s) and
# flushes usage (up to 10 s), in crates/gateway/src/app.rs. `wiring` does not
# report these yet; when it prints `stream_cut_secs` / `usage_flush_secs`,
# those win.
DEFAULT_STREAM_CUT_SECS = 5
DEFAULT_USAGE_FLUSH_SECS = 10


def check_drain_covers(r, name: str, w: dict) -> None:
    """A rollout must cut no request the gateway allows: its drain timeout
    covers the longest one (both from `wiring`)."""
    longest = w.get("longest_request_secs")
    r.check(isinstance(longest, int) and w["drain_timeout_secs"] >= longest,
            f"{name}: drain_timeout_secs {w['drain_timeout_secs']} covers the longest request the gateway allows ({longest} s)")


def after_drain(w: dict) -> tuple[int, int]:
    """Seconds a service may still take after its drain timeout: the stream
    cut and the usage flush (the gateway's; the admin has neither)."""
    gateway = w.get("service") == "gateway"
    return (w.get("stream_cut_secs", DEFAULT_STREAM_CUT_SECS if gateway else 0),
            w.get("usage_flush_secs", DEFAULT_USAGE_FLUSH_SECS if gateway else 0))


DB_PLACEHOLDER = "postgres://wiring-check:secret@127.0.0.1:5432/obleth"


class Report:
    def __init__(self, label: str):
        self.label = label
        self.failures: list[str] = []
        self.passed = 0

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"  ok    {what}")

    def fail(self, what: str) -> None:
        self.failures.append(what)
        print(f"  FAIL  {what}")

    def check(self, cond: bool, what: str, detail: str = "") -> bool:
        if cond:
            self.ok(what)
        else:
            self.fail(f"{what}: {detail}" if detail else what)
        return cond

    def done(self) -> int:
        print(f"{self.label}: {self.passed} passed, {len(self.failures)} failed")
        return 1 if self.failures else 0


def load(path: str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict) and d.get("kind")]


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("containers") or []


def binary_of(container: dict) -> str:
    cmd = container.get("command") or []
    return posixpath.basename(cmd[0]) if cmd else ""


def find_config(doc: dict, container: dict, docs: list[dict]) -> tuple[str | None, str]:
    """The settings file text the container reads, and where it came from."""
    args = list(container.get("args") or [])
    path = None
    if "--config" in args:
        path = args[args.index("--config") + 1]
    for a in args:
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
    for e in container.get("env") or []:
        if e.get("name") == "OBLETH_CONFIG" and "value" in e:
            path = path or e["value"]
    if path is None:
        return None, "no --config"
    pod = doc["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for m in container.get("volumeMounts") or []:
        mount = m["mountPath"].rstrip("/")
        if not path.startswith(mount + "/"):
            continue
        rel = path[len(mount) + 1 :]
        vol = volumes.get(m["name"])
        if not vol or "configMap" not in vol:
            raise CheckError(f"{path} is mounted from volume {m['name']}, which is not a ConfigMap")
        cm_name = vol["configMap"]["name"]
        key = rel
        for item in vol["configMap"].get("items") or []:
            if item["path"] == rel:
                key = item["key"]
                break
        else:
            if vol["configMap"].get("items"):
                raise CheckError(f"{path}: ConfigMap volume {m['name']} has no item at {rel}")
        ns = doc["metadata"].get("namespace")
        for cm in docs:
            if cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == cm_name and cm["metadata"].get("namespace") == ns:
                data = cm.get("data") or {}
                if key not in data:
                    raise CheckError(f"ConfigMap {cm_name} has no key {key} for {path}")
                return data[key], f"ConfigMap {cm_name}/{key}"
        raise CheckError(f"ConfigMap {cm_name} (for {path}) is not in the manifests")
    raise CheckError(f"--config {path} is not inside any volume mount of the container")


def container_env(container: dict) -> dict[str, str]:
    env = {}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "valueFrom" in e:
            env[e["name"]] = DB_PLACEHOLDER if e["name"].endswith("DATABASE__URL") else "from-a-secret"
    return env


def port_number(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_probes(r: Report, name: str, c: dict, w: dict, probe_port: int) -> None:
    paths = w["paths"]
    expect = {"startupProbe": paths["readyz"], "readinessProbe": paths["readyz"], "livenessProbe": paths["healthz"]}
    for probe, path in expect.items():
        p = c.get(probe)
        if not r.check(p is not None and "httpGet" in p, f"{name}: {probe} is an httpGet probe"):
            continue
        got_path = p["httpGet"].get("path")
        r.check(got_path == path, f"{name}: {probe} path {got_path} == {path} (from wiring)",
                f"the binary serves {path}")
        got_port = port_number(c, p["httpGet"].get("port"))
        r.check(got_port == probe_port, f"{name}: {probe} port {p['httpGet'].get('port')} -> {got_port} == {probe_port} (from wiring)")


def check_security(r: Report, name: str, pod: dict, c: dict) -> None:
    sc = c.get("securityContext") or {}
    psc = pod.get("securityContext") or {}
    r.check(sc.get("runAsNonRoot") is True or psc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
    r.check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
    r.check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation false")
    r.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{name}: capabilities drop ALL")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    r.check(seccomp == "RuntimeDefault", f"{name}: seccompProfile RuntimeDefault", f"got {seccomp}")


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def memory_bytes(quantity) -> int | None:
    """A Kubernetes memory quantity (`512Mi`, `2G`, `1048576`) in bytes."""
    m = _QUANTITY.match(str(quantity))
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def check_memory(r: Report, name: str, c: dict, w: dict) -> None:
    """The gateway's memory limit fits the key store its `cache.max_keys`
    allows, as the binary's start-up check counts it (`wiring`)."""
    want = w.get("max_keys_memory_bytes")
    if want is None:
        return
    limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
    if limit is None:
        r.ok(f"{name}: no memory limit, nothing for cache.max_keys to fit")
        return
    have = memory_bytes(limit)
    r.check(have is not None and have >= want,
            f"{name}: memory limit {limit} holds cache.max_keys = {w['max_keys']} keys "
            f"({want / 2**20:.0f} MiB by the gateway's start-up check, from wiring)")


def check_deployment(r: Report, bins: Binaries, doc: dict, docs: list[dict]) -> None:
    name = f"{doc['metadata']['name']}"
    pod = doc["spec"]["template"]["spec"]
    c = next((c for c in containers(pod) if binary_of(c) in ("obleth-gateway", "obleth-admin")), None)
    binary = binary_of(c)
    service = "gateway" if binary == "obleth-gateway" else "admin"
    try:
        settings, source = find_config(doc, c, docs)
        w = bins.wiring(binary, settings, container_env(c))
    except CheckError as e:
        r.fail(f"{name}: {e}")
        return
    r.ok(f"{name}: `{binary} --config <{source}> wiring` with the container's env")
    r.check(w.get("service") == service, f"{name}: wiring service == {service}", f"got {w.get('service')}")
    try:
        r.ok(f"{name}: `{bins.check_invocation(list(c['command']) + list(c.get('args') or []))}` matches the CLI")
    except CheckError as e:
        r.fail(f"{name}: {e}")

    ports = {p["containerPort"] for p in c.get("ports") or []}
    if service == "gateway":
        probe_port = w["ops_port"]
        for key in ("proxy_port", "ops_port"):
            r.check(w[key] in ports, f"{name}: containerPort {w[key]} ({key} from wiring) is declared", f"declared: {sorted(ports)}")
    else:
        probe_port = w["port"]
        r.check(w["port"] in ports, f"{name}: containerPort {w['port']} (port from wiring) is declared", f"declared: {sorted(ports)}")
    check_probes(r, name, c, w, probe_port)
    if service == "gateway":
        check_memory(r, name, c, w)

    # Drain: after SIGTERM the service keeps serving for drain_delay while
    # endpoints drop the pod, so a preStop sleep would spend it twice; the
    # grace period covers the delay, the timeout and what follows.
    delay, timeout = w["drain_delay_secs"], w["drain_timeout_secs"]
    pre_stop = (c.get("lifecycle") or {}).get("preStop")
    r.check(pre_stop is None, f"{name}: no preStop hook (drain_delay_secs {delay} after SIGTERM does its job; a sleep first spends it twice)",
            f"got {pre_stop}")
    r.check(delay > 0, f"{name}: drain_delay_secs {delay} > 0 (serves on while endpoints drop the pod)")
    cut, flush = after_drain(w)
    budget = delay + timeout + cut + flush
    grace = pod.get("terminationGracePeriodSeconds")
    r.check(isinstance(grace, int) and grace > budget,
            f"{name}: terminationGracePeriodSeconds {grace} > drain_delay {delay} + drain_timeout {timeout} + stream cut {cut} + usage flush {flush} = {budget}")
    if service == "gateway":
        check_drain_covers(r, name, w)

    strategy = doc["spec"].get("strategy") or {}
    ru = strategy.get("rollingUpdate") or {}
    r.check(strategy.get("type") == "RollingUpdate" and ru.get("maxUnavailable") in (0, "0%"),
            f"{name}: RollingUpdate with maxUnavailable 0", f"got {strategy}")
    surge = ru.get("maxSurge")
    r.check(surge not in (None, 0, "0%"), f"{name}: maxSurge {surge} lets the rollout add a pod first")
    check_security(r, name, pod, c)

    labels = doc["spec"]["template"]["metadata"].get("labels") or {}
    ns = doc["metadata"].get("namespace")
    svcs = [s for s in docs if s["kind"] == "Service" and s["metadata"].get("namespace") == ns
            and selects((s.get("spec") or {}).get("selector") or {}, labels)]
    if r.check(bool(svcs), f"{name}: a Service selects its pods"):
        for s in svcs:
            for p in s["spec"]["ports"]:
                target = port_number(c, p.get("targetPort", p["port"]))
                r.check(target in ports, f"{name}: Service {s['metadata']['name']} port {p.get('name')} -> containerPort {target}")
        wanted = w["proxy_port"] if service == "gateway" else w["port"]
        r.check(any(port_number(c, p.get("targetPort", p["port"])) == wanted for s in svcs for p in s["spec"]["ports"]),
                f"{name}: a Service routes to the {'proxy' if service == 'gateway' else 'API'} port {wanted}")

    hpas = [h for h in docs if h["kind"] == "HorizontalPodAutoscaler" and h["metadata"].get("namespace") == ns
            and h["spec"]["scaleTargetRef"]["name"] == doc["metadata"]["name"]]
    if hpas:
        # Offline renders: the chart writes back the live count only when
        # `helm upgrade` can look it up (upgrade.py scale-transition).
        r.check("replicas" not in doc["spec"], f"{name}: no `replicas` beside its HPA, so an apply keeps the scale")
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget" and d["metadata"].get("namespace") == ns):
        if selects(pdb["spec"]["selector"].get("matchLabels") or {}, labels):
            r.check("maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"], f"{name}: PodDisruptionBudget {pdb['metadata']['name']} covers it")

    if service == "gateway":
        # The ServiceMonitors that select one of the gateway's Services.
        for sm in (d for d in docs if d["kind"] == "ServiceMonitor"
                   and any(selects((d["spec"].get("selector") or {}).get("matchLabels") or {}, s["metadata"].get("labels") or {}) for s in svcs)):
            for ep in sm["spec"]["endpoints"]:
                r.check(ep.get("path") == w["paths"]["metrics"], f"{name}: ServiceMonitor path {ep.get('path')} == {w['paths']['metrics']} (from wiring)")
                targets = [port_number(c, p.get("targetPort")) for s in svcs for p in s["spec"]["ports"] if p.get("name") == ep.get("port")]
                r.check(targets == [w["ops_port"]], f"{name}: ServiceMonitor port {ep.get('port')} -> {targets} == ops port {w['ops_port']}")


def migrator_jobs(docs: list[dict]) -> list[tuple[dict, dict]]:
    out = []
    for d in docs:
        if d["kind"] == "Job":
            for c in containers(d["spec"]["template"]["spec"]):
                if binary_of(c) == "obleth-migrator":
                    out.append((d, c))
    return out


def check_jobs(r: Report, bins: Binaries, docs: list[dict], helm_hooks: bool) -> None:
    jobs = migrator_jobs(docs)
    ups = [(d, c) for d, c in jobs if (c.get("args") or [None])[0] == "up"]
    # Whether a Job must exist depends on the migrations mode: upgrade.py
    # migrations checks that (here: at most one, and each Job sound).
    if not r.check(len(ups) <= 1, "at most one migration Job running `obleth-migrator up`", f"found {len(ups)}"):
        return
    for d, c in jobs:
        name = d["metadata"]["name"]
        argv = list(c["command"]) + list(c.get("args") or [])
        try:
            r.ok(f"{name}: `{bins.check_invocation(argv)}` matches the migrator's --help")
        except CheckError as e:
            r.fail(f"{name}: {e}")
        r.check("--force" not in argv, f"{name}: never forces")
        env = {e["name"] for e in c.get("env") or []}
        r.check("DATABASE_URL" in env or "--database-url" in argv, f"{name}: DATABASE_URL is set")
        spec = d["spec"]
        pod = spec["template"]["spec"]
        r.check(pod.get("restartPolicy") == "Never", f"{name}: restartPolicy Never (the Job's back-off retries)")
        r.check(isinstance(spec.get("backoffLimit"), int), f"{name}: backoffLimit {spec.get('backoffLimit')}")
        r.check(isinstance(spec.get("activeDeadlineSeconds"), int), f"{name}: activeDeadlineSeconds {spec.get('activeDeadlineSeconds')}")
        check_security(r, name, pod, c)
        ann = d["metadata"].get("annotations") or {}
        sub = argv[1]
        if helm_hooks:
            hooks = set((ann.get("helm.sh/hook") or "").split(","))
            want = {"up": {"pre-install", "pre-upgrade"}, "check": {"pre-rollback"}}.get(sub, {"post-upgrade"})
            r.check(want <= hooks, f"{name}: helm.sh/hook {sorted(hooks)} includes {sorted(want)}")
            r.check(not (sub == "up" and hooks & {"post-install", "post-upgrade"}),
                    f"{name}: not a post- hook (helm --wait would wait for pods that need it)")
            policy = set((ann.get("helm.sh/hook-delete-policy") or "").split(","))
            r.check("before-hook-creation" in policy, f"{name}: hook-delete-policy {sorted(policy)} replaces the previous Job")


def manifests(args) -> int:
    r = Report(f"wiring [{args.label}]")
    bins = Binaries(args.bin_dir)
    docs = load(args.file)
    deployments = [d for d in docs if d["kind"] == "Deployment"
                   and any(binary_of(c) in ("obleth-gateway", "obleth-admin") for c in containers(d["spec"]["template"]["spec"]))]
    kinds = {binary_of(c) for d in deployments for c in containers(d["spec"]["template"]["spec"])}
    r.check("obleth-gateway" in kinds, "a gateway Deployment exists")
    r.check("obleth-admin" in kinds, "an admin Deployment exists")
    for d in deployments:
        try:
            check_deployment(r, bins, d, docs)
        except (CheckError, KeyError, TypeError, IndexError) as e:
            r.fail(f"{d['metadata']['name']}: {type(e).__name__}: {e}")
    check_jobs(r, bins, docs, args.helm_hooks)
    return r.done()


def seconds(value) -> float:
    """A Compose duration ('60s', '1m30s') or nanoseconds (config --format json)."""
    if isinstance(value, (int, float)):
        return value / 1e9
    total, num = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    i = 0
    while i < len(value):
        ch = value[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = "ms" if value[i:i + 2] == "ms" else ch
        total += float(num) * units[unit]
        num, i = "", i + len(unit)
    return total


def compose(args) -> int:
    """The Compose file, normalised by `docker-compose config --format json`."""
    r = Report("wiring [compose]")
    bins = Binaries(args.bin_dir)
    with open(args.file) as f:
        project = json.load(f)
    services = project["services"]

    def cmd(s):
        return services[s].get("command") or []

    def probe_url(s):
        test = (services[s].get("healthcheck") or {}).get("test") or []
        argv = test[1:] if test and test[0] in ("CMD", "CMD-SHELL") else test
        try:
            r.ok(f"{s}: healthcheck `{bins.check_invocation(argv)}` matches the CLI")
        except CheckError as e:
            r.fail(f"{s}: healthcheck: {e}")
        return argv[-1] if argv else ""

    by_binary: dict[str, list[str]] = {}
    for s in services:
        by_binary.setdefault(posixpath.basename(cmd(s)[0]) if cmd(s) else "", []).append(s)
    gateways, admins = by_binary.get("obleth-gateway", []), by_binary.get("obleth-admin", [])
    migrates = [s for s in by_binary.get("obleth-migrator", []) if cmd(s)[1:2] == ["up"]]
    r.check(len(gateways) == 2, f"two gateways: {gateways}")
    r.check(len(admins) == 1, f"one admin: {admins}")
    r.check(len(migrates) == 1, f"one one-shot `obleth-migrator up`: {migrates}")
    r.check(bool(by_binary.get("obleth-mock-upstream")), "the mock upstream")
    pg = [s for s, v in services.items() if "postgres" in (v.get("image") or "")]
    r.check(len(pg) == 1 and bool(services[pg[0]].get("healthcheck")) and bool(services[pg[0]].get("volumes")),
            "postgres with a healthcheck and a volume")
    for s in migrates:
        try:
            r.ok(f"{s}: `{bins.check_invocation(cmd(s))}` matches the CLI")
        except CheckError as e:
            r.fail(f"{s}: {e}")
        r.check(services[s].get("restart") in (None, "no"), f"{s}: one-shot (restart no)")
        r.check((services[s].get("depends_on") or {}).get(pg[0] if pg else "", {}).get("condition") == "service_healthy",
                f"{s}: waits for postgres to be healthy")
    gateway_wiring = {}
    for s in admins + gateways:
        binary = posixpath.basename(cmd(s)[0])
        env = {k: str(v) for k, v in (services[s].get("environment") or {}).items() if v is not None}
        try:
            w = bins.wiring(binary, None, env)
        except CheckError as e:
            r.fail(f"{s}: {e}")
            continue
        r.ok(f"{s}: `{binary} wiring` with the service's environment")
        if binary == "obleth-gateway":
            gateway_wiring[s] = w
        port = w["ops_port"] if binary == "obleth-gateway" else w["port"]
        url = probe_url(s)
        want = f"http://127.0.0.1:{port}{w['paths']['readyz']}"
        r.check(url == want, f"{s}: healthcheck URL {url} == {want} (from wiring)")
        budget = w["drain_delay_secs"] + w["drain_timeout_secs"] + sum(after_drain(w))
        grace = seconds(services[s].get("stop_grace_period") or "10s")
        r.check(grace > budget, f"{s}: stop_grace_period {grace:g}s > drain budget {budget}s")
        if binary == "obleth-gateway":
            check_drain_covers(r, s, w)
        deps = services[s].get("depends_on") or {}
        if binary == "obleth-admin":
            r.check(all(deps.get(m, {}).get("condition") == "service_completed_successfully" for m in migrates),
                    f"{s}: starts after the migration completed")
        else:
            r.check(all(deps.get(a, {}).get("condition") == "service_healthy" for a in admins),
                    f"{s}: starts after the admin is healthy")
    for s in by_binary.get("obleth-mock-upstream", []):
        url = probe_url(s)
        listen = (services[s].get("environment") or {}).get("MOCK_LISTEN", "")
        r.check(listen.startswith("0.0.0.0:") and url.startswith(f"http://127.0.0.1:{listen.rsplit(':', 1)[-1]}/"),
                f"{s}: listens on {listen}, healthcheck {url}")
    check_lb(r, services, gateway_wiring)
    return r.done()


HAPROXY_CFG = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "compose", "haproxy.cfg")


def haproxy_sections(text: str, env: dict[str, str]) -> dict[str, list[list[str]]]:
    """`section name` -> its lines as words, with `"${VAR-default}"` filled
    from `env` as HAProxy fills them."""
    def fill(m):
        return env.get(m.group(1), m.group(3) or "")
    sections: dict[str, list[list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(-([^}]*))?\}", fill, raw.split("#", 1)[0]).replace('"', "")
        if not line.strip():
            continue
        words = line.split()
        if not raw[0].isspace():
            current = " ".join(words[:2])
            sections[current] = []
        elif current:
            sections[current].append(words)
    return sections


def check_lb(r: Report, services: dict, gateway_wiring: dict[str, dict]) -> None:
    """Clients reach the gateways only through HAProxy, which routes on each
    gateway's /readyz often enough to drop a draining one within its drain
    delay, and retries refused connections: the Compose rollout fails no
    request. The config is deploy/compose/haproxy.cfg, which the chaos tests
    run too."""
    lbs = [s for s, v in services.items() if (v.get("command") or [""])[0] == "haproxy"]
    if not r.check(len(lbs) == 1, f"one HAProxy load balancer in front of the gateways: {lbs}"):
        return
    lb = lbs[0]
    svc = services[lb]
    env = {k: str(v) for k, v in (svc.get("environment") or {}).items() if v is not None}
    cfg_path = svc["command"][svc["command"].index("-f") + 1] if "-f" in svc["command"] else ""
    mounts = [v for v in svc.get("volumes") or [] if v.get("target") == cfg_path]
    source = mounts[0]["source"] if mounts else ""
    if not r.check(bool(source) and os.path.exists(source) and os.path.samefile(source, HAPROXY_CFG),
                   f"{lb}: runs deploy/compose/haproxy.cfg (the chaos tests' config), mounted at {cfg_path}",
                   f"mounted: {source or 'nothing'}"):
        return
    r.check(bool(mounts) and mounts[0].get("read_only") is True, f"{lb}: config mounted read-only")
    haproxy = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.path.exists(p)), None)
    if r.check(haproxy is not None, "haproxy is installed for `haproxy -c`"):
        proc = subprocess.run([haproxy, "-c", "-f", source], env={"PATH": os.environ.get("PATH", ""), **env},
                              capture_output=True, text=True)
        r.check(proc.returncode == 0, f"{lb}: `haproxy -c -f haproxy.cfg` with the service's environment",
                (proc.stderr or proc.stdout).strip()[-300:])
    with open(source) as f:
        sections = haproxy_sections(f.read(), env)
    published = {int(p["target"]): p.get("published") for p in svc.get("ports") or []}
    fronts = {n: ls for n, ls in sections.items() if n.startswith("frontend ")}
    client_fronts = [ls for ls in fronts.values() if any(w[0] == "default_backend" for w in ls)]
    if not r.check(len(client_fronts) == 1, f"{lb}: one client frontend"):
        return
    front = client_fronts[0]
    backend_name = next(w[1] for w in front if w[0] == "default_backend")
    bind = next((w[1] for w in front if w[0] == "bind"), "")
    bind_port = int(bind.rsplit(":", 1)[-1]) if bind.rsplit(":", 1)[-1].isdigit() else None
    r.check(bind_port in published, f"{lb}: the client port {bind} is published on the host", f"published: {published}")
    backend = sections.get(f"backend {backend_name}") or []
    defaults = sections.get("defaults") or []
    both = defaults + backend
    r.check(any(w[:3] == ["option", "httpchk", "GET"] for w in backend), f"{lb}: backend {backend_name} checks over HTTP")
    for name, w in gateway_wiring.items():
        readyz, delay = w["paths"]["readyz"], w["drain_delay_secs"]
        r.check(any(ws[:4] == ["option", "httpchk", "GET", readyz] for ws in backend),
                f"{lb}: checks {readyz} (from {name}'s wiring)")
        servers = [ws for ws in backend if ws[0] == "server" and ws[2].rsplit(":", 1)[0] == name]
        if not r.check(len(servers) == 1, f"{lb}: one server for {name}"):
            continue
        ws = servers[0]
        r.check(ws[2] == f"{name}:{w['proxy_port']}", f"{lb}: server {ws[1]} -> {ws[2]} is {name}'s proxy port {w['proxy_port']} (from wiring)")
        r.check("check" in ws and ws[ws.index("port") + 1:ws.index("port") + 2] == [str(w["ops_port"])] if "port" in ws else False,
                f"{lb}: server {ws[1]} is checked on the ops port {w['ops_port']} (from wiring)")
        r.check("resolvers" in ws, f"{lb}: server {ws[1]} re-resolves its name (a replaced container has a new address)")
        opts = {}
        for d in (ws for ws in backend if ws[0] == "default-server"):
            opts.update({d[i]: d[i + 1] for i in range(1, len(d) - 1, 2)})
        for i in range(3, len(ws) - 1):
            if ws[i] in ("inter", "fall", "rise"):
                opts[ws[i]] = ws[i + 1]
        inter_ms = seconds(opts.get("inter", "2s")) * 1000
        fall = int(opts.get("fall", 3))
        r.check(inter_ms * fall * 2 <= delay * 1000,
                f"{lb}: {name} leaves the pool (inter {inter_ms:g} ms x fall {fall}) well within its drain delay {delay} s")
        host_ports = [p for p in services[name].get("ports") or [] if int(p["target"]) == w["proxy_port"]]
        r.check(not host_ports, f"{name}: proxy port {w['proxy_port']} not published: clients go through {lb}",
                f"published as {[p.get('published') for p in host_ports]}")
        r.check(services[name].get("stop_grace_period") is not None, f"{name}: stop_grace_period set")
    retry = next((ws[1:] for ws in both if ws[0] == "retry-on"), [])
    r.check("conn-failure" in retry, f"{lb}: retry-on {' '.join(retry)} retries a refused connection")
    r.check(any(ws[:2] == ["option", "redispatch"] for ws in both), f"{lb}: option redispatch retries on another gateway")
    deps = svc.get("depends_on") or {}
    r.check(all((deps.get(g) or {}).get("condition") == "service_healthy" for g in gateway_wiring),
            f"{lb}: starts after the gateways are healthy")
    monitors = [ls for ls in fronts.values() if any(w[0] == "monitor-uri" for w in ls)]
    counts = [w for ls in monitors for w in ls if w[:2] == ["monitor", "fail"]]
    r.check(any(f"nbsrv({backend_name})" in w and w[w.index("lt") + 1] == str(len(gateway_wiring)) for w in counts if "lt" in w),
            f"{lb}: its monitor URI fails while fewer than the {len(gateway_wiring)} gateways are in the pool")


# Fields that must agree between the chart's default render and the kustomize base.
def pod_facts(d: dict) -> dict:
    pod = d["spec"]["template"]["spec"]
    out = {"grace": pod.get("terminationGracePeriodSeconds"), "podSecurity": pod.get("securityContext"),
           "restartPolicy": pod.get("restartPolicy"), "automount": pod.get("automountServiceAccountToken"),
           "spread": pod.get("topologySpreadConstraints"), "initContainers": pod.get("initContainers")}
    for c in containers(pod):
        out[c["name"]] = {k: c.get(k) for k in ("command", "args", "ports", "startupProbe", "readinessProbe",
                                                 "livenessProbe", "lifecycle", "securityContext", "resources")}
        out[c["name"]]["env"] = sorted(e["name"] for e in c.get("env") or [])
        out[c["name"]]["mounts"] = sorted(m["mountPath"] for m in c.get("volumeMounts") or [])
    if d["kind"] == "Deployment":
        out["strategy"] = d["spec"].get("strategy")
    if d["kind"] == "Job":
        out["job"] = {k: d["spec"].get(k) for k in ("backoffLimit", "activeDeadlineSeconds", "podFailurePolicy")}
    return out


def equivalent(args) -> int:
    r = Report("equivalence [helm defaults vs deploy/k8s/base]")
    chart, kust = load(args.chart), load(args.kustomize)

    def by_component(docs):
        out = {}
        for d in docs:
            comp = (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component", "")
            # kustomize's configMapGenerator appends a content hash to the name.
            name = re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"]) if d["kind"] == "ConfigMap" else d["metadata"]["name"]
            # A component may have several Services (clients', ops): by name.
            out[(d["kind"], name if d["kind"] == "Service" else comp or name)] = d
        return out

    a, b = by_component(chart), by_component(kust)
    # `helm rollback`'s pre-rollback hook has no kubectl counterpart: a
    # kubectl rollback is an apply of the previous overlay, which the
    # migration Job of that release checks (`up` exits 5 past its finish).
    a.pop(("Job", "rollback-check"), None)
    r.check(set(a) == set(b), f"same resources: {sorted(set(a))}", f"only in chart: {sorted(set(a) - set(b))}; only in kustomize: {sorted(set(b) - set(a))}")
    for key in sorted(set(a) & set(b)):
        kind = key[0]
        if kind in ("Deployment", "Job"):
            fa, fb = pod_facts(a[key]), pod_facts(b[key])
            diff = [k for k in fa if fa.get(k) != fb.get(k)]
            r.check(not diff, f"{kind} {key[1]}: same pod spec (commands, probes, drain, security, resources, spread)",
                    "; ".join(f"{k}: chart {json.dumps(fa.get(k))} vs kustomize {json.dumps(fb.get(k))}" for k in diff))
        elif kind == "Service":
            r.check(a[key]["spec"]["ports"] == b[key]["spec"]["ports"], f"Service {key[1]}: same ports")
        elif kind == "ConfigMap":
            import tomllib
            da = {k: tomllib.loads(v) for k, v in (a[key].get("data") or {}).items()}
            db = {k: tomllib.loads(v) for k, v in (b[key].get("data") or {}).items()}
            r.check(da == db, "ConfigMap settings: same gateway.toml and admin.toml", f"chart {da} vs kustomize {db}")
        elif kind == "PodDisruptionBudget":
            r.check(a[key]["spec"].get("maxUnavailable") == b[key]["spec"].get("maxUnavailable"), "PodDisruptionBudget: same maxUnavailable")
    return r.done()


def same_image(args) -> int:
    """The finish Job must run the release the overlay deploys."""
    r = Report("same image")

    def images(path):
        return {c["image"] for d in load(path) if d["kind"] in ("Deployment", "Job")
                for c in containers(d["spec"]["template"]["spec"]) if binary_of(c).startswith("obleth-")}

    a, b = images(args.a), images(args.b)
    r.check(len(a) == 1 and a == b, f"{os.path.basename(args.b)} runs {sorted(b)}, as {os.path.basename(args.a)} ({sorted(a)})")
    return r.done()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifests")
    m.add_argument("file")
    m.add_argument("--label", required=True)
    m.add_argument("--bin-dir", required=True)
    m.add_argument("--helm-hooks", action="store_true")
    c = sub.add_parser("compose")
    c.add_argument("file")
    c.add_argument("--bin-dir", required=True)
    e = sub.add_parser("equivalent")
    e.add_argument("chart")
    e.add_argument("kustomize")
    i = sub.add_parser("same-image")
    i.add_argument("a")
    i.add_argument("b")
    args = p.parse_args()
    return {"manifests": manifests, "compose": compose, "equivalent": equivalent, "same-image": same_image}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
