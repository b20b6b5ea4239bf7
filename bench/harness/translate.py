"""The latency protocol translation adds (issue 11's "Must show"): the same
gateway build, in embedded mode, in front of one nginx that answers both
OpenAI's chat completions and Anthropic's messages itself (`return 200` with a
fixed body: an upstream far cheaper than the gateway), loaded at a fixed rate
with oha (open loop, latency measured from when each request was due).

Four paths through the gateway, and nginx direct as the floor:
- chat client -> openai provider: passthrough;
- chat client -> anthropic provider: request and answer translated;
- messages client -> anthropic provider: passthrough;
- messages client -> openai provider: request and answer translated.
The added latency of translation is the translated path's percentile minus
the passthrough path's, for the same client protocol, in the same round."""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

import load
from procs import Group, free_port
from targets import RPM_LIMIT, Target, binary, new_key, render, write
from upstream import NGINX_ANSWER, nginx_conf

CHAT_BODY = '{"model":"@MODEL@","messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
MESSAGES_BODY = ('{"model":"@MODEL@","max_tokens":64,'
                 '"messages":[{"role":"user","content":"Say hello to the benchmark."}]}')

# The chat completion the `return 200` nginx of every other bench answers.
OPENAI_ANSWER = NGINX_ANSWER
ANTHROPIC_ANSWER = (
    '{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench",'
    '"content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,'
    '"usage":{"input_tokens":9,"output_tokens":2}}'
)


def answering_both(prefix, port):
    """The nginx upstream: OpenAI's chat completions and Anthropic's
    messages, each answered with its fixed body."""
    return nginx_conf(prefix, port, locations=(
        f"location = /v1/chat/completions {{ return 200 '{OPENAI_ANSWER}'; }}\n"
        f"        location = /v1/messages {{ return 200 '{ANTHROPIC_ANSWER}'; }}"))


class Path:
    """One way through: a target (URL and headers) and the body it sends."""

    def __init__(self, name, label, target, body):
        self.name, self.label, self.target, self.body = name, label, target, body


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bin-dir", default="target/release", help="the gateway build (directory or binary)")
    p.add_argument("--rate", type=int, default=1000, help="requests a second")
    p.add_argument("--duration", type=int, default=20, help="seconds a run")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the paths in turn in each")
    args = p.parse_args()
    oha_bin = os.path.join(os.environ.get("BENCH_CACHE", ""), "cargo", "bin", "oha")
    if not os.access(oha_bin, os.X_OK):
        oha_bin = shutil.which("oha")
    if not oha_bin:
        sys.exit("bench/translate: oha is missing (bench/harness/install.sh installs it)")
    gateway = binary(args.bin_dir, "obleth-gateway")
    work = tempfile.mkdtemp(prefix="obleth-translate-")
    group = Group(work)
    try:
        upstream_port = free_port()
        prefix = os.path.join(work, "nginx")
        conf = write(prefix + ".conf", answering_both(prefix, upstream_port))
        nginx = group.start("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-p", prefix,
                                      "-e", os.path.join(prefix, "error.log"), "-c", conf,
                                      "-g", "daemon off;"])
        nginx.wait_http(upstream_port, "/v1/chat/completions", 10)
        key, public_id, sha = new_key()
        port, ops = free_port(), free_port()
        settings = render("gateway-translate.toml", PORT=port, OPS=ops, UPSTREAM_PORT=upstream_port,
                          PUBLIC_ID=public_id, SECRET_SHA256=sha, RPM_LIMIT=RPM_LIMIT)
        proc = group.start("gateway", [gateway, "--config", write(os.path.join(work, "gateway.toml"), settings)],
                           env={**os.environ, "RUST_LOG": "warn", "OBLETH_CREDENTIAL_BENCH": "sk-bench"})
        proc.wait_http(ops, "/readyz", 30)

        def target(name, path, headers):
            t = Target(name, name, port, headers, proc)
            t.path = path
            return t

        chat_auth = {"Authorization": f"Bearer {key}"}
        messages_auth = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        floor = Target("direct", "nginx direct", upstream_port, {}, nginx)
        paths = [
            Path("floor", "nginx `return 200`, direct (floor)", floor, CHAT_BODY.replace("@MODEL@", "x")),
            Path("chat-openai", "chat client -> openai (passthrough)",
                 target("chat-openai", "/v1/chat/completions", chat_auth), CHAT_BODY.replace("@MODEL@", "to-openai")),
            Path("chat-anthropic", "chat client -> anthropic (translated)",
                 target("chat-anthropic", "/v1/chat/completions", chat_auth),
                 CHAT_BODY.replace("@MODEL@", "to-anthropic")),
            Path("messages-anthropic", "messages client -> anthropic (passthrough)",
                 target("messages-anthropic", "/v1/messages", messages_auth),
                 MESSAGES_BODY.replace("@MODEL@", "to-anthropic")),
            Path("messages-openai", "messages client -> openai (translated)",
                 target("messages-openai", "/v1/messages", messages_auth),
                 MESSAGES_BODY.replace("@MODEL@", "to-openai")),
        ]
        results = {path.name: [] for path in paths}
        for _ in range(args.rounds):
            for path in paths:
                load.oha(oha_bin, path.target, args.rate, 2, body=path.body)  # warm-up
                r = load.oha(oha_bin, path.target, args.rate, args.duration, body=path.body)
                if r["ok"] == 0:
                    sys.exit(f"bench/translate: no request of {path.name} succeeded: {r}")
                results[path.name].append(r)

        def med(name, key):
            return statistics.median(r[key] for r in results[name])

        print(f"{args.rate} req/s for {args.duration} s a run, {args.rounds} rounds; "
              f"medians over rounds; latency in ms from when each request was due\n")
        print("| path | achieved req/s | p50 ms | p99 ms | p99.9 ms | non-2xx + errors |")
        print("|---|---|---|---|---|---|")
        for path in paths:
            bad = sum(r["non_2xx"] + r["errors"] for r in results[path.name])
            print(f"| {path.label} | {med(path.name, 'achieved_rps'):,.0f} | {med(path.name, 'p50_ms'):.3f} | "
                  f"{med(path.name, 'p99_ms'):.3f} | {med(path.name, 'p999_ms'):.3f} | {bad} |")
        print("\nAdded by translation (translated minus passthrough, same client protocol):\n")
        print("| client | p50 ms | p99 ms |")
        print("|---|---|---|")
        for client, passthrough, translated in [("chat completions", "chat-openai", "chat-anthropic"),
                                                 ("messages", "messages-anthropic", "messages-openai")]:
            print(f"| {client} | {med(translated, 'p50_ms') - med(passthrough, 'p50_ms'):+.3f} | "
                  f"{med(translated, 'p99_ms') - med(passthrough, 'p99_ms'):+.3f} |")
    finally:
        group.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
