"""Warm-up with many keys: a database-mode gateway started over 0, 100k and 1M
keys; how long its warm-up takes, how long until /readyz, and its memory."""

import time

import obleth_db
import targets
from procs import Group, http_get, http_status


def metrics(port):
    """The ops listener's Prometheus text as {name: value}, summed over labels."""
    status, text = http_get(port, "/metrics")
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            pass
    return values


def labelled(port, name):
    """One metric of the ops listener's Prometheus text as {labels: value}."""
    _, text = http_get(port, "/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name):]] = float(value)
    return out


def warmup(cluster, gateway, migrator, work, log_dir, sizes, db="obleth_keys", tag="", env=None):
    """Answers one row per size: keys in the table, the gateway's warm-up
    metrics, seconds from spawn to ready, and VmRSS once ready. `gateway` and
    `migrator` are binaries (or a directory holding both); `db` is created
    here; `tag` tells apart the logs of two builds; `env` adds settings."""
    url = cluster.create_database(db)
    obleth_db.migrate(migrator, url)
    rows = []
    have = 0
    for n in sizes:
        inserted = None
        if n > have:
            t = time.monotonic()
            obleth_db.insert_bulk_keys(cluster, db, "k", have + 1, n)
            inserted = time.monotonic() - t
            have = n
        print(f"bench: warm-up{' ' + tag if tag else ''} with {n} keys (insert took {inserted or 0:.1f} s)",
              flush=True)
        group = Group(log_dir)
        name = f"obleth-keys{'-' + tag if tag else ''}-{n}"
        try:
            config, port, ops = targets.gateway_toml(work, name, db=True)
            proc = targets.start_gateway(group, gateway, work, name, config, port, ops, url,
                                         ready_secs=600, env=env)
            rss_ready = proc.rss_kib()
            # The cache's bookkeeping settles after the inserts; read again.
            time.sleep(2)
            m = metrics(ops)
            check = None
            if n:
                # A key from the middle must be answered from the cache: 200,
                # and no database lookup counted.
                key = obleth_db.bulk_key("k", n // 2 + 1)
                check = http_status(port, "/v1/models", {"Authorization": f"Bearer {key}"})
                m2 = metrics(ops)
                check = {"status": check, "db_lookups": m2.get("obleth_key_db_lookups_total", 0.0)}
            rows.append({
                "keys": n,
                "insert_secs": inserted,
                "warmup_secs": m.get("obleth_key_cache_warmup_seconds"),
                "warmup_keys": m.get("obleth_key_cache_warmup_keys"),
                "cache_entries": m.get("obleth_key_cache_entries"),
                "ready_secs": proc.ready_secs,
                "rss_ready_kib": rss_ready,
                "rss_kib": proc.rss_kib(),
                "check": check,
            })
        finally:
            group.stop_all()
    return rows
