"""Upgrade-safety checks on rendered manifests, beyond the wiring test.

    python upgrade.py migrations RENDER --mode hook|initContainer|admin --bin-dir DIR [--helm-hooks]
    python upgrade.py spread RENDER --label NAME
    python upgrade.py helm-test RENDER --label NAME --expect-version V --canary-secret NAME
    python upgrade.py helm-test RENDER --label NAME --absent
    python upgrade.py images RENDER --label NAME --expect-tag V
    python upgrade.py operations RENDER --label NAME --bin-dir DIR
    python upgrade.py scale-transition BEFORE AFTER --label NAME --live N
    python upgrade.py same-init CHART_RENDER KUSTOMIZE_RENDER
    python upgrade.py helm-timeouts DOC --render PRODUCTION --finish-render PRODUCTION_WITH_FINISH

`migrations`: exactly one way of running `obleth-migrator up` is rendered,
the one `--mode` names. hook: a Job (with --helm-hooks, a pre-install,
pre-upgrade hook) and no init container; initContainer: the admin pod's init
container, with the admin's image and database Secret, and no Job; admin:
neither, and the admin's effective `migrations.migrate_on_startup` is on. In
the other modes it must be off, or the admin would race the migrator.

`spread`: every gateway Deployment spreads its pods over zones and nodes
(`ScheduleAnyway`), with label selectors that select its own pods.

`scale-transition`: turning the gateway HPA on in an upgrade keeps the
Deployment's `replicas` (the live count), so the upgrade never drops the
gateways to one replica.

`helm-test`: the chart's `helm test` pod runs the post-upgrade rollout check
(`obleth-admin rollout-status --wait`) with the release's version, against
the gateway Service's client port, with the admin's database Secret and the
canary key from the named Secret; with --absent, that no test pod is rendered.

`images`: every obleth container runs the expected release.

`operations`: a PodDisruptionBudget for the gateway and the admin that lets
a drain proceed, the ops port off the clients' Service, both scraped when
there are ServiceMonitors, migration Jobs that keep a failed run's logs and
fit the Deployments' progress deadlines.

`same-init`: the chart's and kustomize's migration init containers agree.

`helm-timeouts`: every `helm upgrade --timeout` in the runbook outlasts the
hook Jobs' deadlines plus a worst-case gateway surge step.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib

from cli import Binaries, CheckError
from wiring import Report, binary_of, container_env, containers, find_config, load

# The admin's default for migrations.migrate_on_startup (crates/config,
# MigrationSettings): what it does when neither its settings file nor its
# environment says otherwise.
MIGRATE_ON_STARTUP_DEFAULT = True


def deployments_of(docs: list[dict], binary: str) -> list[tuple[dict, dict]]:
    out = []
    for d in docs:
        if d["kind"] == "Deployment":
            for c in containers(d["spec"]["template"]["spec"]):
                if binary_of(c) == binary:
                    out.append((d, c))
    return out


def env_source(container: dict, name: str) -> dict | str | None:
    """A variable's `valueFrom` (or its literal `value`) in the container."""
    for e in container.get("env") or []:
        if e.get("name") == name:
            return e.get("valueFrom") if "valueFrom" in e else str(e.get("value"))
    return None


def migrate_on_startup(doc: dict, c: dict, docs: list[dict]) -> tuple[bool, str]:
    """The admin's effective migrations.migrate_on_startup: its environment
    wins over its settings file, which wins over the binary's default."""
    env = env_source(c, "OBLETH_MIGRATIONS__MIGRATE_ON_STARTUP")
    if isinstance(env, str):
        return env.strip().lower() == "true", f"OBLETH_MIGRATIONS__MIGRATE_ON_STARTUP={env}"
    text, source = find_config(doc, c, docs)
    if text is not None:
        value = tomllib.loads(text).get("migrations", {}).get("migrate_on_startup")
        if value is not None:
            return bool(value), f"migrate_on_startup = {str(value).lower()} in {source}"
    return MIGRATE_ON_STARTUP_DEFAULT, "the binary's default (set nowhere)"


def migrator_up(c: dict) -> bool:
    return binary_of(c) == "obleth-migrator" and (c.get("args") or [None])[0] == "up"


def migrations(args) -> int:
    r = Report(f"migrations [{args.label}, mode {args.mode}]")
    bins = Binaries(args.bin_dir)
    docs = load(args.file)
    jobs = [(d, c) for d in docs if d["kind"] == "Job"
            for c in containers(d["spec"]["template"]["spec"]) if migrator_up(c)]
    admins = deployments_of(docs, "obleth-admin")
    if not r.check(len(admins) == 1, "one admin Deployment", f"found {len(admins)}"):
        return r.done()
    admin, main = admins[0]
    name = admin["metadata"]["name"]
    inits = [c for c in admin["spec"]["template"]["spec"].get("initContainers") or [] if migrator_up(c)]
    on, source = migrate_on_startup(admin, main, docs)
    want_job, want_init, want_on = {"hook": (1, 0, False), "initContainer": (0, 1, False), "admin": (0, 0, True)}[args.mode]

    r.check(len(jobs) == want_job, f"{want_job} Job running `obleth-migrator up`",
            f"found {[d['metadata']['name'] for d, _ in jobs]}")
    r.check(len(inits) == want_init, f"{name}: {want_init} init container running `obleth-migrator up`",
            f"found {[c['name'] for c in inits]}")
    r.check(on == want_on, f"{name}: migrate_on_startup is {'on' if want_on else 'off'} ({source})",
            "the admin would apply migrations at start" if on else "the admin would wait for a migrator nobody runs")

    db = env_source(main, "OBLETH_DATABASE__URL")
    for d, c in jobs:
        jname = d["metadata"]["name"]
        r.check(env_source(c, "DATABASE_URL") == db and isinstance(db, dict),
                f"{jname}: DATABASE_URL from the admin's Secret {db}", f"got {env_source(c, 'DATABASE_URL')}")
        if args.helm_hooks:
            hooks = set(((d["metadata"].get("annotations") or {}).get("helm.sh/hook") or "").split(","))
            r.check({"pre-install", "pre-upgrade"} <= hooks, f"{jname}: a pre-install,pre-upgrade hook", f"helm.sh/hook {sorted(hooks)}")
    for c in inits:
        argv = list(c["command"]) + list(c.get("args") or [])
        try:
            r.ok(f"{name}: init container `{bins.check_invocation(argv)}` matches the migrator's --help")
        except CheckError as e:
            r.fail(f"{name}: init container {c['name']}: {e}")
        r.check("--force" not in argv, f"{name}: init container never forces")
        r.check(c.get("image") == main.get("image"), f"{name}: init container runs the admin's image {main.get('image')}",
                f"got {c.get('image')}")
        r.check(env_source(c, "DATABASE_URL") == db and isinstance(db, dict),
                f"{name}: init container's DATABASE_URL from the admin's Secret {db}", f"got {env_source(c, 'DATABASE_URL')}")
        sc = c.get("securityContext") or {}
        r.check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False,
                f"{name}: init container read-only and without privilege escalation")
    return r.done()


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against
    a pod's labels; an empty selector selects nothing here."""
    ml = selector.get("matchLabels") or {}
    exprs = selector.get("matchExpressions") or []
    if not ml and not exprs:
        return False
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for e in exprs:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


SPREAD_KEYS = ("topology.kubernetes.io/zone", "kubernetes.io/hostname")


def spread(args) -> int:
    r = Report(f"spread [{args.label}]")
    docs = load(args.file)
    gateways = deployments_of(docs, "obleth-gateway")
    r.check(len(gateways) == 1, "one gateway Deployment", f"found {len(gateways)}")
    for d, _ in gateways:
        name, ns = d["metadata"]["name"], d["metadata"].get("namespace")
        pod = d["spec"]["template"]
        labels = pod["metadata"].get("labels") or {}
        constraints = pod["spec"].get("topologySpreadConstraints") or []
        others = [(o["metadata"]["name"], o["spec"]["template"]["metadata"].get("labels") or {}) for o in docs
                  if o["kind"] in ("Deployment", "StatefulSet", "Job") and o is not d and o["metadata"].get("namespace") == ns]
        for key in SPREAD_KEYS:
            found = [c for c in constraints if c.get("topologyKey") == key]
            if not r.check(len(found) == 1, f"{name}: spreads over {key}", f"constraints: {[c.get('topologyKey') for c in constraints]}"):
                continue
            c = found[0]
            r.check(c.get("whenUnsatisfiable") == "ScheduleAnyway",
                    f"{name}: {key} is a preference (ScheduleAnyway), never a pending surge pod", f"got {c.get('whenUnsatisfiable')}")
            sel = c.get("labelSelector") or {}
            r.check(selects(sel, labels), f"{name}: the {key} selector selects its own pods {labels}", f"selector {sel}")
            strays = [n for n, ls in others if selects(sel, ls)]
            r.check(not strays, f"{name}: the {key} selector selects no other workload's pods", f"also selects {strays}")
    return r.done()


ROLLOUT_CHECK_FLAGS = ("--expect-version", "--gateway-url", "--canary-key-file", "--timeout-secs")


def flag_values(argv: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, tok in enumerate(argv):
        if tok.startswith("--"):
            name, _, value = tok.partition("=")
            nxt = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            out[name] = value or nxt
    return out


def helm_test(args) -> int:
    """The `helm test` pod runs the post-upgrade rollout check: the release's
    version, the gateway Service's client port, the canary key from the named
    Secret, the admin's database Secret. With --absent: no test pod at all.
    The subcommand's flags are not held against `obleth-admin --help`: the
    command is being written alongside this manifest, with these flags."""
    r = Report(f"helm test [{args.label}]")
    docs = load(args.file)
    tests = [d for d in docs if d["kind"] == "Pod"
             and "test" in ((d["metadata"].get("annotations") or {}).get("helm.sh/hook") or "").split(",")]
    if args.absent:
        r.check(not tests, "no helm test pod without rolloutCheck.canaryKeySecret", f"found {[d['metadata']['name'] for d in tests]}")
        return r.done()
    if not r.check(len(tests) == 1, "one helm test pod (helm.sh/hook: test)", f"found {len(tests)}"):
        return r.done()
    pod = tests[0]
    name, ns = pod["metadata"]["name"], pod["metadata"].get("namespace")
    spec = pod["spec"]
    cs = [c for c in containers(spec) if binary_of(c) == "obleth-admin"]
    if not r.check(len(cs) == 1, f"{name}: runs obleth-admin"):
        return r.done()
    c = cs[0]
    argv = list(c.get("command") or []) + list(c.get("args") or [])
    flags = flag_values(argv)
    r.check(argv[1:2] == ["rollout-status"], f"{name}: `obleth-admin rollout-status`", f"argv {argv}")
    for f in ROLLOUT_CHECK_FLAGS:
        r.check(flags.get(f) is not None, f"{name}: {f} {flags.get(f)}")
    r.check("--wait" in flags and flags["--wait"] is None, f"{name}: --wait")
    r.check(flags.get("--expect-version") == args.expect_version,
            f"{name}: --expect-version {flags.get('--expect-version')} == {args.expect_version}")
    r.check(str(flags.get("--timeout-secs") or "").isdigit(), f"{name}: --timeout-secs is whole seconds")
    r.check(spec.get("restartPolicy") == "Never", f"{name}: restartPolicy Never (a failed check fails `helm test`)")

    # The gateway URL names the gateway Service and its client (proxy) port.
    url = flags.get("--gateway-url") or ""
    m = re.fullmatch(r"http://([a-z0-9-]+)(?:\.([a-z0-9-]+)(?:\.svc(?:\.cluster\.local)?)?)?:(\d+)/?", url)
    gateways = deployments_of(docs, "obleth-gateway")
    if r.check(bool(m) and bool(gateways), f"{name}: --gateway-url {url} is http://SERVICE[.NAMESPACE.svc]:PORT"):
        svc_name, svc_ns, port = m.group(1), m.group(2) or ns, int(m.group(3))
        gw, gc = gateways[0]
        labels = gw["spec"]["template"]["metadata"].get("labels") or {}
        proxy = next((p for p in gc.get("ports") or [] if p.get("name") == "http"), {}).get("containerPort")
        svcs = [s for s in docs if s["kind"] == "Service" and s["metadata"]["name"] == svc_name
                and s["metadata"].get("namespace") == svc_ns]
        ok = bool(svcs) and all(labels.get(k) == v for k, v in (svcs[0]["spec"].get("selector") or {}).items())
        if r.check(ok, f"{name}: Service {svc_name} in {svc_ns} selects the gateway pods"):
            ports = [p for p in svcs[0]["spec"]["ports"] if p["port"] == port]
            target = ports[0].get("targetPort") if ports else None
            target = next((p["containerPort"] for p in gc.get("ports") or [] if p.get("name") == target), target)
            r.check(target == proxy, f"{name}: port {port} of {svc_name} reaches the proxy port {proxy}", f"reaches {target}")

    # The canary key: a file inside a mount of the named Secret.
    key_file = flags.get("--canary-key-file") or ""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    secret = None
    for mnt in c.get("volumeMounts") or []:
        base = mnt["mountPath"].rstrip("/") + "/"
        if key_file.startswith(base):
            vol = volumes.get(mnt["name"]) or {}
            sec = vol.get("secret") or {}
            rel = key_file[len(base):]
            items = sec.get("items")
            if sec and (items is None or any(i["path"] == rel for i in items)):
                secret = sec.get("secretName")
    r.check(secret == args.canary_secret, f"{name}: --canary-key-file {key_file} is in Secret {secret} (rolloutCheck.canaryKeySecret {args.canary_secret})")

    # The database: the Secret the admin reads.
    admins = deployments_of(docs, "obleth-admin")
    admin_db = env_source(admins[0][1], "OBLETH_DATABASE__URL") if admins else None
    db = env_source(c, "DATABASE_URL")
    r.check(isinstance(db, dict) and db == admin_db, f"{name}: DATABASE_URL from the admin's Secret {admin_db}", f"got {db}")
    sc = c.get("securityContext") or {}
    r.check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
            and (sc.get("runAsNonRoot") or (spec.get("securityContext") or {}).get("runAsNonRoot")) is True,
            f"{name}: non-root, read-only, no privilege escalation")
    return r.done()


def pod_specs(docs: list[dict]):
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d, d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d, d["spec"]


def images(args) -> int:
    """Every obleth container runs the expected release: the chart's
    appVersion (or a digest) unless a values file pins something else."""
    r = Report(f"images [{args.label}]")
    seen = 0
    for d, spec in pod_specs(load(args.file)):
        for c in (spec.get("initContainers") or []) + containers(spec):
            if not binary_of(c).startswith("obleth-"):
                continue
            seen += 1
            image = c.get("image") or ""
            r.check(image.endswith(f":{args.expect_tag}") or "@sha256:" in image,
                    f"{d['metadata']['name']}/{c['name']}: {image} is release {args.expect_tag}",
                    "a pinned tag keeps an older release after the chart moved on")
    r.check(seen > 0, f"{seen} obleth containers")
    return r.done()


def startup_budget(c: dict) -> int:
    p = c.get("startupProbe") or {}
    return int(p.get("periodSeconds", 10)) * int(p.get("failureThreshold", 3)) if p else 0


def operations(args) -> int:
    """What keeps a rollout and its aftermath observable and interruptible:
    disruption budgets, the ops port off the clients' Service, scraping,
    migration deadlines and logs."""
    r = Report(f"operations [{args.label}]")
    bins = Binaries(args.bin_dir)
    docs = load(args.file)
    services = [d for d in docs if d["kind"] == "Service"]
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    deployments = deployments_of(docs, "obleth-gateway") + deployments_of(docs, "obleth-admin")
    for d, c in deployments:
        name, ns = d["metadata"]["name"], d["metadata"].get("namespace")
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        binary = binary_of(c)
        text, _ = find_config(d, c, docs)
        w = bins.wiring(binary, text, container_env(c))
        metrics_port = w["ops_port"] if binary == "obleth-gateway" else w["port"]

        # Disruptions: one budget, which still lets a node drain proceed.
        mine = [p for p in pdbs if p["metadata"].get("namespace") == ns
                and selects(p["spec"].get("selector") or {}, labels)]
        if r.check(len(mine) == 1, f"{name}: one PodDisruptionBudget covers it", f"found {[p['metadata']['name'] for p in mine]}"):
            spec = mine[0]["spec"]
            hpa = next((h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == name), None)
            replicas = hpa["spec"].get("minReplicas", 1) if hpa else d["spec"].get("replicas", 1)
            mu, ma = spec.get("maxUnavailable"), spec.get("minAvailable")
            drains = (mu not in (None, 0, "0%")) or (isinstance(ma, int) and ma < replicas)
            r.check(drains, f"{name}: its budget (maxUnavailable {mu}, minAvailable {ma}) lets a node drain evict it ({replicas} replicas)")

        # Services that select the pods, and the ports they reach.
        mine_svcs = [s for s in services if s["metadata"].get("namespace") == ns
                     and all(labels.get(k) == v for k, v in (s["spec"].get("selector") or {}).items())
                     and s["spec"].get("selector")]

        def targets(s):
            out = set()
            for p in s["spec"]["ports"]:
                t = p.get("targetPort", p["port"])
                out.add(next((cp["containerPort"] for cp in c.get("ports") or [] if cp.get("name") == t), t))
            return out

        if binary == "obleth-gateway":
            clients = [s for s in mine_svcs if w["proxy_port"] in targets(s)]
            for s in clients:
                r.check(w["ops_port"] not in targets(s),
                        f"{name}: the clients' Service {s['metadata']['name']} does not publish the ops port {w['ops_port']} (metrics, health)",
                        f"it reaches {sorted(targets(s))}")
            ops = [s for s in mine_svcs if w["ops_port"] in targets(s)]
            r.check(bool(ops) and all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in ops),
                    f"{name}: a ClusterIP Service reaches the ops port: {[s['metadata']['name'] for s in ops]}")

        # Scraping: when the render has ServiceMonitors, each service is scraped.
        if monitors:
            scraped = []
            for m in monitors:
                sel = ((m["spec"].get("selector") or {}).get("matchLabels")) or {}
                for s in mine_svcs:
                    if sel and all((s["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items()):
                        for ep in m["spec"].get("endpoints") or []:
                            port = next((p for p in s["spec"]["ports"] if p.get("name") == ep.get("port")), None)
                            if port is None:
                                continue
                            t = port.get("targetPort", port["port"])
                            t = next((cp["containerPort"] for cp in c.get("ports") or [] if cp.get("name") == t), t)
                            if t == metrics_port and ep.get("path") == w["paths"]["metrics"]:
                                scraped.append(m["metadata"]["name"])
            r.check(bool(scraped), f"{name}: a ServiceMonitor scrapes {w['paths']['metrics']} on port {metrics_port} (from wiring)",
                    "nothing scrapes it")

    # Migrations that run alongside the rollout must fit its progress deadline,
    # and a failed one keeps its logs.
    for d, spec in pod_specs(docs):
        if d["kind"] != "Job" or not any(binary_of(c) == "obleth-migrator" for c in containers(spec)):
            continue
        name = d["metadata"]["name"]
        ann = d["metadata"].get("annotations") or {}
        r.check("ttlSecondsAfterFinished" not in d["spec"],
                f"{name}: no ttlSecondsAfterFinished: a failed Job keeps its logs",
                f"deleted {d['spec'].get('ttlSecondsAfterFinished')} s after it fails")
        r.check("hook-failed" not in (ann.get("helm.sh/hook-delete-policy") or ""), f"{name}: not deleted when it fails")
        if "helm.sh/hook" in ann or not (containers(spec) and (containers(spec)[0].get("args") or [""])[0] == "up"):
            continue
        deadline = int(d["spec"].get("activeDeadlineSeconds") or 0)
        for dep, c in deployments:
            pds = dep["spec"].get("progressDeadlineSeconds", 600)
            need = deadline + startup_budget(c)
            r.check(pds >= need, f"{dep['metadata']['name']}: progressDeadlineSeconds {pds} >= {name}'s activeDeadlineSeconds {deadline} + startup probe budget {startup_budget(c)}",
                    "the rollout would be reported stalled while the migration still runs")
    admins = deployments_of(docs, "obleth-admin")
    if admins and any(binary_of(c) == "obleth-migrator" for c in admins[0][0]["spec"]["template"]["spec"].get("initContainers") or []):
        admin = admins[0][0]
        apd = admin["spec"].get("progressDeadlineSeconds", 600)
        r.check(apd > 600 and apd >= startup_budget(admins[0][1]) + 600,
                f"{admin['metadata']['name']}: progressDeadlineSeconds {apd} leaves its init container's migration time beyond the start-up")
        for dep, _ in deployments_of(docs, "obleth-gateway"):
            pds = dep["spec"].get("progressDeadlineSeconds", 600)
            r.check(pds >= apd, f"{dep['metadata']['name']}: progressDeadlineSeconds {pds} >= the migrating admin's {apd}")
    return r.done()


def scale_transition(args) -> int:
    """An upgrade from BEFORE to AFTER, applied with a three-way merge (Helm,
    kubectl apply): a `replicas` that BEFORE set and AFTER leaves out is
    deleted, and the Deployment drops to the default of 1 replica until an
    HPA reacts. AFTER must keep the field, and where an HPA owns the count,
    keep the live one (--live, what the cluster lookup found)."""
    r = Report(f"scale transition [{args.label}]")
    before = {d["metadata"]["name"]: d for d in load(args.before) if d["kind"] == "Deployment"}
    after_docs = load(args.after)
    after = {d["metadata"]["name"]: d for d in after_docs if d["kind"] == "Deployment"}
    owned = {h["spec"]["scaleTargetRef"]["name"] for h in after_docs if h["kind"] == "HorizontalPodAutoscaler"}
    r.check(bool(owned), f"an HPA in the upgraded release: {sorted(owned)}")
    for name, d in sorted(before.items()):
        if "replicas" not in d["spec"] or name not in after:
            continue
        got = after[name]["spec"].get("replicas")
        if name in owned:
            r.check(got == args.live, f"{name}: replicas {got} == the live {args.live} (HPA-owned: the upgrade keeps the scale)",
                    "the field is deleted: the Deployment drops to 1 replica" if got is None else "the upgrade resets the HPA's scale")
        else:
            r.check(got is not None, f"{name}: replicas kept ({d['spec']['replicas']} -> {got})")
    return r.done()


def duration_secs(text: str) -> int:
    """A Go duration as Helm's --timeout takes it: 30m, 1h30m, 900s."""
    total = 0
    for num, unit in re.findall(r"(\d+)([hms])", text):
        total += int(num) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def helm_timeouts(args) -> int:
    """Every `helm upgrade ... --timeout T` in the runbook outlasts what it
    waits for: the hook Jobs' activeDeadlineSeconds (the migration, and the
    finish Job when the command turns it on), then one gateway surge step
    at its worst: the startup probe's budget. `--wait` holds until the new
    ReplicaSet's pods are ready; it does not wait for a replaced pod's drain
    (its grace period, up to the longest request the gateway allows), and
    neither does the rollout: a terminating pod no longer counts against
    maxSurge. A shorter timeout fails (or, with --atomic, rolls back) an
    upgrade that was still within its deadlines."""
    r = Report(f"helm --timeout [{args.doc}]")
    text = open(args.doc).read().replace("\\\n", " ")
    renders = {"": load(args.render), "finish": load(args.finish_render)}
    commands = [m.group(0) for m in re.finditer(r"helm upgrade [^\n`]*--timeout[ =](\S+)", text)]
    r.check(bool(commands), f"{len(commands)} `helm upgrade --timeout` commands")
    for cmd in commands:
        timeout = duration_secs(re.search(r"--timeout[ =](\S+)", cmd).group(1))
        docs = renders["finish" if "migrations.finish.enabled=true" in cmd else ""]
        hooks = [d for d in docs if d["kind"] == "Job" and "helm.sh/hook" in (d["metadata"].get("annotations") or {})]
        deadline = sum(int(d["spec"].get("activeDeadlineSeconds") or 0) for d in hooks)
        gw = deployments_of(docs, "obleth-gateway")
        step = 0
        if gw:
            _, c = gw[0]
            step = startup_budget(c)
        need = deadline + step
        r.check(timeout > need, f"`{cmd[:60]}...`: --timeout {timeout} s > hook deadlines {deadline} s "
                f"({', '.join(d['metadata']['name'] for d in hooks)}) + one surge step {step} s = {need} s")
    return r.done()


def rollback_check(args) -> int:
    """`helm rollback` runs no pre-upgrade hook: a pre-rollback hook Job runs
    the target release's `obleth-migrator check`, which exits 5 when that
    release cannot run on the schema (a rollback past its `finish`), and the
    Job fails at once on 2 to 5 instead of retrying, so the rollback fails in
    seconds rather than crash-looping the pods for the whole --timeout."""
    r = Report(f"rollback check [{args.label}]")
    bins = Binaries(args.bin_dir)
    docs = load(args.file)
    jobs = [d for d in docs if d["kind"] == "Job"
            and "pre-rollback" in ((d["metadata"].get("annotations") or {}).get("helm.sh/hook") or "").split(",")]
    if not r.check(len(jobs) == 1, "one pre-rollback hook Job", f"found {len(jobs)}"):
        return r.done()
    job = jobs[0]
    name = job["metadata"]["name"]
    cs = [c for c in containers(job["spec"]["template"]["spec"]) if binary_of(c) == "obleth-migrator"]
    if not r.check(len(cs) == 1, f"{name}: runs obleth-migrator"):
        return r.done()
    c = cs[0]
    argv = list(c.get("command") or []) + list(c.get("args") or [])
    r.check(argv[1:] == ["check"], f"{name}: `obleth-migrator check`", f"argv {argv}")
    try:
        r.ok(f"{name}: `{bins.check_invocation(argv)}` matches the migrator's --help")
    except CheckError as e:
        r.fail(f"{name}: {e}")
    env = {e["name"]: e for e in c.get("env") or []}
    r.check("secretKeyRef" in ((env.get("DATABASE_URL") or {}).get("valueFrom") or {}),
            f"{name}: DATABASE_URL from a Secret")
    rules = (job["spec"].get("podFailurePolicy") or {}).get("rules") or []
    fail_codes = {v for rule in rules if rule.get("action") == "FailJob"
                  for v in (rule.get("onExitCodes") or {}).get("values") or []
                  if (rule.get("onExitCodes") or {}).get("containerName") == c["name"]}
    r.check({2, 3, 4, 5} <= fail_codes, f"{name}: exits 2 to 5 fail the Job at once", f"FailJob on {sorted(fail_codes)}")
    deadline = job["spec"].get("activeDeadlineSeconds")
    r.check(isinstance(deadline, int) and deadline <= 300, f"{name}: activeDeadlineSeconds {deadline} <= 300 (fails in minutes at most)")
    return r.done()


def same_init(args) -> int:
    """The chart's initContainer mode and the kustomize component run the
    same migrator container (image aside: each pins its own)."""
    r = Report("same init container [chart vs kustomize]")

    def init(path):
        admins = deployments_of(load(path), "obleth-admin")
        inits = admins[0][0]["spec"]["template"]["spec"].get("initContainers") or [] if admins else []
        return [{k: v for k, v in c.items() if k != "image"} for c in inits]

    a, b = init(args.chart), init(args.kustomize)
    if r.check(len(a) == 1 and len(b) == 1, f"one admin init container in each (chart {len(a)}, kustomize {len(b)})"):
        diff = sorted(k for k in set(a[0]) | set(b[0]) if a[0].get(k) != b[0].get(k))
        r.check(not diff, "same command, args, env, resources and security context",
                "; ".join(f"{k}: chart {a[0].get(k)} vs kustomize {b[0].get(k)}" for k in diff))
    return r.done()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("migrations")
    m.add_argument("file")
    m.add_argument("--label", required=True)
    m.add_argument("--mode", required=True, choices=["hook", "initContainer", "admin"])
    m.add_argument("--bin-dir", required=True)
    m.add_argument("--helm-hooks", action="store_true")
    sp = sub.add_parser("spread")
    sp.add_argument("file")
    sp.add_argument("--label", required=True)
    t = sub.add_parser("helm-test")
    t.add_argument("file")
    t.add_argument("--label", required=True)
    t.add_argument("--expect-version")
    t.add_argument("--canary-secret")
    t.add_argument("--absent", action="store_true")
    rc = sub.add_parser("rollback-check")
    rc.add_argument("file")
    rc.add_argument("--label", required=True)
    rc.add_argument("--bin-dir", required=True)
    im = sub.add_parser("images")
    im.add_argument("file")
    im.add_argument("--label", required=True)
    im.add_argument("--expect-tag", required=True)
    op = sub.add_parser("operations")
    op.add_argument("file")
    op.add_argument("--label", required=True)
    op.add_argument("--bin-dir", required=True)
    st = sub.add_parser("scale-transition")
    st.add_argument("before")
    st.add_argument("after")
    st.add_argument("--label", required=True)
    st.add_argument("--live", type=int, required=True)
    ht = sub.add_parser("helm-timeouts")
    ht.add_argument("doc")
    ht.add_argument("--render", required=True)
    ht.add_argument("--finish-render", required=True)
    si = sub.add_parser("same-init")
    si.add_argument("chart")
    si.add_argument("kustomize")
    args = p.parse_args()
    return {"same-init": same_init, "helm-timeouts": helm_timeouts, "migrations": migrations, "spread": spread, "helm-test": helm_test, "rollback-check": rollback_check, "images": images,
            "operations": operations, "scale-transition": scale_transition}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
