"""docs/upgrading.md against the real CLI, endpoints and deploy files.

    python doccheck.py DOC --bin-dir DIR --values VALUES_YAML --compose COMPOSE_JSON
                       --manifests RENDER [RENDER ...] --repo ROOT

Checks, in the doc's code blocks and inline code:
- every `obleth-migrator`, `obleth-gateway` and `obleth-admin` command line
  names a real subcommand and real flags (`<binary> <sub> --help`);
- every URL to a health, readiness, version or metrics path uses a path the
  binaries serve (`wiring`) on the port that serves it (a Compose host port
  counts as the container port it publishes); other `/api/v1/...` paths are
  routes of the admin's OpenAPI document (`obleth-admin openapi`);
- every repository path exists; every chart value it names (`--set x.y=`,
  `migrations.job.lockWaitSecs`) exists in values.yaml;
- every `deployment/NAME`, `job/NAME`, `service/NAME` exists in the rendered
  manifests, and `kubectl set image deployment/D C=...` names a container of D.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys

import yaml

from cli import Binaries, CheckError
from wiring import Report, load

# A binary at a command position: after whitespace or a quote, or as .../bin/NAME.
BINARY_RE = re.compile(r"(?:^|[\s\"']|bin/)(obleth-(?:migrator|gateway|admin))(?=\s|$)")
OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", ")", "2>", "2>&1"}


def snippets(text: str) -> list[str]:
    """Code block lines (backslash continuations joined) and inline code spans."""
    return code_lines(text) + inline_code(text)


def code_lines(text: str) -> list[str]:
    return _split(text)[0]


def inline_code(text: str) -> list[str]:
    return _split(text)[1]


def _split(text: str) -> tuple[list[str], list[str]]:
    out, rest = [], []
    in_block = False
    buf = ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            rest.append("")
            continue
        if in_block:
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            out.append(buf + line)
            buf = ""
        else:
            rest.append(line)
    prose = "\n".join(rest)
    return out, [m.group(1).replace("\n", " ") for m in re.finditer(r"`([^`]+)`", prose)]


def invocations(snippet: str) -> list[list[str]]:
    found = []
    for m in BINARY_RE.finditer(snippet):
        tail = snippet[m.start(1):]
        try:
            lexer = shlex.shlex(tail, posix=True, punctuation_chars="|&;<>()")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            tokens = list(lexer)
        except ValueError:
            tokens = tail.split()
        argv = []
        for t in tokens:
            if t in OPERATORS or set(t) <= set("|&;<>()"):
                break
            argv.append(t.strip("`"))
        found.append(argv)
    return found


def values_paths(values: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in values.items():
        p = f"{prefix}{k}"
        out.add(p)
        if isinstance(v, dict):
            out |= values_paths(v, p + ".")
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("doc")
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--values", required=True)
    p.add_argument("--compose", required=True)
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--repo", required=True)
    args = p.parse_args()
    r = Report(f"docs [{os.path.relpath(args.doc, args.repo)}]")
    bins = Binaries(args.bin_dir)
    text = open(args.doc).read()
    snips = snippets(text)

    # 1. Command lines: anywhere in code blocks; inline code that starts with
    # a binary (elsewhere inline code quotes messages such as error text).
    commands = code_lines(text) + [s for s in inline_code(text) if re.match(r"(\S*/)?obleth-(migrator|gateway|admin)(\s|$)", s)]
    seen = set()
    for s in commands:
        for argv in invocations(s):
            key = " ".join(argv)
            if key in seen:
                continue
            seen.add(key)
            try:
                r.ok(f"`{key}` -> {bins.check_invocation(argv)}")
            except CheckError as e:
                r.fail(str(e))
    r.check(any(k.startswith("obleth-migrator status") for k in seen), "the doc runs `obleth-migrator status`")
    r.check(any(k.startswith("obleth-migrator plan") for k in seen), "the doc runs `obleth-migrator plan`")

    # 2. Endpoints: paths from `wiring`, ports from `wiring` and Compose's published ports.
    try:
        gw = bins.wiring("obleth-gateway", None, {})
        ad = bins.wiring("obleth-admin", None, {})
    except CheckError as e:
        r.fail(str(e))
        return r.done()
    serves: dict[int, set[str]] = {}
    serves.setdefault(gw["ops_port"], set()).update(gw["paths"].values())
    serves.setdefault(ad["port"], set()).update(ad["paths"].values())
    ops_paths = set(gw["paths"].values()) | set(ad["paths"].values())
    proc = subprocess.run([bins.path("obleth-admin"), "openapi"], capture_output=True, text=True)
    api_routes: list[re.Pattern] = []
    if proc.returncode == 0:
        doc = json.loads(proc.stdout)
        for route in doc.get("paths", {}):
            api_routes.append(re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(route)) + "$"))
        r.ok(f"`obleth-admin openapi`: {len(api_routes)} routes")
    else:
        r.fail(f"`obleth-admin openapi` exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}")
    for port in list(serves):
        if port == ad["port"]:
            serves[port] = serves[port] | {"/api/v1/*"}
    compose = json.load(open(args.compose))
    host_to_container = {}
    for svc in compose["services"].values():
        for pm in svc.get("ports") or []:
            if pm.get("published"):
                host_to_container[int(pm["published"])] = int(pm["target"])

    def is_api_route(path: str) -> bool:
        return any(rx.match(path) for rx in api_routes)

    urls = set()
    for s in snips:
        for m in re.finditer(r":(\d{2,5})(?:/proxy)?(/[A-Za-z0-9_./{}-]*)", s):
            urls.add((int(m.group(1)), m.group(2).rstrip(".")))
    for port, path in sorted(urls):
        if not (path in ops_paths or path.startswith("/api/")):
            continue
        container_port = host_to_container.get(port, port)
        where = f"port {port}" + (f" (Compose publishes container port {container_port})" if container_port != port else "")
        served = serves.get(container_port, set())
        ok = path in served or ("/api/v1/*" in served and is_api_route(path))
        r.check(ok, f"{path} on {where} is served", f"that port serves {sorted(p for p in served if p != '/api/v1/*')}")
    mentioned = set()
    for s in snips:
        for m in re.finditer(r"(?:^|\s)(/(?:api/[A-Za-z0-9_/{}-]+|healthz|readyz|metrics))(?=$|\s|[`,.;)])", s):
            mentioned.add(m.group(1))
    for path in sorted(mentioned):
        r.check(path in ops_paths or is_api_route(path), f"{path} is an endpoint of the binaries")

    # 3. Repository paths and chart values.
    for m in sorted(set(re.findall(r"(?<![\w/.-])((?:deploy|docs|scripts)/[A-Za-z0-9_./-]*[A-Za-z0-9_])", text))):
        r.check(os.path.exists(os.path.join(args.repo, m)), f"{m} exists")
    for m in sorted(set(re.findall(r"\]\(((?:\.\./|\./)?[A-Za-z0-9_./-]+\.md)(?:#[^)]*)?\)", text))):
        r.check(os.path.exists(os.path.normpath(os.path.join(os.path.dirname(args.doc), m))), f"link {m} exists")
    values = yaml.safe_load(open(args.values))
    known = values_paths(values)
    keys = set(re.findall(r"--set\s+([A-Za-z][\w.]*)=", text))
    for s in snips:
        m = re.fullmatch(r"([a-z][A-Za-z]*(?:\.[A-Za-z_][\w]*)+)(?:=\S*)?", s.strip())
        if m and m.group(1).split(".")[0] in values:
            keys.add(m.group(1))
    for k in sorted(keys):
        r.check(k in known, f"chart value {k} exists in values.yaml")

    # 4. Kubernetes object names.
    objects: dict[tuple[str, str], dict] = {}
    for f in args.manifests:
        for d in load(f):
            objects[(d["kind"].lower(), d["metadata"]["name"])] = d
    for kind, name in sorted(set(re.findall(r"\b(deployment|job|service)/([a-z0-9][a-z0-9-]*[a-z0-9])", text))):
        r.check((kind, name) in objects, f"{kind}/{name} exists in the rendered manifests")
    for dep, container in set(re.findall(r"set image deployment/([\w-]+) ([\w-]+)=", text)):
        d = objects.get(("deployment", dep))
        names = [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] if d else []
        r.check(container in names, f"`set image deployment/{dep} {container}=...` names a container of {dep}", f"it has {names}")
    return r.done()


if __name__ == "__main__":
    sys.exit(main())
