#!/usr/bin/env python3
"""Hybrid-mode benchmark: a control plane with 10,000 services, routes and plugins, and 10
data planes, all on this machine. For each sample, one route's path is changed with
`sluice sync`; we time until every data plane serves the new path (matched: anything but the
router's 404), from the start of `sluice sync` and from its exit (the commit). Also reports
the bytes a data plane receives per config push (the gzip frame, measured as the size of
the data plane's cache file, which holds the same gzip JSON plus a one-line header).

Run: python3 scripts/bench-hybrid.py [--size 10000] [--data-planes 10] [--samples 10]
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
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(n, changed_path):
    # Upstreams point at a closed local port: a matched route answers 502 at once.
    lines = ['_format_version: "3.0"', "services:"]
    for i in range(n):
        path = changed_path if i == n // 2 else f"/svc/{i}"
        lines += [f"  - name: service-{i:05}", "    url: http://127.0.0.1:9/api", "    routes:",
                  f"      - name: route-{i:05}", f"        paths: [\"{path}\"]", "        plugins:",
                  "          - name: rate-limiting", "            config:", f"              minute: {100 + i % 50}"]
    return "\n".join(lines) + "\n"


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return json.loads(r.read() or b"null")
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def served(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status != 404
    except OSError:
        return False
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--data-planes", type=int, default=10)
    ap.add_argument("--samples", type=int, default=10)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "sluice", "--quiet"], cwd=ROOT, check=True)
    sluice = os.path.join(ROOT, "target", "release", "sluice")
    work = tempfile.mkdtemp(prefix="sluice-hybrid-bench-")
    cert, key = os.path.join(work, "c.crt"), os.path.join(work, "c.key")
    subprocess.run([sluice, "cluster", "gen-cert", cert, key], check=True, stdout=subprocess.DEVNULL)
    admin_port, cluster_port = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen([sluice, "start", "--role", "control_plane", "--database", f"sqlite://{work}/cp.db",
                                       "--admin-listen", f"127.0.0.1:{admin_port}", "--cluster-listen", f"127.0.0.1:{cluster_port}",
                                       "--cluster-cert", cert, "--cluster-cert-key", key, "--log-level", "warn"], start_new_session=True))
        admin = f"http://127.0.0.1:{admin_port}"
        wait_http(f"{admin}/status")
        env = {**os.environ, "SLUICE_ADMIN_URL": admin}
        files = []
        for n, path in enumerate(["/changed/a", "/changed/b"]):
            f = os.path.join(work, f"kong{n}.yaml")
            with open(f, "w") as out:
                out.write(generate(args.size, path))
            files.append((f, path))
        subprocess.run([sluice, "sync", files[0][0]], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dps = []
        for i in range(args.data_planes):
            proxy, status = free_port(), free_port()
            prefix = os.path.join(work, f"dp{i}")
            procs.append(subprocess.Popen([sluice, "start", "--role", "data_plane", "--cluster-control-plane", f"127.0.0.1:{cluster_port}",
                                           "--cluster-cert", cert, "--cluster-cert-key", key, "--prefix", prefix,
                                           "--proxy-listen", f"127.0.0.1:{proxy}", "--status-listen", f"127.0.0.1:{status}",
                                           "--log-level", "warn"], start_new_session=True))
            dps.append((proxy, status, prefix))
        for proxy, status, _ in dps:
            deadline = time.time() + 120
            while (wait_http(f"http://127.0.0.1:{status}/status") or {}).get("routes", 0) < args.size:
                assert time.time() < deadline, "data plane never loaded the config"
                time.sleep(0.2)
        cache_bytes = statistics.median(os.path.getsize(os.path.join(p, "config.cache")) for _, _, p in dps)

        from_start, from_commit = [], []
        for sample in range(args.samples):
            f, path = files[(sample + 1) % 2]
            started = time.perf_counter()
            subprocess.run([sluice, "sync", f], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            committed = time.perf_counter()
            pending = list(dps)
            while pending:
                pending = [dp for dp in pending if not served(dp[0], path)]
            done = time.perf_counter()
            from_start.append((done - started) * 1000)
            from_commit.append((done - committed) * 1000)
        from_start.sort()
        from_commit.sort()

        def p99(values):
            return values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]

        print(f"\n{args.size:,} services + routes + plugins, {args.data_planes} data planes, {args.samples} one-route changes\n")
        print("| measure | median | p99 (max of samples) |")
        print("|---|---|---|")
        print(f"| `sluice sync` start → every data plane serves the change | {statistics.median(from_start):.0f} ms | {p99(from_start):.0f} ms |")
        print(f"| sync committed (CLI exit) → every data plane serves it | {statistics.median(from_commit):.0f} ms | {p99(from_commit):.0f} ms |")
        print(f"| bytes per data plane per push (full snapshot, gzip JSON) | {cache_bytes / 1e6:.2f} MB | |")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
