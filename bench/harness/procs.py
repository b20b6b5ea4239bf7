"""Processes the benchmark starts: spawning with a log file, waiting for an HTTP
probe, resident memory of a process tree, and stopping only what it started."""

import http.client
import os
import signal
import socket
import subprocess
import time


def free_port():
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One started process (and its process group), with its output in a log file."""

    def __init__(self, name, argv, log_dir, env=None, cwd=None):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        log.close()
        self.started = time.monotonic()

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_http(self, port, path, limit_secs, status=200):
        """Waits until GET path on 127.0.0.1:port answers `status`; returns the
        seconds since the process was started."""
        deadline = time.monotonic() + limit_secs
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}); log:\n{self.log_tail()}")
            if http_status(port, path) == status:
                return time.monotonic() - self.started
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready on :{port}{path} after {limit_secs} s; log:\n{self.log_tail()}")

    def rss_kib(self):
        """VmRSS of the process and every descendant, in KiB."""
        return sum(vm_kib(pid, "VmRSS") for pid in tree(self.pid))

    def cpu_secs(self):
        """User plus system CPU time of the process and every descendant, in seconds."""
        return sum(cpu_secs(pid) for pid in tree(self.pid))

    def kill(self):
        """SIGKILL to the process group, at once."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            self.popen.wait()

    def stop(self, timeout=30):
        """SIGTERM to the process group, then SIGKILL if it has not exited."""
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait()


def http_status(port, path, headers=None, timeout=1.0):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path, headers=headers or {})
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None
    except http.client.HTTPException:
        return None


def http_get(port, path, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read().decode("utf-8", "replace")
    conn.close()
    return resp.status, body


def vm_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree(pid):
    """The pid and every descendant, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


class Group:
    """Every process of a phase; `stop_all` stops them in reverse start order."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.procs = []

    def start(self, name, argv, env=None, cwd=None):
        proc = Proc(name, argv, self.log_dir, env=env, cwd=cwd)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        """A second Ctrl-C (or SIGTERM) while waiting kills the rest at once."""
        try:
            while self.procs:
                self.procs[-1].stop()
                self.procs.pop()
        except BaseException:
            while self.procs:
                self.procs.pop().kill()
            raise
