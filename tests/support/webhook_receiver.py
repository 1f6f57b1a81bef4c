"""A webhook receiver for tests: a real HTTP server (http.server, a thread) on loopback that checks every delivery's
signature with its own HMAC code, as docs/audit.md "Webhook signature" tells a receiver to."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "a-shared-secret-0123456789"


class Receiver:
    """A webhook receiver on 127.0.0.1:port: verifies X-Provisioner-Signature = sha256=HMAC(secret, "<ts>.<body>")
    itself (docs/audit.md), records what it got; `status` is what it answers."""

    def __init__(self, port: int = 0, status: int = 204):
        self.got: list[dict] = []
        self.bad: list[str] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers.get("X-Provisioner-Timestamp", "")
                want = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(want, self.headers.get("X-Provisioner-Signature", "")):
                    outer.bad.append(self.headers.get("X-Provisioner-Delivery", "?"))
                elif abs(time.time() - int(stamp)) > 300:
                    outer.bad.append("stale")
                else:
                    outer.got.append({"delivery": self.headers["X-Provisioner-Delivery"],
                                      "event": self.headers["X-Provisioner-Event"], "body": json.loads(body)})
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
