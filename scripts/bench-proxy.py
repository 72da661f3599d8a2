#!/usr/bin/env python3
"""Proxy benchmark: direct vs nginx vs Sluice, measured side by side in one run.

Starts a fixed-response upstream (nginx `return 200`), nginx as a plain reverse proxy
(`worker_processes auto`, upstream keep-alive), and the release `sluice` binary, then loads
each with wrk, interleaved over several rounds. Reports medians of: throughput, p50/p99
latency, added p99 at concurrency 1, and CPU time per request of each proxy (from /proc).

Run: python3 scripts/bench-proxy.py [--rounds 3] [--duration 8]
Installs nginx and wrk from Debian's packages when they are missing.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_tools():
    missing = [t for t in ("nginx", "wrk") if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        print(f"installing {missing} from Debian's packages", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "nginx-light", "wrk"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(workdir, name, server_block, workers="auto"):
    conf = os.path.join(workdir, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes {workers};
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  {server_block}
}}
""")
    return subprocess.Popen([nginx_bin(), "-c", conf, "-p", workdir], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except Exception as e:  # noqa: BLE001 - anything means "not yet"
            if hasattr(e, "code") and e.code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except FileNotFoundError:
            pass
    return total / CLK_TCK


def process_tree(pid):
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        for child in out.split():
            pids.extend(process_tree(int(child)))
    except FileNotFoundError:
        pass
    return pids


def parse_wrk(text):
    def to_ms(value, unit):
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", text)
        lat[pct] = to_ms(*m.groups())
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"rps": rps, "requests": total, "p50_ms": lat["50"], "p99_ms": lat["99"],
            "non2xx": int(errors.group(1)) if errors else 0}


def run_wrk(url, connections, duration, threads=1):
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def one_route(admin, up_port):
    """The benchmark's service and catch-all route on the node at `admin`."""
    req = urllib.request.Request(f"{admin}/services", method="POST",
                                 data=json.dumps({"name": "bench", "url": f"http://127.0.0.1:{up_port}"}).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
    req = urllib.request.Request(f"{admin}/services/bench/routes", method="POST",
                                 data=json.dumps({"name": "bench", "paths": ["/"]}).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--extra-target", action="append", default=[],
                    help="name=path: also load Sluice at this path (routes set up by --setup)")
    ap.add_argument("--setup", help="python file defining setup(admin_url, upstream_port)")
    ap.add_argument("--upstream-port", type=int, help="use this upstream instead of nginx's")
    ap.add_argument("--baseline", help="another sluice binary (an earlier build) to load side by "
                                       "side, as target 'sluice-baseline', with the same route")
    ap.add_argument("--baseline-args", default="",
                    help="extra `sluice start` arguments for the baseline ({work} is the run's "
                         "temp dir), e.g. to load the same build with a flag on")
    ap.add_argument("--baseline-name", default="sluice-baseline")
    args = ap.parse_args()

    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "-p", "sluice", "--quiet"], cwd=ROOT, check=True)
    sluice = os.path.join(ROOT, "target", "release", "sluice")

    work = tempfile.mkdtemp(prefix="sluice-bench-")
    procs = []
    try:
        up_port = args.upstream_port or free_port()
        if not args.upstream_port:
            procs.append(start_nginx(work, "upstream", f"""
  server {{ listen 127.0.0.1:{up_port}; location / {{ return 200 "hello from the upstream\\n"; }} }}""", workers=1))
        ngx_port = free_port()
        nginx = start_nginx(work, "proxy", f"""
  upstream backend {{ server 127.0.0.1:{up_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ngx_port};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""")
        procs.append(nginx)
        admin_port, proxy_port = free_port(), free_port()
        sl = subprocess.Popen([sluice, "start", "--database", f"sqlite://{work}/bench.db",
                               "--admin-listen", f"127.0.0.1:{admin_port}",
                               "--proxy-listen", f"127.0.0.1:{proxy_port}", "--log-level", "warn"],
                              stdout=subprocess.DEVNULL, start_new_session=True)
        procs.append(sl)
        admin = f"http://127.0.0.1:{admin_port}"
        wait_http(f"{admin}/status")
        one_route(admin, up_port)
        baseline = None
        if args.baseline:
            base_admin, base_proxy = free_port(), free_port()
            baseline = subprocess.Popen([args.baseline, "start", "--database", f"sqlite://{work}/baseline.db",
                                         "--admin-listen", f"127.0.0.1:{base_admin}",
                                         "--proxy-listen", f"127.0.0.1:{base_proxy}", "--log-level", "warn",
                                         *args.baseline_args.replace("{work}", work).split()],
                                        stdout=subprocess.DEVNULL, start_new_session=True)
            procs.append(baseline)
            wait_http(f"http://127.0.0.1:{base_admin}/status")
            one_route(f"http://127.0.0.1:{base_admin}", up_port)
            wait_http(f"http://127.0.0.1:{base_proxy}/")
        if args.setup:
            scope = {}
            exec(open(args.setup).read(), scope)  # noqa: S102 - our own setup file
            scope["setup"](admin, up_port)
        wait_http(f"http://127.0.0.1:{proxy_port}/")
        wait_http(f"http://127.0.0.1:{ngx_port}/")
        wait_http(f"http://127.0.0.1:{up_port}/")

        targets = {
            "direct": (f"http://127.0.0.1:{up_port}/", None),
            "nginx": (f"http://127.0.0.1:{ngx_port}/", nginx.pid),
            "sluice": (f"http://127.0.0.1:{proxy_port}/", sl.pid),
        }
        if baseline:
            targets[args.baseline_name] = (f"http://127.0.0.1:{base_proxy}/", baseline.pid)
        for extra in args.extra_target:
            name, path = extra.split("=", 1)
            targets[name] = (f"http://127.0.0.1:{proxy_port}{path}", sl.pid)
        # Warm up connections and caches.
        for url, _ in targets.values():
            run_wrk(url, 4, 1)

        results = {name: {"load": [], "c1": [], "cpu_us": []} for name in targets}
        for _ in range(args.rounds):
            for name, (url, pid) in targets.items():
                pids = process_tree(pid) if pid else []
                before = cpu_seconds(pids)
                load = run_wrk(url, args.connections, args.duration)
                used = cpu_seconds(pids) - before
                results[name]["load"].append(load)
                if pid:
                    results[name]["cpu_us"].append(used / max(load["requests"], 1) * 1e6)
                results[name]["c1"].append(run_wrk(url, 1, max(2, args.duration // 2)))

        def med(values):
            return statistics.median(values) if values else float("nan")

        print(f"\n{args.rounds} rounds x {args.duration}s, {args.connections} connections, wrk -t1; medians\n")
        print("| target | req/s | p50 ms | p99 ms | p99 ms at c=1 | added p99 at c=1 (µs) | proxy CPU µs/req | non-2xx |")
        print("|---|---|---|---|---|---|---|---|")
        direct_c1 = med([r["p99_ms"] for r in results["direct"]["c1"]])
        for name, r in results.items():
            c1 = med([x["p99_ms"] for x in r["c1"]])
            print(f"| {name} | {med([x['rps'] for x in r['load']]):.0f} | {med([x['p50_ms'] for x in r['load']]):.3f} | "
                  f"{med([x['p99_ms'] for x in r['load']]):.3f} | {c1:.3f} | "
                  f"{'—' if name == 'direct' else f'{(c1 - direct_c1) * 1000:.0f}'} | "
                  f"{med(r['cpu_us']):.1f} | {sum(x['non2xx'] for x in r['load'])} |")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
