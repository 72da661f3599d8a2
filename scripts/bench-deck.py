#!/usr/bin/env python3
"""decK workflow at scale: a generated config of 10,000 services, 10,000 routes and 10,000
plugins. Times (median of --runs): `sluice validate`, `sluice sync` into an empty store,
`sluice diff` of the unchanged file, and `sluice sync` of a one-route change, end to end
(process start to exit, the Admin API on the same machine).

Run: python3 scripts/bench-deck.py [--size 10000] [--runs 3] [--baseline BIN]
With --baseline, an earlier build runs the same steps on its own node, interleaved.
"""
import argparse
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


def generate(n, changed=False):
    lines = ['_format_version: "3.0"', "services:"]
    for i in range(n):
        path = f"/svc/{i}/v2" if changed and i == n // 2 else f"/svc/{i}"
        lines += [
            f"  - name: service-{i:05}",
            f"    url: http://upstream-{i % 100}.internal:8080/api/{i}",
            "    tags: [bench]",
            "    routes:",
            f"      - name: route-{i:05}",
            f"        paths: [\"{path}\"]",
            "        methods: [GET, POST]",
            "        plugins:",
            "          - name: rate-limiting",
            "            config:",
            f"              minute: {100 + i % 50}",
        ]
    return "\n".join(lines) + "\n"


def timed(args, env):
    start = time.perf_counter()
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode not in (0, 2):
        raise RuntimeError(f"{args} failed: {out.stderr[-2000:]}")
    return elapsed, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", help="an earlier sluice binary to time side by side")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "sluice", "--quiet"], cwd=ROOT, check=True)
    sluice = os.path.join(ROOT, "target", "release", "sluice")
    work = tempfile.mkdtemp(prefix="sluice-deck-bench-")
    base = os.path.join(work, "kong.yaml")
    changed = os.path.join(work, "changed.yaml")
    with open(base, "w") as f:
        f.write(generate(args.size))
    with open(changed, "w") as f:
        f.write(generate(args.size, changed=True))
    size_mb = os.path.getsize(base) / 1e6

    binaries = [("sluice", sluice)] + ([("baseline", args.baseline)] if args.baseline else [])
    steps = ["validate", "sync into empty store", "diff, unchanged file", "sync of a one-route change"]
    results = {name: {step: [] for step in steps} for name, _ in binaries}
    for run in range(args.runs):
        for name, binary in binaries:
            run_steps(binary, work, f"{name}-{run}", base, changed, results[name])
    print(f"\n{args.size:,} services + {args.size:,} routes + {args.size:,} plugins ({size_mb:.1f} MB of YAML), median of {args.runs}\n")
    print("| step | " + " | ".join(name for name, _ in binaries) + " |")
    print("|---|" + "---|" * len(binaries))
    for step in steps:
        cells = [f"{statistics.median(results[name][step]):.2f} s" for name, _ in binaries]
        print(f"| {step} | " + " | ".join(cells) + " |")


def run_steps(sluice, work, label, base, changed, results):
    port = free_port()
    db = os.path.join(work, f"{label}.db")
    node = subprocess.Popen([sluice, "start", "--database", f"sqlite://{db}", "--admin-listen", f"127.0.0.1:{port}",
                             "--proxy-listen", f"127.0.0.1:{free_port()}", "--log-level", "warn"], start_new_session=True)
    env = {**os.environ, "SLUICE_ADMIN_URL": f"http://127.0.0.1:{port}"}
    try:
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1).read()
                break
            except OSError:
                assert time.time() < deadline
                time.sleep(0.05)
        results["validate"].append(timed([sluice, "validate", base], env)[0])
        results["sync into empty store"].append(timed([sluice, "sync", base], env)[0])
        elapsed, out = timed([sluice, "diff", base], env)
        assert "Created: 0\n  Updated: 0\n  Deleted: 0" in out, out[-300:]
        results["diff, unchanged file"].append(elapsed)
        elapsed, out = timed([sluice, "sync", changed], env)
        assert "Updated: 1" in out, out[-300:]
        results["sync of a one-route change"].append(elapsed)
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(timeout=10)


if __name__ == "__main__":
    main()
