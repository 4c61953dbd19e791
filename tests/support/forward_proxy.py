"""A forward HTTP proxy on 127.0.0.1 for the transport tests: absolute-form requests for plain HTTP and
CONNECT tunnels for HTTPS, as squid or a corporate proxy serves them. It records what it was asked."""

from __future__ import annotations

import http.client
import select
import socket
import socketserver
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler


@dataclass
class ForwardProxy:
    server: socketserver.ThreadingTCPServer
    seen: list[str] = field(default_factory=list)  # "GET http://host/path", "CONNECT host:port"
    authorizations: list[str | None] = field(default_factory=list)  # Proxy-Authorization of each request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_forward_proxy() -> ForwardProxy:
    proxy: ForwardProxy

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _relay(self) -> None:
            proxy.seen.append(f"{self.command} {self.path}")
            proxy.authorizations.append(self.headers.get("Proxy-Authorization"))
            target = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-authorization", "connection")}
            upstream = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=30)
            upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""), body, headers)
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)) if self.command != "HEAD" else
                             answer.getheader("Content-Length") or "0")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            upstream.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _relay

        def do_CONNECT(self) -> None:
            proxy.seen.append(f"CONNECT {self.path}")
            proxy.authorizations.append(self.headers.get("Proxy-Authorization"))
            host, _, port = self.path.rpartition(":")
            upstream = socket.create_connection((host, int(port)), timeout=30)
            self.send_response(200, "Connection established")
            self.end_headers()
            sockets = [self.connection, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    break
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        upstream.close()
                        self.close_connection = True
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy = ForwardProxy(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return proxy
