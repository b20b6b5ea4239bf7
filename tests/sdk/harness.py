"""What every client script of tests/sdk shares: its command line, running its
cases and the one line of evidence each case prints.

A client script is run by the sdk test (tests/sdk/main.rs) as

    python SCRIPT --gateway http://127.0.0.1:PORT --api-key obk_... KIND=MODEL...

with one KIND=MODEL pair a route of the gateway, KIND being the provider kind
the route reaches (openai, anthropic, mock). It calls `run` with its cases:
`per_route` cases run for every route, `once` cases once. A case returns the
line to print (the figures it saw) or raises; the script exits 1 naming every
failed case, 0 when all passed.
"""

import argparse
import os
import sys
import traceback
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """A gateway route: the model to send and the provider kind behind it."""

    kind: str
    model: str


@dataclass(frozen=True)
class Target:
    """Where the gateway listens (http://host:port) and the obleth key."""

    gateway: str
    api_key: str


class CheckFailed(Exception):
    """A case saw something other than what it expects."""


def check(condition, message):
    """Raises CheckFailed with `message` unless `condition` holds."""
    if not condition:
        raise CheckFailed(message)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="http://host:port of the gateway's proxy listener")
    parser.add_argument("--api-key", required=True, help="an obleth key")
    parser.add_argument("routes", nargs="+", metavar="KIND=MODEL")
    args = parser.parse_args(argv)
    routes = []
    for spec in args.routes:
        kind, sep, model = spec.partition("=")
        if not sep or not kind or not model:
            parser.error(f"a route is KIND=MODEL, got {spec!r}")
        routes.append(Route(kind, model))
    return Target(args.gateway.rstrip("/"), args.api_key), routes


def run(per_route, once=(), argv=None):
    """Runs the cases and exits: 0 when every case passed, 1 otherwise."""
    target, routes = _parse(sys.argv[1:] if argv is None else argv)
    script = os.path.basename(sys.argv[0])
    failed = []

    def attempt(label, case, *args):
        name = f"{label} {case.__name__}"
        try:
            line = case(target, *args)
        except Exception as err:  # every failure is reported, then the next case runs
            failed.append(name)
            print(f"[{script}] FAIL {name}: {type(err).__name__}: {err}", flush=True)
            traceback.print_exc(file=sys.stdout)
            return
        print(f"[{script}] ok   {name}: {line}", flush=True)

    for route in routes:
        for case in per_route:
            attempt(f"{route.kind}={route.model}", case, route)
    for case in once:
        attempt("-", case)
    total = len(routes) * len(per_route) + len(once)
    print(f"[{script}] {total - len(failed)} passed, {len(failed)} failed", flush=True)
    if failed:
        print(f"[{script}] failed: {', '.join(failed)}", flush=True)
        sys.exit(1)
