"""The upstreams the targets forward to: an nginx that answers every chat
completion itself (`return 200` with a fixed body, far cheaper than any
gateway, so a measurement shows the gateway's own cost) and the
obleth-mock-upstream (which streams token by token with a delay, for the
time-to-first-token and open-streams runs)."""

import os
import shutil

from procs import free_port
from targets import Target, write

NGINX_ANSWER = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"gpt-4o-mini",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}'
)

# What each kind of upstream is, as a section of a report names it.
DESCRIPTION = {
    "nginx": "nginx `return 200` (a fixed chat completion, answered by nginx itself)",
    "mock": "obleth-mock-upstream (16 tokens, streamed one chunk a token)",
}


def nginx_conf(prefix, port, worker_connections=4096, workers=1, nofile=None, locations=None):
    """nginx answering every request with NGINX_ANSWER, or as `locations`
    (nginx `location` blocks) say. `keepalive_requests` is raised so that no
    client's kept-alive connection is closed every 1,000 requests (nginx's
    default), which would add reconnects to every target."""
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
    rlimit = f"worker_rlimit_nofile {nofile};\n" if nofile else ""
    if locations is None:
        locations = f"location / {{ return 200 '{NGINX_ANSWER}'; }}"
    return f"""worker_processes {workers};
{rlimit}pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        {locations}
    }}
}}
"""


def start_nginx_200(group, work, name="upstream-nginx", worker_connections=4096, nofile=None):
    """Starts the `return 200` nginx; answers it as the `direct` target."""
    prefix = os.path.join(work, name)
    port = free_port()
    os.makedirs(prefix, exist_ok=True)
    conf = write(prefix + ".conf", nginx_conf(prefix, port, worker_connections=worker_connections, nofile=nofile))
    proc = group.start(name, [shutil.which("nginx") or "/usr/sbin/nginx", "-p", prefix,
                              "-e", os.path.join(prefix, "error.log"), "-c", conf, "-g", "daemon off;"])
    proc.wait_http(port, "/", 30)
    return Target("direct", "nginx return 200, direct", port, {"Authorization": "Bearer direct"}, proc,
                  note="the upstream itself, 1 worker: the floor")


def start_mock(group, bins, token_delay_ms, name="mock", tokens=None):
    """Starts obleth-mock-upstream; answers it as the `direct` target."""
    port = free_port()
    argv = [os.path.join(bins, "obleth-mock-upstream"), "--listen", f"127.0.0.1:{port}",
            "--token-delay-ms", str(token_delay_ms)]
    if tokens is not None:
        argv += ["--tokens", str(tokens)]
    proc = group.start(name, argv, env={"RUST_LOG": "warn"})
    proc.wait_http(port, "/health", 30)
    return Target("direct", "mock upstream, direct", port, {"Authorization": "Bearer direct"}, proc,
                  note="the upstream itself: the floor")
