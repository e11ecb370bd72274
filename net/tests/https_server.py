"""A real HTTPS server for the agent's download tests (Python's http.server
over OpenSSL). Serves ROOT, honouring `Range: bytes=N-` on files; a few
extra paths exercise the client:
/redirect         302 to /files/payload.bin
/chunked          the payload in chunked encoding
/cut              announces the whole file, sends half, hangs up
/cut-once/NAME    files/NAME: without Range, a third of it and a hang-up;
                  with Range, the rest (a download that must resume)
/ignore-range     the payload with 200, whatever Range says
/wrong-range      206 for a range one byte off the one asked for
/echo-headers     the request head as the body
/to-ip-echo       302 to /echo-headers on another host (127.0.0.1)
/early-hints      a 103 interim response, then the payload
/endless-trailer  a chunked body, then trailer fields for 16 MiB
/many-headers     a head with 10,000 fields
/huge-length      announces 10^15 bytes
Prints its port on stdout once listening."""

import http.server
import os
import re
import ssl
import sys

cert, key, root = sys.argv[1:4]
PAYLOAD = os.path.join(root, "files", "payload.bin")


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)

    def log_message(self, *args):
        pass

    def raw(self, head, body=b""):
        self.wfile.write(head.replace(b"\n", b"\r\n") + b"\r\n" + body)
        self.close_connection = True

    def send_range(self, data, first, status=206, claimed=None):
        claimed = first if claimed is None else claimed
        self.send_response(status)
        if status == 206:
            self.send_header(
                "Content-Range", "bytes %d-%d/%d" % (claimed, len(data) - 1, len(data))
            )
        self.send_header("Content-Length", str(len(data) - first))
        self.end_headers()
        self.wfile.write(data[first:])

    def requested_offset(self):
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        return int(m.group(1)) if m else None

    def do_GET(self):
        offset = self.requested_offset()
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/files/payload.bin")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/to-ip-echo":
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", "https://127.0.0.1:%d/echo-headers" % port)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/chunked":
            data = open(PAYLOAD, "rb").read()
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 70000):
                piece = data[i : i + 70000]
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/cut":
            data = open(PAYLOAD, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        if self.path.startswith("/cut-once/"):
            name = os.path.basename(self.path)
            data = open(os.path.join(root, "files", name), "rb").read()
            if offset is None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 3])
                self.close_connection = True
                return
            return self.send_range(data, offset)
        if self.path == "/ignore-range":
            data = open(PAYLOAD, "rb").read()
            return self.send_range(data, 0, status=200)
        if self.path == "/wrong-range":
            data = open(PAYLOAD, "rb").read()
            return self.send_range(data, offset or 0, claimed=(offset or 0) + 1)
        if self.path == "/echo-headers":
            body = str(self.headers).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/early-hints":
            data = open(PAYLOAD, "rb").read()
            self.raw(b"HTTP/1.1 103 Early Hints\nLink: </style.css>; rel=preload\n")
            return self.send_range(data, 0, status=200)
        if self.path == "/endless-trailer":
            self.raw(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", b"5\r\nhello\r\n0\r\n")
            # "Endless" for a test: 16 MiB, then a proper end, so a client
            # without a bound finishes and the test fails instead of hanging.
            lines = (b"X-Pad: " + b"a" * 57 + b"\r\n") * 1024
            for _ in range(16 * 1024 * 1024 // len(lines)):
                self.wfile.write(lines)
            self.wfile.write(b"\r\n")
            return
        if self.path == "/many-headers":
            fields = b"".join(b"X-Field-%d: v\n" % i for i in range(10000))
            return self.raw(b"HTTP/1.1 200 OK\nContent-Length: 0\n" + fields)
        if self.path == "/huge-length":
            return self.raw(b"HTTP/1.1 200 OK\nContent-Length: 1000000000000000\n", b"x" * 1000)
        if offset is not None and self.path.startswith("/files/"):
            data = open(os.path.join(root, self.path.lstrip("/")), "rb").read()
            if offset >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(data))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self.send_range(data, offset)
        super().do_GET()


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # Clients in these tests hang up on purpose; say nothing about it.
        if not isinstance(sys.exc_info()[1], (OSError, ssl.SSLError)):
            super().handle_error(request, client_address)


server = Server(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
