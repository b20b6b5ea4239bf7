"""Asking the obleth binaries what they serve and accept.

Shared by the wiring, Compose and docs checks: `wiring()` runs
`<binary> --config FILE wiring` in a clean environment, and `check_invocation()`
checks that a command line such as `obleth-migrator up --lock-wait-secs 120`
names a real subcommand and real flags, by reading `<binary> <sub> --help`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

BINARIES = ("obleth-gateway", "obleth-admin", "obleth-migrator", "obleth-mock-upstream")


class CheckError(Exception):
    """A check that failed; the message says what differs."""


class Binaries:
    """The workspace's built binaries, found in one directory."""

    def __init__(self, bin_dir: str):
        self.dir = Path(bin_dir)

    def path(self, name: str) -> str:
        p = self.dir / name
        if not p.is_file():
            raise CheckError(f"{p} does not exist: build it with cargo build -p obleth-...")
        return str(p)

    def wiring(self, binary: str, settings: str | None, env: dict[str, str]) -> dict:
        """The effective ports, paths and drain timings of `binary` with a
        settings file holding `settings` (or none) and the given environment,
        as the container would have it. Nothing of this process's environment
        leaks in except PATH."""
        clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        clean.update(env)
        args = [self.path(binary)]
        with tempfile.TemporaryDirectory() as tmp:
            if settings is not None:
                f = Path(tmp) / "settings.toml"
                f.write_text(settings)
                args += ["--config", str(f)]
            args.append("wiring")
            proc = subprocess.run(args, env=clean, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckError(
                f"`{binary} --config FILE wiring` exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise CheckError(f"`{binary} wiring` did not print JSON ({e}): {proc.stdout[:200]!r}")

    @functools.lru_cache(maxsize=None)
    def help(self, binary: str, subcommand: str | None) -> tuple[int, str]:
        args = [self.path(binary)] + ([subcommand] if subcommand else []) + ["--help"]
        proc = subprocess.run(args, capture_output=True, text=True)
        return proc.returncode, proc.stdout + proc.stderr

    def subcommands(self, binary: str) -> set[str]:
        code, text = self.help(binary, None)
        if code != 0:
            raise CheckError(f"`{binary} --help` exited {code}")
        subs, in_commands = set(), False
        for line in text.splitlines():
            if line.strip().lower().startswith("commands:"):
                in_commands = True
                continue
            if in_commands:
                m = re.match(r"^\s{2}([a-z][a-z0-9-]*)\s", line + " ")
                if m:
                    subs.add(m.group(1))
                elif line.strip() and not line.startswith(" "):
                    in_commands = False
        return subs

    def check_invocation(self, argv: list[str]) -> str:
        """Checks one command line (argv[0] is an obleth binary, path or
        name). Answers a short description; raises CheckError on an unknown
        subcommand or flag."""
        binary = os.path.basename(argv[0])
        if binary not in BINARIES:
            raise CheckError(f"{argv[0]} is not an obleth binary")
        rest = argv[1:]
        subs = self.subcommands(binary) if binary != "obleth-mock-upstream" else set()
        # Flags before the subcommand belong to the binary, after it to the
        # subcommand (clap's global flags are listed in both helps).
        sub, top_flags, sub_flags = None, [], []
        for i, tok in enumerate(rest):
            value_of_previous = i > 0 and rest[i - 1].startswith("--") and "=" not in rest[i - 1]
            if tok.startswith("-"):
                (sub_flags if sub else top_flags).append(tok.split("=", 1)[0])
            elif sub is None and tok in subs:
                sub = tok
            elif sub is None and subs and not value_of_previous:
                raise CheckError(
                    f"`{' '.join([binary] + rest)}`: `{tok}` is not a subcommand of {binary} "
                    f"(it has: {', '.join(sorted(subs))})"
                )
        for where, flags in [(None, top_flags)] + ([(sub, sub_flags)] if sub else []):
            code, text = self.help(binary, where)
            if code != 0:
                raise CheckError(f"`{binary} {where or ''} --help` exited {code}: {text.strip()[:300]}")
            known = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))
            for flag in flags:
                if flag not in known:
                    raise CheckError(
                        f"`{' '.join([binary] + rest)}`: {flag} is not a flag of `{' '.join(filter(None, [binary, where]))}`"
                    )
        flags = top_flags + sub_flags
        return " ".join([binary] + ([sub] if sub else []) + flags)
