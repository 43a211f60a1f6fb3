"""A local HTTP file server for download tests: Range support plus switches to misbehave."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Hit:
    """One request as the server saw it."""

    path: str
    range: str | None
    status: int


@dataclass
class FixtureServer:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 at a free port.

    Switches, changeable between requests:
      ``truncate_after``: send only this many body bytes, then close the connection;
      ``ignore_range``: answer every request with 200 and the whole file;
      ``not_found``: paths that answer 404 even if present in ``files``.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    truncate_after: int | None = None
    ignore_range: bool = False
    not_found: set[str] = field(default_factory=set)
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def paths(self) -> list[str]:
        with self._lock:
            return [hit.path for hit in self.hits]

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def start(self) -> FixtureServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FixtureServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _make_handler(fx: FixtureServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            path = self.path.split("?", 1)[0].lstrip("/")
            range_header = self.headers.get("Range")
            data = fx.files.get(path)
            if data is None or path in fx.not_found:
                fx._record(Hit(path, range_header, 404))
                self.send_error(404)
                return
            match = _RANGE_RE.fullmatch(range_header.strip()) if range_header else None
            if match is None or fx.ignore_range:
                fx._record(Hit(path, range_header, 200))
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                body = data
            else:
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else len(data) - 1
                if start >= len(data):
                    fx._record(Hit(path, range_header, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                end = min(end, len(data) - 1)
                fx._record(Hit(path, range_header, 206))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(end - start + 1))
                body = data[start : end + 1]
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if fx.truncate_after is not None:
                body = body[: fx.truncate_after]
                self.close_connection = True
            self.wfile.write(body)
            self.wfile.flush()

    return Handler
