"""The HTTP server under `digest serve`: uvicorn's httptools protocol with the limits it lacks,
and logs that a client cannot flood.

    serve(app, ...)           run the app on uvicorn until SIGINT/SIGTERM
    guarded_protocol(...)     the protocol class: a connection must deliver its request line and
                              headers within ``header_timeout`` seconds of opening (or of its last
                              response), its body within ``body_timeout`` of the headers, its
                              headers in at most MAX_HEAD bytes, and take our answers (when they
                              fill its buffers) within ``body_timeout``; past ``max_connections``
                              open connections a new one is answered 503 and closed
    Throttle                  a logging filter: at most one line of a kind every LOG_EVERY seconds,
                              the lines held back counted on a later one
    client_log                the logger for what clients do wrong (left mid-request, too slow...),
                              throttled while serving

uvicorn has keep-alive and concurrency settings but no header or body timeout: with it alone, a
connection that sends half a request line stays open for ever (slowloris). Nothing a client does
may write more than a line per kind per LOG_EVERY seconds: one client once wrote 26 MB of
tracebacks in 5 s.
"""

from __future__ import annotations

import asyncio
import logging

from digest.errors import ServeError

client_log = logging.getLogger("digest.service.clients")

LOG_EVERY = 10.0  # seconds between two lines of one kind about clients
MAX_HEAD = 32 * 1024  # bytes of request line and headers (nginx's default buffers hold 4 x 8 KB)
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 0\r\nretry-after: 5\r\nconnection: close\r\n\r\n")
HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                  b"content-length: 0\r\nconnection: close\r\n\r\n")


class Throttle(logging.Filter):
    """Lets through at most one record per message template every ``every`` seconds.

    The records held back are counted; ``every`` seconds after the first of them one line says
    how many there were and shows the last, without its traceback: a storm of one kind shows as
    its first line, then one line every ``every`` seconds, and its size is never lost. It
    throttles in the event loop only (where uvicorn and the app log about clients); a record from
    any other thread passes.
    """

    def __init__(self, every: float = LOG_EVERY):
        super().__init__()
        self.every = every
        self.shown: dict[str, float] = {}  # template → when a line of it was last let through
        self.held: dict[str, tuple[int, logging.LogRecord]] = {}  # template → (records held back, the last)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return True
        key, now = str(record.msg), loop.time()
        if getattr(record, "tally", False) or now - self.shown.get(key, float("-inf")) >= self.every:
            self.shown[key] = now
            return True
        count = self.held[key][0] if key in self.held else 0
        self.held[key] = (count + 1, record)
        if count == 0:
            loop.call_later(self.shown[key] + self.every - now, self._tally, key)
        return False

    def _tally(self, key: str) -> None:
        self.shown[key] = asyncio.get_running_loop().time()  # this line is the window's one line
        self._say(key, f"in the last {self.every:g} s")

    def flush(self) -> None:
        """Say the counts still held (the server is stopping: the loop will not run their tallies)."""
        for key in list(self.held):
            self._say(key, "before the server stopped")

    def _say(self, key: str, when: str) -> None:
        count, last = self.held.pop(key, (0, None))
        if count:
            logging.getLogger(last.name).log(last.levelno, "%d more %s, not shown one by one; the last: %s", count,
                                             when, last.getMessage().strip().split("\n")[0], extra={"tally": True})


def throttle_logs(every: float = LOG_EVERY) -> list[Throttle]:
    """Throttle the loggers clients can make write: ours about clients, uvicorn's errors (a
    malformed request, an exception) and asyncio's (transport trouble)."""
    throttles = []
    for name in (client_log.name, "uvicorn.error", "asyncio"):
        throttles.append(Throttle(every))
        logging.getLogger(name).addFilter(throttles[-1])
    return throttles


class LateWritesDropped:
    """A transport whose writes after it closed are dropped, as asyncio's own transports do; uvloop's
    raise instead. uvicorn writes late when a client leaves during pipelined requests: the
    connection closes on the failed write, and the next response is written before uvicorn hears."""

    def __init__(self, transport):
        self.transport = transport

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def __getattr__(self, name: str):
        return getattr(self.transport, name)


def guarded_protocol(header_timeout: float, body_timeout: float, max_connections: int):
    """uvicorn's httptools protocol with a deadline on each request's arrival and a cap on open
    connections. Built here, not at import: importing the service for its form imports no uvicorn."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedProtocol(HttpToolsProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.deadline: asyncio.TimerHandle | None = None
            self.reader_gone: asyncio.TimerHandle | None = None  # while the client takes none of our writes
            self.in_head = True  # between two requests or inside a request line and headers
            self.received = 0  # bytes received since the last headers (or message) completed
            self.head = 0  # bytes of the current request line and headers, as parsed

        def connection_made(self, transport) -> None:
            transport = LateWritesDropped(transport)
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                client_log.warning("refused a connection: %d open, DIGEST_SERVE_MAX_CONNECTIONS is %d",
                                   len(self.connections) - 1, max_connections)
                transport.write(BUSY)
                transport.close()
                return
            self._arm(header_timeout, "headers")

        def connection_lost(self, exc) -> None:
            self._disarm()
            self._reader_back()
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            # A client that sends requests (pipelined) but reads no answers would hold the
            # connection and its task for ever: it gets as long to read as to send a body.
            super().pause_writing()
            if self.reader_gone is None:
                self.reader_gone = self.loop.call_later(body_timeout, self._cut, body_timeout, "reading")

        def resume_writing(self) -> None:
            self._reader_back()
            super().resume_writing()

        def _reader_back(self) -> None:
            if self.reader_gone is not None:
                self.reader_gone.cancel()
                self.reader_gone = None

        def data_received(self, data: bytes) -> None:
            # Counted here too: httptools buffers a header line until it ends, unbounded.
            self.received += len(data)
            super().data_received(data)
            if self.in_head and self.received > MAX_HEAD and not self.transport.is_closing():
                self._head_too_large()

        def on_message_begin(self) -> None:
            self.head = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count(self, size: int) -> None:
            self.head += size
            if self.head > MAX_HEAD:  # stops the parser; uvicorn answers with send_400_response
                raise ValueError("request line and headers too large")

        def send_400_response(self, msg: str) -> None:
            if self.head <= MAX_HEAD:
                return super().send_400_response(msg)
            self._head_too_large()

        def _head_too_large(self) -> None:
            client_log.info("refused a request whose line and headers exceed %d bytes", MAX_HEAD)
            self.transport.write(HEAD_TOO_LARGE)
            self.transport.close()

        def on_headers_complete(self) -> None:
            self.in_head, self.received = False, 0
            super().on_headers_complete()
            self._arm(body_timeout, "body")  # disarmed at once by on_message_complete when there is none

        def on_message_complete(self) -> None:
            self.in_head, self.received = True, 0
            self._disarm()
            super().on_message_complete()
            if self.cycle.response_complete and not self.pipeline:
                # Answered before its body ended: idle now, and the body's bytes stopped uvicorn's
                # keep-alive timer, so nothing else would ever close this connection.
                self._arm(header_timeout, "headers")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.timeout_keep_alive_task is not None:  # idle, waiting for the next request
                self._arm(header_timeout, "headers")

        def _arm(self, seconds: float, part: str) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(seconds, self._cut, seconds, part)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _cut(self, seconds: float, part: str) -> None:
            if self.transport.is_closing():
                return
            if part == "headers":
                client_log.info("closed a connection whose request line and headers took over %g s "
                                "(DIGEST_SERVE_HEADER_TIMEOUT)", seconds)
            elif part == "body":
                client_log.info("closed a connection whose request body took over %g s "
                                "(DIGEST_SERVE_BODY_TIMEOUT)", seconds)
            else:
                client_log.info("closed a connection that read none of its answers for %g s "
                                "(DIGEST_SERVE_BODY_TIMEOUT)", seconds)
            self.transport.close()

    return GuardedProtocol


SPARE_FILES = 64  # open files besides connections: the store, logs, outbox, mail, the listening socket


def file_limit(max_connections: int, soft: int, hard: int, infinity: int = -1) -> int:
    """The soft limit on open files that ``max_connections`` needs: ``soft`` when it is enough,
    else raised toward ``hard``; ServeError when even ``hard`` is too low (a process out of file
    descriptors fails every request, its store included)."""
    needed = max_connections + SPARE_FILES
    if soft == infinity or soft >= needed:
        return soft
    if hard == infinity or hard >= needed:
        return needed
    raise ServeError(f"DIGEST_SERVE_MAX_CONNECTIONS is {max_connections}, but this process may open at most "
                     f"{hard} files (ulimit -Hn), {SPARE_FILES} of them kept for the store and logs: set it to "
                     f"{max(hard - SPARE_FILES, 1)} or less, or raise the limit (LimitNOFILE= in a systemd unit)")


def _fit_file_limit(max_connections: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = file_limit(max_connections, soft, hard, resource.RLIM_INFINITY)
    if wanted != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def serve(app, *, host: str, port: int, header_timeout: float, body_timeout: float, keep_alive: float,
          max_connections: int, forwarded_allow_ips: str = "") -> None:
    """Run ``app`` on uvicorn (uvloop, httptools, no WebSockets) until SIGINT/SIGTERM."""
    import uvicorn

    _fit_file_limit(max_connections)
    config = uvicorn.Config(
        app, host=host, port=port, access_log=False, server_header=False, log_level="warning", ws="none",
        http=guarded_protocol(header_timeout, body_timeout, max_connections), timeout_keep_alive=keep_alive,
        proxy_headers=bool(forwarded_allow_ips), forwarded_allow_ips=forwarded_allow_ips or None)
    throttles = throttle_logs()  # after Config: it configures uvicorn's loggers

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            await super().shutdown(sockets)
            for throttle in throttles:  # the loop stops (and uvicorn re-raises SIGTERM): say the counts now
                throttle.flush()

    Server(config).run()
