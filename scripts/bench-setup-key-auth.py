# Setup for scripts/bench-proxy.py (--setup): 10,000 consumers with one key-auth key each, a
# route /keyed with key-auth, and the same route without it (/plain), both to the benchmark
# upstream. Loaded with one `sluice sync` (select tag keyauth-bench, so the benchmark's own
# route is left alone). Use with:
#   python3 scripts/bench-proxy.py --setup scripts/bench-setup-key-auth.py \
#     --extra-target 'plain=/plain?apikey=key-5000' --extra-target 'key-auth=/keyed?apikey=key-5000'
import os
import sys
import subprocess
import tempfile

CONSUMERS = 10_000


def setup(admin, up_port):
    # Run by exec from bench-proxy.py (no __file__): the root is beside its script.
    root = os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0])))
    sluice = os.path.join(root, "target", "release", "sluice")
    lines = [
        '_format_version: "3.0"',
        "_info:",
        "  select_tags: [keyauth-bench]",
        "services:",
        "  - name: keyauth-bench",
        f"    url: http://127.0.0.1:{up_port}",
        "    routes:",
        "      - name: plain",
        "        paths: [/plain]",
        "      - name: keyed",
        "        paths: [/keyed]",
        "        plugins:",
        "          - name: key-auth",
        "consumers:",
    ]
    for i in range(CONSUMERS):
        lines += [f"  - username: user-{i}", "    keyauth_credentials:", f"      - key: key-{i}"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        subprocess.run([sluice, "sync", f.name], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "SLUICE_ADMIN_URL": admin})
    finally:
        os.unlink(f.name)
