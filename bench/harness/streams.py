"""Many streamed chat completions held open at once, from one asyncio client:
each connection sends one streamed request and reads until the first token
has arrived, then holds the connection (the slowly streamed tokens fill its
buffer) until told to let go. While every stream is open the caller reads
the target's memory."""

import asyncio
import signal
import time

from stream import STREAM_BODY_LONG


def request_bytes(target):
    headers = dict(target.headers)
    headers.update({"Host": f"127.0.0.1:{target.port}", "Content-Type": "application/json",
                    "Content-Length": str(len(STREAM_BODY_LONG))})
    head = f"POST {target.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n" + STREAM_BODY_LONG).encode()


class Holder:
    """Opens `count` streams to `target`, at most `parallel` connecting at a
    time; `opened` counts those whose first token arrived, `still_open()`
    those the target has not ended since."""

    def __init__(self, target, count, parallel=256):
        self.target, self.count, self.parallel = target, count, parallel
        self.opened = self.failed = 0
        self.errors = {}
        self.readers = []
        self.release = None

    async def one(self, gate, payload):
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.target.port, limit=1 << 16)
                writer.write(payload)
                seen = b""
                while b"tok1" not in seen:
                    chunk = await reader.read(4096)
                    if not chunk:
                        raise ConnectionError(f"closed before the first token: {seen[:120]!r}")
                    seen = (seen + chunk)[-8192:]
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
                self.failed += 1
                kind = type(e).__name__ + (f": {e}" if not isinstance(e, OSError) else f" {e.errno}")
                self.errors[kind[:160]] = self.errors.get(kind[:160], 0) + 1
                return
        self.opened += 1
        self.readers.append(reader)
        try:
            # The tokens that follow land in the reader's buffer (the
            # transport reads them, up to twice the limit) without a wake-up
            # here; the socket stays open until let go.
            await self.release.wait()
        finally:
            writer.transport.abort()

    def still_open(self):
        """Streams opened that the target has not ended."""
        return sum(1 for r in self.readers if not r.at_eof())

    async def run(self, open_limit_secs, on_open):
        """Opens every stream (or gives up after `open_limit_secs`), calls
        `on_open(self)` while they are held, then lets them all go."""
        self.release = asyncio.Event()
        # SIGTERM lets every stream go and ends the run (the caller then
        # stops its processes); Ctrl-C cancels it as asyncio.run does.
        self.terminated = False

        def terminate():
            self.terminated = True
            self.release.set()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminate)
        gate = asyncio.Semaphore(self.parallel)
        payload = request_bytes(self.target)
        tasks = [asyncio.ensure_future(self.one(gate, payload)) for _ in range(self.count)]
        started = time.monotonic()
        while (self.opened + self.failed < self.count and time.monotonic() - started < open_limit_secs
               and not self.release.is_set()):
            await asyncio.sleep(0.2)
        self.open_secs = time.monotonic() - started
        # Let in-flight reads settle before measuring.
        await asyncio.sleep(1.0)
        result = None if self.terminated else on_open(self)
        self.release.set()
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return result


def hold(target, count, open_limit_secs, on_open, parallel=256):
    """Runs a Holder; answers (holder, on_open's answer)."""
    h = Holder(target, count, parallel)
    result = asyncio.run(h.run(open_limit_secs, on_open))
    if h.terminated:
        raise SystemExit(143)
    return h, result
