"""Runs checkov on a directory of rendered manifests and the Dockerfile, and
holds the result against deploy/checkov-skips.yaml.

    python checkov_gate.py DIR SKIPS_FILE

Fails on a failed check that the skips file does not list, on a skip without
a reason, and on a listed check that no longer fails anywhere (a stale skip
would hide the next real finding).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import yaml


def main() -> int:
    directory, skips_file = sys.argv[1], sys.argv[2]
    with open(skips_file) as f:
        skips = yaml.safe_load(f)["skips"]
    problems = []
    reasons = {}
    for s in skips:
        if not str(s.get("reason") or "").strip():
            problems.append(f"{skips_file}: {s.get('id')} has no reason")
        reasons[s["id"]] = s.get("reason")

    checkov = os.path.join(os.path.dirname(sys.executable), "checkov")
    proc = subprocess.run(
        [checkov, "--directory", directory, "--framework", "kubernetes", "dockerfile",
         "--output", "json", "--soft-fail", "--skip-download", "--quiet"],
        capture_output=True, text=True,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        print(f"checkov exited {proc.returncode}")
        return 1
    out = json.loads(proc.stdout or "[]")
    reports = out if isinstance(out, list) else [out]
    passed = 0
    failed: dict[str, set[str]] = defaultdict(set)
    names = {}
    for rep in reports:
        if not isinstance(rep, dict) or "results" not in rep:
            continue
        passed += rep["summary"]["passed"]
        print(f"  ran   checkov {rep.get('check_type')}: {rep['summary']['passed']} passed, {rep['summary']['failed']} failed before the skips file")
        for chk in rep["results"]["failed_checks"]:
            failed[chk["check_id"]].add(f"{os.path.basename(chk['file_path'])}: {chk['resource']}")
            names[chk["check_id"]] = chk["check_name"]
    for cid in sorted(failed):
        where = sorted(failed[cid])
        if cid in reasons:
            print(f"  skip  {cid} {names[cid]} ({len(where)} resources; reason in {os.path.basename(skips_file)})")
        else:
            problems.append(f"{cid} {names[cid]} failed and is not justified in {skips_file}:\n        " + "\n        ".join(where))
    for cid in sorted(set(reasons) - set(failed)):
        problems.append(f"{cid} is skipped in {skips_file} but fails nowhere: remove it")
    for p in problems:
        print(f"  FAIL  {p}")
    print(f"checkov: {passed} passed, {sum(len(v) for k, v in failed.items() if k in reasons)} skipped with a reason, {len(problems)} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
