"""The targets under test, each started against the one mock upstream and
described by the URL, headers and processes a measurement needs."""

import hashlib
import os
import secrets
import string

from procs import free_port

CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")
MODEL = "gpt-4o-mini"
# The route's model, and the body every non-streamed request sends.
BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
# Rate limit of the obleth keys: high enough never to trigger (the fastest run
# here stays far below 1e9 requests a minute).
RPM_LIMIT = 1_000_000_000


class Target:
    """What a measurement needs: where to send, with which headers, and which
    process (tree) to read memory from."""

    def __init__(self, name, label, port, headers, proc, note=""):
        self.name = name
        self.label = label
        self.port = port
        self.headers = headers
        self.proc = proc
        self.note = note
        self.path = "/v1/chat/completions"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}{self.path}"


def render(template, **values):
    with open(os.path.join(CONF_DIR, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    return text


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def new_key(public_id=None):
    """An obleth key: (whole key, public id, hex SHA-256 of the secret)."""
    public_id = public_id or "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    return f"obk_{public_id}_{secret}", public_id, hashlib.sha256(secret.encode()).hexdigest()


def binary(bins, name):
    """`bins` is a directory of release binaries or the path of one binary."""
    return os.path.join(bins, name) if os.path.isdir(bins) else bins


def start_nginx(group, work, mock_port, name="nginx", worker_connections=4096, nofile=8192):
    """nginx as a reverse proxy to the upstream on `mock_port`; a proxied
    request holds two connections of a worker (client and upstream)."""
    prefix = os.path.join(work, name)
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
    port = free_port()
    conf = write(os.path.join(prefix, "nginx.conf"), render("nginx.conf", PREFIX=prefix, PORT=port, MOCK_PORT=mock_port,
                                                            WORKER_CONNECTIONS=worker_connections, NOFILE=nofile))
    proc = group.start(name, ["nginx", "-p", prefix, "-e", os.path.join(prefix, "error.log"),
                                 "-c", conf, "-g", "daemon off;"])
    proc.wait_http(port, "/health", 30)
    return Target("nginx", "nginx reverse proxy", port, {"Authorization": "Bearer direct"}, proc,
                  note=f"{os.cpu_count()} workers, keepalive 64 to the upstream, proxy_buffering off, access log off")


def gateway_toml(work, name, mock_port=None, key=None, db=False):
    port, ops = free_port(), free_port()
    if db:
        text = render("gateway-db.toml", PORT=port, OPS=ops, NAME=name)
    else:
        _, public_id, sha = key
        text = render("gateway-embedded.toml", PORT=port, OPS=ops, MOCK_PORT=mock_port,
                      PUBLIC_ID=public_id, SECRET_SHA256=sha, RPM_LIMIT=RPM_LIMIT)
    return write(os.path.join(work, f"{name}.toml"), text), port, ops


def start_gateway(group, bins, work, name, config, port, ops, database_url=None, ready_secs=60, env=None):
    """`bins`: a directory holding obleth-gateway, or the binary itself;
    `env`: more environment (`OBLETH_SECTION__FIELD` settings)."""
    env = {"RUST_LOG": "info", **(env or {})}
    if database_url:
        env["OBLETH_DATABASE__URL"] = database_url
    proc = group.start(name, [binary(bins, "obleth-gateway"), "--config", config], env=env)
    proc.ops_port = ops
    proc.ready_secs = proc.wait_http(ops, "/readyz", ready_secs)
    return proc


def start_embedded(group, bins, work, mock_port, name="embedded", label="obleth, embedded (no database)",
                   env=None):
    """An embedded-mode gateway forwarding to the upstream on `mock_port`."""
    key = new_key()
    config, port, ops = gateway_toml(work, f"obleth-{name}", mock_port=mock_port, key=key)
    proc = start_gateway(group, bins, work, f"obleth-{name}", config, port, ops, env=env)
    return Target(name, label, port, {"Authorization": f"Bearer {key[0]}"}, proc,
                  note="key from the file, rpm limit 1e9; usage not stored")


def start_db(group, bins, work, database_url, key, name="db", label="obleth, PostgreSQL mode", env=None):
    """A PostgreSQL-mode gateway over `database_url` (catalog and key written before)."""
    config, port, ops = gateway_toml(work, f"obleth-{name}", db=True)
    proc = start_gateway(group, bins, work, f"obleth-{name}", config, port, ops, database_url, env=env)
    return Target(name, label, port, {"Authorization": f"Bearer {key}"}, proc,
                  note="key, provider and route in PostgreSQL, rpm limit 1e9, limits on, usage recorded")


def start_portkey(group, cache, mock_port):
    script = os.path.join(cache, "portkey", "node_modules", "@portkey-ai", "gateway", "build", "start-server.js")
    if not os.path.exists(script):
        return None
    port = free_port()
    proc = group.start("portkey", ["node", script, f"--port={port}", "--headless"])
    proc.wait_http(port, "/", 60)
    headers = {
        "Authorization": "Bearer dummy",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{mock_port}/v1",
    }
    return Target("portkey", "Portkey gateway 1.15.2", port, headers, proc, note="node, 1 process")


def start_litellm(group, cache, work, mock_port):
    litellm = os.path.join(cache, "litellm-venv", "bin", "litellm")
    if not os.path.exists(litellm):
        return None
    port = free_port()
    master = "sk-bench-" + secrets.token_hex(8)
    config = write(os.path.join(work, "litellm.yaml"), render("litellm.yaml", MOCK_PORT=mock_port, MASTER_KEY=master))
    workers = str(os.cpu_count() or 2)
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    proc = group.start("litellm", [litellm, "--config", config, "--host", "127.0.0.1", "--port", str(port),
                                   "--num_workers", workers], env=env)
    proc.wait_http(port, "/health/liveliness", 120)
    return Target("litellm", "LiteLLM proxy 1.106.2", port, {"Authorization": f"Bearer {master}"}, proc,
                  note=f"{workers} workers, no database")
