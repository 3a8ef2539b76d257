#!/usr/bin/env python3
"""A stand-in for the `edgebox` executable when the simulator starts a deployment.

Called as `fake_node.py ROLE --config FILE --node NAME`, like the real daemons. It reads
the deployment file, binds the node's listeners at their configured addresses, announces
them with the readiness protocol (`edgebox-listening node=.. service=.. addr=..`) and
serves until SIGTERM:

- origin: the files under its `root`, with the deployment's `[[origin.rules]]`
  Cache-Control values;
- edge: an in-memory cache (`X-Cache-Tier: l1`), misses sent to its `parent` edge when
  it has one (answered `parent` when the parent had the object, else `origin`), else
  round robin over its origin group; `no-store` answers are not cached (`BYPASS`); the
  admin listener answers `/healthz` and `/stats` (`requests.total` counts client
  requests).

It exists to test the simulator's orchestration (config rewriting, process start and
stop, routing, the cross-check with each edge's own counters) before the real edge is
merged; it is not a model of the edge's behaviour beyond what those tests read.
"""

import json
import signal
import sys
import threading
import tomllib
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

role, config_path, node_name = sys.argv[1], sys.argv[3], sys.argv[5]
config = tomllib.loads(Path(config_path).read_text())
nodes = {node["name"]: node for node in config.get("nodes", [])}
me = nodes[node_name]


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def rule_for(path):
    for rule in config.get("origin", {}).get("rules", []):
        pattern = rule["pattern"]
        prefix = pattern.split("*", 1)[0]
        if path.startswith(prefix):
            return rule.get("cache_control")
    return None


lock = threading.Lock()
cache = {}
counters = {"total": 0, "next_origin": 0}


class Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Origin(Quiet):
    def do_GET(self):
        root = Path(me["root"])
        path = root / self.path.lstrip("/")
        if not path.is_file():
            return self.send(404, b'{"error":{"code":"not_found","message":"no such file"}}')
        headers = [("Content-Type", "application/octet-stream")]
        cache_control = rule_for(self.path)
        if cache_control:
            headers.append(("Cache-Control", cache_control))
        self.send(200, path.read_bytes(), headers)


def fetch(url, region):
    request = urllib.request.Request(url, headers={"X-Edgebox-Region": region})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read(), dict(response.headers)


class Edge(Quiet):
    def do_GET(self):
        with lock:
            counters["total"] += 1
            cached = cache.get(self.path)
        print(f"request {self.path}", file=sys.stderr, flush=True)
        region = self.headers.get("X-Edgebox-Region", me["region"])
        if cached is not None:
            return self.answer(cached, "HIT", "l1")
        parent = me.get("parent")
        if parent:
            body, headers = fetch(f"http://{nodes[parent]['listen']}{self.path}", region)
            tier = "parent" if headers.get("X-Cache-Tier") == "l1" else "origin"
        else:
            members = config["origin_groups"][me["origin_group"]]["members"]
            with lock:
                member = members[counters["next_origin"] % len(members)]
                counters["next_origin"] += 1
            body, headers = fetch(f"http://{nodes[member['node']]['listen']}{self.path}", region)
            tier = "origin"
        if "no-store" in headers.get("Cache-Control", ""):
            return self.answer(body, "BYPASS", "origin")
        with lock:
            cache[self.path] = body
        return self.answer(body, "MISS", tier)

    def answer(self, body, x_cache, tier):
        self.send(200, body, [
            ("X-Cache", x_cache),
            ("X-Cache-Tier", tier),
            ("Server-Timing", "sim;dur=1.5, total;dur=2.0"),
        ])


class Admin(Quiet):
    def do_GET(self):
        if self.path == "/healthz":
            return self.send(200, json.dumps({"status": "ok", "node": node_name}).encode())
        if self.path == "/stats":
            with lock:
                total = counters["total"]
            stats = {"node": node_name, "requests": {"total": total}, "cache": {"objects": len(cache)}}
            return self.send(200, json.dumps(stats).encode())
        self.send(404, b"{}")


servers = []
if role == "origin":
    servers.append(("http", ThreadingHTTPServer(addr(me["listen"]), Origin)))
elif role == "edge":
    servers.append(("http", ThreadingHTTPServer(addr(me["listen"]), Edge)))
    if "https" in me:
        # Bound and announced so that readiness completes; not served.
        servers.append(("https", ThreadingHTTPServer(addr(me["https"]), Quiet)))
    servers.append(("admin", ThreadingHTTPServer(addr(me["admin"]), Admin)))
else:
    sys.exit(f"fake node: role {role} is not simulated")

for service, server in servers:
    host, port = server.server_address[:2]
    print(f"edgebox-listening node={node_name} service={service} addr={host}:{port}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
