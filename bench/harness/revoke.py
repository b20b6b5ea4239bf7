"""Revocation propagation: three database-mode gateways on one database; each
of N keys is revoked the way `revoke_key` does it, and every replica is polled
with that key until it answers 403. The time counts from writing the revoking
transaction to psql (so it includes the transaction itself) to each replica's
first 403."""

import http.client
import subprocess
import threading
import time

import obleth_db
import targets
from procs import Group

POLL_LIMIT_SECS = 10


class Poller:
    """Polls one replica with one key, over a kept-alive connection, until 403."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def status(self, key):
        try:
            self.conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
            resp = self.conn.getresponse()
            resp.read()
            return resp.status
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            return None

    def until_revoked(self, key, go, t0, out, i):
        go.wait()
        polls = 0
        while True:
            polls += 1
            status = self.status(key)
            now = time.perf_counter()
            if status == 403:
                out[i] = ((now - t0[0]) * 1000, polls)
                return
            if now - t0[0] > POLL_LIMIT_SECS:
                out[i] = (None, polls)
                return


def propagation(cluster, gateway, migrator, work, log_dir, count, replicas=3, db="obleth_revoke", tag=""):
    """`gateway` and `migrator`: binaries, or a directory holding both; `db`
    is created here; `tag` tells apart the logs of two builds."""
    url = cluster.create_database(db)
    obleth_db.migrate(migrator, url)
    # Key 0 is revoked first and not counted: it lets psql connect and each
    # replica's feed see its first notification before the clock matters.
    obleth_db.insert_bulk_keys(cluster, db, "r", 0, count)
    group = Group(log_dir)
    psql = None
    try:
        ports = []
        for r in range(replicas):
            name = f"obleth-replica{'-' + tag if tag else ''}-{r + 1}"
            config, port, ops = targets.gateway_toml(work, name, db=True)
            targets.start_gateway(group, gateway, work, name, config, port, ops, url)
            ports.append(port)
        pollers = [Poller(p) for p in ports]
        for i in range(0, count + 1):
            for p in pollers:
                status = p.status(obleth_db.bulk_key("r", i))
                if status != 200:
                    raise RuntimeError(f"replica :{p.port} answered {status} for an active key")
        psql = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        per_replica = [[] for _ in ports]
        worst = []
        polls = 0
        for i in range(0, count + 1):
            key = obleth_db.bulk_key("r", i)
            go, t0, out = threading.Event(), [0.0], [None] * len(ports)
            threads = [threading.Thread(target=p.until_revoked, args=(key, go, t0, out, j))
                       for j, p in enumerate(pollers)]
            for t in threads:
                t.start()
            t0[0] = time.perf_counter()
            psql.stdin.write(obleth_db.revoke_sql(obleth_db.bulk_public_id("r", i)))
            psql.stdin.flush()
            go.set()
            for t in threads:
                t.join()
            if any(ms is None for ms, _ in out):
                psql.stdin.close()
                raise RuntimeError(f"key {i} not refused within {POLL_LIMIT_SECS} s: {out}; "
                                   f"psql: {psql.stderr.read() if psql.wait(5) is not None else ''}")
            if i == 0:
                continue
            for j, (ms, n) in enumerate(out):
                per_replica[j].append(ms)
                polls += n
            worst.append(max(ms for ms, _ in out))
        psql.stdin.close()
        if psql.wait(30) != 0:
            raise RuntimeError(f"psql failed: {psql.stderr.read()}")
        revoked = int(cluster.psql(db, "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL").strip())
        all_ms = [ms for r in per_replica for ms in r]
        return {
            "replicas": len(ports),
            "revokes": count,
            "revoked_in_db": revoked - 1,
            "per_replica_ms": per_replica,
            "all_ms": all_ms,
            "worst_ms": worst,
            "polls": polls,
            "mean_poll_ms": sum(all_ms) / polls if polls else None,
        }
    finally:
        if psql and psql.poll() is None:
            psql.kill()
            psql.wait()
        group.stop_all()
