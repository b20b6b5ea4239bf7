"""Time to first token of a streamed chat completion, one request at a time over
a kept-alive connection: from sending the request to reading the chunk that
carries the first token (`tok1`, which the mock sends one token delay after the
role chunk)."""

import http.client
import json
import math
import time

STREAM_BODY = json.dumps({
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Stream a short answer."}],
    "stream": True,
    # Three tokens keep each stream short; every target passes max_tokens on.
    "max_tokens": 3,
}, separators=(",", ":"))
# For streams held open (bench/harness/streams.py): no max_tokens, so the
# stream lasts as many tokens as the mock is started with.
STREAM_BODY_LONG = json.dumps({
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Stream a long answer."}],
    "stream": True,
}, separators=(",", ":"))


def one(conn, target):
    headers = dict(target.headers)
    headers["Content-Type"] = "application/json"
    started = time.perf_counter()
    conn.request("POST", target.path, body=STREAM_BODY, headers=headers)
    resp = conn.getresponse()
    seen = b""
    first = None
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        if first is None:
            seen += chunk
            if b"tok1" in seen:
                first = time.perf_counter()
    done = time.perf_counter()
    if resp.status != 200 or first is None:
        body = seen[:300].decode("utf-8", "replace")
        raise RuntimeError(f"answered {resp.status} without a first token: {body}")
    return (first - started) * 1000, (done - started) * 1000


def ttft(target, count, warmup=5):
    """`count` streamed requests after `warmup` unrecorded ones; answers the
    first-token and whole-stream times in milliseconds."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    firsts, totals = [], []
    for i in range(warmup + count):
        try:
            f, t = one(conn, target)
        except (http.client.HTTPException, OSError):
            # A server that closed the kept-alive connection: one retry, fresh.
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
            f, t = one(conn, target)
        if i >= warmup:
            firsts.append(f)
            totals.append(t)
    conn.close()
    return {"ttft_ms": firsts, "stream_ms": totals}


def percentile(values, q):
    """Nearest-rank percentile, q in [0, 100]."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]
