#!/usr/bin/env python3
"""AI gateway benchmark: an ai-proxy chat route vs a plain proxied route vs the provider
directly, side by side in one run, against the mock provider (`sluice-mock-llm`, release).

Reports, medians over --rounds: throughput and p50/p99 at 32 connections; p99 at
concurrency 1 and the p99 each route adds over direct; and for streaming, time to first
byte of the SSE body (direct vs via ai-proxy), sequential requests.

With --governed, three more routes load side by side: the same chat route with prometheus
(every flag, AI metrics) and ai-rate-limiting-advanced counting in memory (a budget no run
reaches), then the same with the budget in Redis read on every request (sync_rate 0), and
batched (sync_rate 1). --redis-port names the Redis (default 6379).

Run: python3 scripts/bench-ai.py [--rounds 3] [--duration 6] [--governed]
"""
import argparse
import http.client
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench_proxy", os.path.join(ROOT, "scripts", "bench-proxy.py"))
bp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bp)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}


def wrk_script(work, name, headers):
    path = os.path.join(work, f"{name}.lua")
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(CHAT))}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def wrk(url, script, connections, duration):
    out = subprocess.run(["wrk", "-t1", "-c", str(connections), "-d", f"{duration}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    return bp.parse_wrk(out)


def ttfb(host, port, path, headers, n=200):
    body = json.dumps({**CHAT, "stream": True})
    times = []
    conn = http.client.HTTPConnection(host, port)
    conn.connect()
    # http.client writes headers and body separately; without NODELAY, Nagle plus delayed ACK
    # adds ~40 ms to every request and hides what we measure.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(n):
        start = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        first = response.read1(1)
        times.append((time.perf_counter() - start) * 1000)
        assert first, "empty stream"
        response.read()
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--governed", action="store_true")
    ap.add_argument("--advanced", action="store_true",
                    help="also load ai-proxy-advanced with 5 round-robin targets (all the mock)")
    ap.add_argument("--redis-port", type=int, default=6379)
    args = ap.parse_args()
    bp.ensure_tools()
    subprocess.run(["cargo", "build", "--release", "-p", "sluice", "-p", "sluice-mock-llm", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="sluice-ai-bench-")
    mock_port, admin_port, proxy_port = bp.free_port(), bp.free_port(), bp.free_port()
    procs = []
    try:
        procs.append(subprocess.Popen([os.path.join(ROOT, "target/release/sluice-mock-llm"), "--listen", f"127.0.0.1:{mock_port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        sl = subprocess.Popen([os.path.join(ROOT, "target/release/sluice"), "start", "--database", f"sqlite://{work}/b.db",
                               "--admin-listen", f"127.0.0.1:{admin_port}", "--proxy-listen", f"127.0.0.1:{proxy_port}",
                               "--log-level", "warn"], start_new_session=True)
        procs.append(sl)
        admin = f"http://127.0.0.1:{admin_port}"
        bp.wait_http(f"{admin}/status")
        bp.wait_http(f"http://127.0.0.1:{mock_port}/__mock/health")

        def post(path, body):
            import urllib.request
            req = urllib.request.Request(f"{admin}{path}", method="POST", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
            urllib.request.urlopen(req).read()

        post("/services", {"name": "mock", "url": f"http://127.0.0.1:{mock_port}/v1/chat/completions"})
        post("/services/mock/routes", {"name": "plain", "paths": ["/plain"]})
        post("/routes", {"name": "ai", "paths": ["/ai"]})
        post("/routes/ai/plugins", {"name": "ai-proxy", "config": {
            "route_type": "llm/v1/chat",
            "auth": {"header_name": "Authorization", "header_value": "Bearer sk-bench"},
            "model": {"provider": "openai", "name": "gpt-4o", "options": {"upstream_url": f"http://127.0.0.1:{mock_port}"}},
        }})
        governed = []
        if args.governed:
            import uuid
            for name, strategy in [("ai-governed", {}),
                                   ("ai-governed-redis", {"strategy": "redis", "sync_rate": 0,
                                                          "redis": {"host": "127.0.0.1", "port": args.redis_port}}),
                                   ("ai-governed-redis-batched", {"strategy": "redis", "sync_rate": 1,
                                                                  "redis": {"host": "127.0.0.1", "port": args.redis_port}})]:
                post("/routes", {"name": name, "paths": [f"/{name}"]})
                post(f"/routes/{name}/plugins", {"name": "ai-proxy", "config": {
                    "route_type": "llm/v1/chat",
                    "auth": {"header_name": "Authorization", "header_value": "Bearer sk-bench"},
                    "model": {"provider": "openai", "name": "gpt-4o", "options": {"upstream_url": f"http://127.0.0.1:{mock_port}"}},
                    "logging": {"log_statistics": True},
                }})
                post(f"/routes/{name}/plugins", {"name": "prometheus", "config": {
                    "per_consumer": True, "status_code_metrics": True, "latency_metrics": True,
                    "bandwidth_metrics": True, "ai_metrics": True}})
                post(f"/routes/{name}/plugins", {"name": "ai-rate-limiting-advanced", "config": {
                    "llm_providers": [{"name": "openai", "limit": [1e15], "window_size": [3600]}],
                    "identifier": "ip", "namespace": f"bench-{uuid.uuid4()}", **strategy}})
                governed.append(name)
        if args.advanced:
            post("/routes", {"name": "ai-advanced", "paths": ["/ai-advanced"]})
            post("/routes/ai-advanced/plugins", {"name": "ai-proxy-advanced", "config": {
                "targets": [{
                    "route_type": "llm/v1/chat",
                    "auth": {"header_name": "Authorization", "header_value": "Bearer sk-bench"},
                    "model": {"provider": "openai", "name": "gpt-4o",
                              "options": {"upstream_url": f"http://127.0.0.1:{mock_port}"}},
                    "description": f"target-{i}",
                } for i in range(5)],
                "balancer": {"algorithm": "round-robin"},
            }})
            governed.append("ai-advanced")
        time.sleep(0.5)
        auth = {"Authorization": "Bearer sk-bench"}
        targets = {
            "direct (mock)": (f"http://127.0.0.1:{mock_port}/v1/chat/completions", wrk_script(work, "direct", auth)),
            "plain proxied route": (f"http://127.0.0.1:{proxy_port}/plain", wrk_script(work, "plain", auth)),
            "ai-proxy chat route": (f"http://127.0.0.1:{proxy_port}/ai", wrk_script(work, "ai", {})),
        }
        for name in governed:
            targets[name] = (f"http://127.0.0.1:{proxy_port}/{name}", wrk_script(work, name, {}))
        for url, script in targets.values():
            r = wrk(url, script, 4, 1)
            assert r["non2xx"] == 0, f"{url} answered non-2xx during warm-up"
        results = {name: {"load": [], "c1": []} for name in targets}
        for _ in range(args.rounds):
            for name, (url, script) in targets.items():
                results[name]["load"].append(wrk(url, script, 32, args.duration))
                results[name]["c1"].append(wrk(url, script, 1, max(2, args.duration // 2)))
        med = statistics.median
        direct_c1 = med([r["p99_ms"] for r in results["direct (mock)"]["c1"]])
        print(f"\n{args.rounds} rounds x {args.duration}s, wrk -t1, POST chat (non-streaming); medians\n")
        print("| target | req/s (c=32) | p50 ms | p99 ms | p50 ms at c=1 | p99 ms at c=1 | added p99 at c=1 | non-2xx |")
        print("|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            c1 = med([x["p99_ms"] for x in r["c1"]])
            c1_p50 = med([x["p50_ms"] for x in r["c1"]])
            added = "—" if name.startswith("direct") else f"{(c1 - direct_c1) * 1000:.0f} µs"
            print(f"| {name} | {med([x['rps'] for x in r['load']]):.0f} | {med([x['p50_ms'] for x in r['load']]):.3f} | "
                  f"{med([x['p99_ms'] for x in r['load']]):.3f} | {c1_p50:.3f} | {c1:.3f} | {added} | {sum(x['non2xx'] for x in r['load'])} |")
        d50, d99 = ttfb("127.0.0.1", mock_port, "/v1/chat/completions", auth)
        a50, a99 = ttfb("127.0.0.1", proxy_port, "/ai", {})
        print("\nStreaming, time to first byte of the SSE body, 200 sequential requests:\n")
        print("| target | median | p99 |")
        print("|---|---|---|")
        print(f"| direct (mock) | {d50:.3f} ms | {d99:.3f} ms |")
        print(f"| ai-proxy chat route | {a50:.3f} ms | {a99:.3f} ms |")
        print(f"| difference | {a50 - d50:.3f} ms | {a99 - d99:.3f} ms |")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
