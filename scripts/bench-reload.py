#!/usr/bin/env python3
"""Reload benchmark: time from an Admin API write to the proxy serving it, and resident
memory, with 10 and with 10,000 routes in the store.

Each sample creates one new route through the Admin API, then polls the proxy (one
keep-alive connection, no sleep) until that route answers 200. The upstream is the node's
own Admin API (`GET /` answers 200), so no other process competes for the two cores.

Run: python3 scripts/bench-reload.py [--samples 100]
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(conn, method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, data


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(routes, samples, sluice):
    work = tempfile.mkdtemp(prefix="sluice-reload-")
    admin_port, proxy_port = free_port(), free_port()
    proc = subprocess.Popen([sluice, "start", "--database", f"sqlite://{work}/r.db",
                             "--admin-listen", f"127.0.0.1:{admin_port}",
                             "--proxy-listen", f"127.0.0.1:{proxy_port}", "--log-level", "warn"],
                            start_new_session=True)
    try:
        deadline = time.time() + 20
        while True:
            try:
                admin = http.client.HTTPConnection("127.0.0.1", admin_port)
                request(admin, "GET", "/status")
                break
            except OSError:
                assert time.time() < deadline
                time.sleep(0.05)
        request(admin, "POST", "/services", {"name": "self", "url": f"http://127.0.0.1:{admin_port}"})
        for i in range(routes):
            status, body = request(admin, "POST", "/services/self/routes",
                                   {"name": f"base-{i}", "paths": [f"/base/{i}"],
                                    "hosts": [f"h{i % 50}.example.com"] if i % 2 else None})
            assert status == 201, body
        proxy = http.client.HTTPConnection("127.0.0.1", proxy_port)
        # Wait until the preloaded config is served.
        while request(proxy, "GET", f"/base/{routes - 1}", None)[0] != 200 and routes % 2 == 1:
            pass
        time.sleep(0.5)
        latencies = []
        for n in range(samples):
            path = f"/new/{n}"
            start = time.perf_counter()
            status, body = request(admin, "POST", "/services/self/routes", {"paths": [path]})
            assert status == 201, body
            while True:
                status, _ = request(proxy, "GET", path)
                if status == 200:
                    break
            latencies.append((time.perf_counter() - start) * 1000)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        return {"routes": routes, "median_ms": statistics.median(latencies), "p99_ms": p99,
                "max_ms": latencies[-1], "rss_mb": rss_mb(proc.pid)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "sluice", "--quiet"], cwd=ROOT, check=True)
    sluice = os.path.join(ROOT, "target", "release", "sluice")
    print("| routes in store | write → served, median | p99 | max | RSS after |")
    print("|---|---|---|---|---|")
    for routes in (10, 10_000):
        r = run(routes, args.samples, sluice)
        print(f"| {r['routes']:,} | {r['median_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms | {r['rss_mb']:.1f} MB |")


if __name__ == "__main__":
    main()
