#!/usr/bin/env python3
"""Instructions per proxied request, counted with callgrind: a figure this shared, noisy
machine cannot move, for hot-path changes too small for a wrk run to show.

Runs the release `sluice` under `valgrind --tool=callgrind` behind a fixed-response nginx
upstream, with the benchmark route `/` and, with --setup, whatever that file adds (the same
setup files as bench-proxy.py). For each target path it zeroes the counters
(`callgrind_control -z`), sends --requests requests over one keep-alive connection, dumps
(`callgrind_control -d`) and divides the instructions of every thread of the process by the
request count. A second node can run with --variant-args (e.g. the access log on), measured on
`/` the same way, so a flag's cost is the difference of two counts from one run.

Run:
  python3 scripts/bench-instructions.py --requests 2000 \\
    --setup scripts/bench-setup-key-auth.py \\
    --target 'plain=/plain?apikey=key-5000' --target 'key-auth=/keyed?apikey=key-5000' \\
    --variant-args '--proxy-access-log {work}/access.log'
Installs valgrind and nginx from Debian's packages when they are missing.
"""
import argparse
import glob
import http.client
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench_proxy", os.path.join(ROOT, "scripts", "bench-proxy.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


ANNOTATE = 0


def start_node(sluice, work, name, extra_args):
    admin, proxy = bench.free_port(), bench.free_port()
    out = os.path.join(work, f"{name}.callgrind")
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         sluice, "start", "--database", f"sqlite://{work}/{name}.db",
         "--admin-listen", f"127.0.0.1:{admin}", "--proxy-listen", f"127.0.0.1:{proxy}",
         "--log-level", "warn", *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    bench.wait_http(f"http://127.0.0.1:{admin}/status", timeout=120)
    return process, f"http://127.0.0.1:{admin}", proxy, out


def load(proxy_port, path, requests):
    connection = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
    for _ in range(requests):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")
    connection.close()


def wait_ok(proxy_port, path, attempts=600):
    """Polls until the node serves `path` with 200 (its config has reached the proxy)."""
    for _ in range(attempts):
        try:
            load(proxy_port, path, 1)
            return
        except (RuntimeError, OSError):
            bench.time.sleep(0.1)
    raise RuntimeError(f"{path} never answered 200")


def count(process, out, proxy_port, path, requests):
    """Instructions per request on `path`: zero, load, dump, read the dump's totals."""
    wait_ok(proxy_port, path)
    load(proxy_port, path, 50)  # warm: connections, caches, lazily built state
    subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    load(proxy_port, path, requests)
    before = set(glob.glob(out + "*"))
    subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    dumps = sorted(set(glob.glob(out + "*")) - before, key=os.path.getmtime)
    if ANNOTATE:
        for dump in dumps:
            top = subprocess.run(["callgrind_annotate", "--inclusive=no", dump], capture_output=True, text=True).stdout
            print(f"--- {path}\n" + "\n".join(top.splitlines()[:ANNOTATE + 20]), file=sys.stderr)
    total = 0
    for dump in dumps:
        with open(dump) as f:
            for line in f:
                m = re.match(r"(?:summary|totals): (\d+)", line)
                if m:
                    total += int(m.group(1))
                    break
    return total / requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--setup", help="python file defining setup(admin_url, upstream_port)")
    ap.add_argument("--target", action="append", default=[], help="name=path, besides '/'")
    ap.add_argument("--variant-args", default="",
                    help="`sluice start` arguments of a second node measured on '/' "
                         "({work} is the run's temp dir)")
    ap.add_argument("--annotate", type=int, default=0,
                    help="print the N functions with the most instructions of each target (stderr)")
    args = ap.parse_args()
    global ANNOTATE
    ANNOTATE = args.annotate

    for tool, package in (("valgrind", "valgrind"), ("nginx", "nginx-light")):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            subprocess.run(["apt-get", "install", "-y", package], check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    subprocess.run(["cargo", "build", "--release", "-p", "sluice", "--quiet"], cwd=ROOT, check=True)
    sluice = os.path.join(ROOT, "target", "release", "sluice")

    work = tempfile.mkdtemp(prefix="sluice-instr-")
    procs = []
    rows = []
    try:
        up_port = bench.free_port()
        procs.append(bench.start_nginx(work, "upstream", f"""
  server {{ listen 127.0.0.1:{up_port}; location / {{ return 200 "hello from the upstream\\n"; }} }}""", workers=1))
        bench.wait_http(f"http://127.0.0.1:{up_port}/")

        node, admin, proxy, out = start_node(sluice, work, "main", [])
        procs.append(node)
        bench.one_route(admin, up_port)
        if args.setup:
            scope = {}
            sys.argv[0] = os.path.join(ROOT, "scripts", "bench-proxy.py")  # setup files find the root by it
            exec(open(args.setup).read(), scope)  # noqa: S102 - our own setup file
            scope["setup"](admin, up_port)
        bench.wait_http(f"http://127.0.0.1:{proxy}/", timeout=120)
        targets = [("sluice /", "/")] + [tuple(t.split("=", 1)) for t in args.target]
        for name, path in targets:
            rows.append((name, count(node, out, proxy, path, args.requests)))

        if args.variant_args:
            extra = args.variant_args.replace("{work}", work).split()
            variant, v_admin, v_proxy, v_out = start_node(sluice, work, "variant", extra)
            procs.append(variant)
            bench.one_route(v_admin, up_port)
            bench.wait_http(f"http://127.0.0.1:{v_proxy}/", timeout=120)
            rows.append((f"sluice {args.variant_args} /", count(variant, v_out, v_proxy, "/", args.requests)))

        print(f"\n{args.requests} requests per target over one keep-alive connection, callgrind\n")
        print("| target | instructions per request |")
        print("|---|---|")
        for name, per_request in rows:
            print(f"| {name} | {per_request:,.0f} |")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
