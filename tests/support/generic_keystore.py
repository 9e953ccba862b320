"""A service speaking KES's "generic" keystore REST protocol (KES v0.16 to 2023),
for the tests of the Python and JavaScript plugins. Keys live in memory, guarded by
one lock, so that concurrent creates of one name have exactly one winner.

    python3 generic_keystore.py PORT
"""

import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEYS = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The header and the body go out in two writes: with Nagle's algorithm, the body
    # of every keep-alive answer would wait for the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def message(self, status, text):
        self.answer(status, json.dumps({"message": text}).encode())

    def name(self):
        prefix = "/v1/key/"
        return self.path[len(prefix):] if self.path.startswith(prefix) else None

    def do_GET(self):
        if self.path in ("/v1/key", "/v1/key/"):
            with LOCK:
                names = sorted(KEYS)
            lines = [json.dumps({"name": n, "last": i == len(names) - 1}) for i, n in enumerate(names)]
            return self.answer(200, "".join(line + "\n" for line in lines).encode())
        name = self.name()
        with LOCK:
            value = KEYS.get(name)
        if value is None:
            return self.message(404, "key does not exist")
        self.answer(200, json.dumps({"bytes": base64.b64encode(value).decode()}).encode())

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        name = self.name()
        try:
            value = base64.b64decode(json.loads(body)["bytes"], validate=True)
        except Exception:
            return self.message(400, "invalid request body")
        with LOCK:
            if name in KEYS:
                return self.message(400, "key already exists")
            KEYS[name] = value
        self.answer(201)

    def do_DELETE(self):
        name = self.name()
        with LOCK:
            if KEYS.pop(name, None) is None:
                return self.message(404, "key does not exist")
        self.answer(200)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
