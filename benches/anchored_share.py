#!/usr/bin/env python3
"""The share of proven reads whose proofs are anchored, with a short anchor
interval, for two builds in one run (the issue "anchored proofs are rare with
a short anchor interval"):

    benches/anchored_share.py --baseline OLD/stratosdb --candidate target/debug/stratosdb \
        [--interval 500ms] [--reads 300] [--anvil-block-time S]

For each binary: one `stratosdb node --dev` on free 127.0.0.1 ports with
`--anchor-interval INTERVAL`, anchoring on a local ledger in a fresh
temporary folder, or with --anvil-block-time S on a fresh anvil
(node_modules/.bin/anvil, chain id 2048, a block every S seconds, like a
real chain's inclusion delay; the node's key is anvil's first dev account);
a collection of 100 documents (one shard); once an epoch is anchored, READS
proven reads of one document by `_id` (`POST /v1/sql` with `"proof": true`),
one every 50 ms, while a writer updates other documents every 100 ms. A
read counts as anchored when its proof carries an anchor. Prints each
build's share and candidate / baseline. The node is stopped by PID at the
end, also on an error; every wait is bounded.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, method, path, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except OSError as e:
        return 0, str(e)


def until(what, attempt, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        result = attempt()
        if result:
            return result
        time.sleep(0.2)
    raise RuntimeError(f"gave up waiting for {what}")


ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# anvil's first default development account (public, documented by Foundry).
ANVIL_DEV_KEY = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def start_anvil(folder, block_time):
    port = free_port()
    log = open(os.path.join(folder, "anvil.log"), "w")
    anvil = subprocess.Popen(
        [os.path.join(ROOT, "node_modules/.bin/anvil"), "--host", "127.0.0.1",
         "--port", str(port), "--chain-id", "2048", "--hardfork", "london",
         "--block-time", str(block_time)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    until("anvil", lambda: call(url, "POST", "", rpc)[0] == 200)
    key = os.path.join(folder, "anchor-key")
    with open(key, "w") as f:
        f.write(ANVIL_DEV_KEY + "\n")
    os.chmod(key, 0o600)
    return anvil, ["--chain", "stratos", "--rpc", url, "--chain-id", "2048", "--key-file", key]


def stop_process(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def share(binary, interval, reads, block_time):
    folder = tempfile.mkdtemp(prefix="anchored-share-")
    http = f"127.0.0.1:{free_port()}"
    url = f"http://{http}"
    anvil = None
    chain = ["--ledger", os.path.join(folder, "ledger")]
    if block_time:
        anvil, chain = start_anvil(folder, block_time)
    args = [binary, "node", "--data", os.path.join(folder, "data"),
            "--p2p", f"127.0.0.1:{free_port()}", "--http", http, "--dev",
            "--anchor-interval", interval] + chain
    log = open(os.path.join(folder, "node.log"), "w")
    node = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    stop = threading.Event()
    try:
        until("the node", lambda: call(url, "GET", "/v1/health")[0] == 200)
        sql = "CREATE COLLECTION c WITH (shards = 1)"
        until("the collection", lambda: call(url, "POST", "/v1/sql", {"sql": sql})[0] == 200)
        for i in range(100):
            status, reply = call(url, "PUT", f"/v1/collections/c/docs/d{i:03}", {"n": i})
            assert status in (200, 201), reply
        until("an anchored epoch", lambda: any(
            a["status"] == "anchored" for a in call(url, "GET", "/v1/anchors")[1]["anchors"]))

        def writer():
            i = 0
            while not stop.is_set():
                call(url, "PUT", f"/v1/collections/c/docs/d{50 + i % 50:03}", {"n": i})
                i += 1
                stop.wait(0.1)

        thread = threading.Thread(target=writer)
        thread.start()
        anchored = 0
        for r in range(reads):
            sql = f"SELECT * FROM c WHERE _id = 'd{r % 50:03}'"
            status, reply = call(url, "POST", "/v1/sql", {"sql": sql, "proof": True})
            assert status == 200, reply
            anchored += all(p.get("anchor") for p in reply["proofs"])
            time.sleep(0.05)
        stop.set()
        thread.join(timeout=10)
        return anchored / reads
    finally:
        stop.set()
        stop_process(node)
        if anvil:
            stop_process(anvil)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--baseline", required=True)
    p.add_argument("--candidate", required=True)
    p.add_argument("--interval", default="500ms")
    p.add_argument("--reads", type=int, default=300)
    p.add_argument("--anvil-block-time", type=float, default=0)
    a = p.parse_args()
    base = share(a.baseline, a.interval, a.reads, a.anvil_block_time)
    cand = share(a.candidate, a.interval, a.reads, a.anvil_block_time)
    chain = f"anvil, a block every {a.anvil_block_time} s" if a.anvil_block_time else "local ledger"
    print(f"anchored share, --anchor-interval {a.interval}, {chain}, {a.reads} reads:")
    print(f"  baseline  {base:.3f}  ({a.baseline})")
    print(f"  candidate {cand:.3f}  ({a.candidate})")
    print(f"  candidate / baseline = {cand / base:.2f}x" if base else "  baseline had none anchored")


if __name__ == "__main__":
    sys.exit(main())
