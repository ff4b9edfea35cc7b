#!/usr/bin/env python3
"""A small HTTP service to run as a Drover pod: `cargo xtask run` keeps
copies of it on local agents with an RC (rc.yaml beside this file).

    hello.py serve   answers GET / with a greeting naming its node and
                     GET /health with 200; it listens on 127.0.0.1 on the
                     port in $HELLO_PORT, or a free one, and writes the port
                     to $POD_HOME/port
    hello.py check   exits 0 when the service of this pod answers /health
                     (the pod's exec health probe: the agent runs it in the
                     pod's environment, so it finds the same port file)

Several replicas on one machine (local agents) cannot share a fixed port,
hence the port file; on real machines give HELLO_PORT and an HTTP probe.
"""

import http.server
import os
import sys
import urllib.request


def port_file():
    return os.path.join(os.environ.get("POD_HOME", "."), "port")


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"ok\n"
        elif self.path == "/":
            node = os.environ.get("NODE_ID", "?")
            pod = os.environ.get("POD_ID", "?")
            body = f"hello from pod {pod} on node {node}\n".encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("hello: " + (fmt % args) + "\n")


def serve():
    port = int(os.environ.get("HELLO_PORT", "0"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hello)
    # Written whole, then renamed: a check never reads half a number.
    tmp = port_file() + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, port_file())
    print(f"hello: listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def check():
    try:
        with open(port_file()) as f:
            port = int(f.read().strip())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return 0 if r.status == 200 else 1
    except (OSError, ValueError) as e:
        print(f"hello: not healthy: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    elif sys.argv[1:] == ["check"]:
        sys.exit(check())
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
