"""A local stand-in for Sentry's ingest: an HTTP server in a thread that keeps the envelopes
posted to it, so tests read the check-ins the SDK sent (from this process or its children)."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def items(envelope: bytes) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The (header, payload) of each item of an envelope: a header line, then per item a header
    line and a payload of the header's ``length`` bytes, or up to the next newline."""
    _, _, rest = envelope.partition(b"\n")
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        header = json.loads(line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        yield header, payload


def decoded(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]  # only if the SDK found it installed

        return bytes(brotli.decompress(body))
    return body


class SentryIngest:
    """Listens on 127.0.0.1; ``dsn()`` points an SDK at it; ``check_ins`` are what it received.

    Each envelope is kept with the project its DSN named (``/api/<project>/envelope/``), so a
    test that gives its child processes another project than its own tells who sent what.
    """

    def __init__(self) -> None:
        self.envelopes: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                envelope = decoded(body, self.headers.get("Content-Encoding", ""))
                with ingest._lock:
                    ingest.envelopes.append((self.path.split("/")[2], envelope))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads what arrived, not the access log."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="sentry-ingest", daemon=True)
        self.thread.start()

    def dsn(self, project: str = "1") -> str:
        return f"http://public@127.0.0.1:{self.server.server_address[1]}/{project}"

    def check_ins(self, slug: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The (project, check-in) received so far (of the monitor ``slug``), in order of arrival."""
        with self._lock:
            envelopes = list(self.envelopes)
        found = [
            (project, json.loads(payload))
            for project, envelope in envelopes
            for header, payload in items(envelope)
            if header.get("type") == "check_in"
        ]
        return [(project, found) for project, found in found if slug is None or found["monitor_slug"] == slug]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
