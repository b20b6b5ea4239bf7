"""Upgrade-safety checks on rendered manifests, beyond the wiring test.

    python upgrade.py migrations RENDER --mode hook|initContainer|admin --bin-dir DIR [--helm-hooks]
    python upgrade.py spread RENDER
    python upgrade.py helm-test RENDER --expect-version V --bin-dir DIR

`migrations`: exactly one way of running `obleth-migrator up` is rendered,
the one `--mode` names. hook: a Job (with --helm-hooks, a pre-install,
pre-upgrade hook) and no init container; initContainer: the admin pod's init
container, with the admin's image and database Secret, and no Job; admin:
neither, and the admin's effective `migrations.migrate_on_startup` is on. In
the other modes it must be off, or the admin would race the migrator.

`spread`: every gateway Deployment spreads its pods over zones and nodes
(`ScheduleAnyway`), with label selectors that select its own pods.

`helm-test`: the chart's `helm test` pod runs the post-upgrade rollout check
against the gateway Service, with the admin's database Secret and the canary
key from a Secret.
"""

from __future__ import annotations

import argparse
import sys
import tomllib

from cli import Binaries, CheckError
from wiring import Report, binary_of, containers, find_config, load

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
    args = p.parse_args()
    return {"migrations": migrations, "spread": spread}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
