#!/usr/bin/env python3
"""A loopback origin for failway's memory check: GET /big streams N MiB,
POST /sink reads the body and answers its length and SHA-256, GET /health
answers 200. Usage: origin.py PORT [MIB]"""
import hashlib
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/big"):
            size = MIB << 20
            self.send_response(200)
            self.send_header("content-length", str(size))
            self.end_headers()
            chunk = bytes(range(256)) * 256  # 64 KiB
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)
        else:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        digest = hashlib.sha256()
        left = length
        while left:
            data = self.rfile.read(min(left, 65536))
            if not data:
                break
            digest.update(data)
            left -= len(data)
        body = f"{length} {digest.hexdigest()}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


PORT = int(sys.argv[1])
MIB = int(sys.argv[2]) if len(sys.argv) > 2 else 10
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
