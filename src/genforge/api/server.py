"""How `genforge serve` runs uvicorn: connection limits, and no open bind without keys.

uvicorn's httptools protocol has no limit on the size of a request head, arms its keep-alive timeout only
after a first response (a connection that never sends a byte stays open), and waits for ever on a head or
body that trickles in. LimitedHttpTools adds the three limits: a head over GENFORGE_MAX_HEADER_BYTES is a
431, a new connection that sends nothing is closed after GENFORGE_KEEP_ALIVE_TIMEOUT_S, and a request not
fully received within GENFORGE_REQUEST_READ_TIMEOUT_S is a 408. GENFORGE_LIMIT_CONCURRENCY caps the
connections and tasks at once (uvicorn answers 503 beyond it).
"""

from __future__ import annotations

import ipaddress
from asyncio import TimerHandle

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from genforge.config import Settings
from genforge.core.access import KeyStore
from genforge.media.private import private_dir
from genforge.stores.db import Database


class _HeadTooLarge(Exception):
    pass


class LimitedHttpTools(HttpToolsProtocol):
    max_head_bytes = 65_536
    read_timeout_s = 30.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_bytes, self._too_large = 0, False
        self._read_timer: TimerHandle | None = None
        # uvicorn arms the keep-alive timeout only after a response: a silent new connection gets it too.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._stop_read_timer()
        self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self._stop_read_timer()
        super().on_message_complete()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_head_bytes:
            self._too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn then answers through send_400_response

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._send_and_close(431, f"The request head is larger than {self.max_head_bytes} bytes.")
        else:
            super().send_400_response(msg)

    def _stop_read_timer(self) -> None:
        timer: TimerHandle | None = getattr(self, "_read_timer", None)  # getattr: also before __init__ set it
        if timer is not None:
            timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None  # (on_message_complete cancels the timer: the request is still incomplete)
        self._send_and_close(408, f"The request was not received within {self.read_timeout_s:g} s.")

    def _send_and_close(self, status: int, msg: str) -> None:
        if self.transport.is_closing():
            return
        body = msg.encode("ascii")
        head = b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(STATUS_LINE[status] + head % len(body) + body)
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict:
    protocol = type(
        "GenforgeHttp",
        (LimitedHttpTools,),
        {"max_head_bytes": settings.max_header_bytes, "read_timeout_s": settings.request_read_timeout_s},
    )
    return {
        "http": protocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,  # the same limit should h11 be chosen
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.limit_concurrency,
        "timeout_graceful_shutdown": settings.drain_timeout_s,  # open requests; then the jobs drain
    }


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_bind_refusal(settings: Settings, host: str) -> str | None:
    """Why serving on `host` is refused (a non-loopback address and no active key), or None."""
    if is_loopback(host):
        return None
    private_dir(settings.data_dir)
    db = Database(settings.db_url)
    try:
        db.migrate()
        if KeyStore(db).active_count():
            return None
    finally:
        db.dispose()
    return (
        f"refusing to listen on {host}: no API key exists, so anyone who can reach this address could generate, "
        "read and delete everything. Create a key first (`genforge keys create --name NAME --scope admin`), "
        "or pass --insecure to serve without keys."
    )
