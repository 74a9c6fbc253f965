"""A file server on 127.0.0.1 for the checkpoint-URL tests, with the faults
a download meets: 404, a connection dropped mid-file. It counts requests
(a cached file must cause none) and stops with its ``with`` block."""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List


class CheckpointServer:
    """``files[path] = bytes`` are served; ``drop`` holds paths whose
    transfer stops after half of the announced length."""

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.drop = set()
        self.requests: List[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # a stuck client cannot hold the server

            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                if self.path in server.drop:
                    self.wfile.write(body[:len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.httpd.server_port}{path}'

    def __enter__(self) -> 'CheckpointServer':
        threading.Thread(target=self.httpd.serve_forever,
                         kwargs=dict(poll_interval=0.1), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
