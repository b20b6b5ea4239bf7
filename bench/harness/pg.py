"""A throwaway PostgreSQL server for the benchmark, the way crates/testkit starts
one: initdb as the postgres user (we may be root), trust auth, fsync off, a free
port on 127.0.0.1; and psql to run SQL against it."""

import glob
import os
import shutil
import subprocess
import tempfile

from procs import free_port


def server_bindir():
    """$OBLETH_PG_BINDIR, then the highest /usr/lib/postgresql/*/bin, then $PATH."""
    candidates = []
    if os.environ.get("OBLETH_PG_BINDIR"):
        candidates.append(os.environ["OBLETH_PG_BINDIR"])

    def version(path):
        try:
            return [int(p) for p in path.split("/")[-2].split(".")]
        except ValueError:
            return [0]

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(initdb))
    for d in candidates:
        if all(os.path.isfile(os.path.join(d, b)) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    raise RuntimeError("PostgreSQL server binaries not found; install the postgresql package")


class Cluster:
    def __init__(self):
        self.bindir = server_bindir()
        self.dir = tempfile.mkdtemp(prefix="obleth-bench-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.as_postgres = os.geteuid() == 0
        self.port = None
        self.pg_version = None

    def _argv(self, program, *args):
        path = os.path.join(self.bindir, program)
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return prefix + [path, *args]

    def _run(self, argv):
        out = subprocess.run(argv, cwd=self.dir, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stdout}{out.stderr}{self.log_tail()}")
        return out.stdout

    def log_tail(self):
        try:
            with open(self.log) as f:
                return "\n".join(f.read().splitlines()[-20:])
        except OSError:
            return ""

    def start(self, extra_conf=""):
        """initdb and start; `extra_conf` is appended to postgresql.conf (for
        `shared_preload_libraries`, say)."""
        socket_dir = os.path.join(self.dir, "socket")
        os.mkdir(socket_dir)
        if self.as_postgres:
            subprocess.run(["chown", "-R", "postgres", self.dir], check=True)
        self._run(self._argv("initdb", "-D", self.data, "--username=postgres", "--auth=trust",
                             "--encoding=UTF8", "--locale=C", "--no-sync"))
        conf = (
            "\n# obleth bench: a throwaway server.\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{socket_dir}'\n"
            "max_connections = 300\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            + extra_conf
        )
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(conf)
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        self.port = free_port()
        self._run(self._argv("pg_ctl", "start", "-D", self.data, "-l", self.log,
                             "-o", f"-p {self.port}", "-w", "-t", "60"))
        self.pg_version = self.psql("postgres", "SHOW server_version").strip()

    def pid(self):
        """The postmaster's pid; its children are the server's other processes."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def stop(self):
        if self.port is not None and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(self._argv("pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w"),
                           cwd=self.dir, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, db, sql, timeout=900):
        """Runs `sql` (one or more statements, in one transaction when it says
        BEGIN/COMMIT) and answers the unaligned, tuples-only output."""
        out = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.url(db)],
            input=sql, capture_output=True, text=True, timeout=timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr}\nSQL: {sql[:500]}")
        return out.stdout

    def create_database(self, name):
        self.psql("postgres", f"CREATE DATABASE {name}")
        return self.url(name)
