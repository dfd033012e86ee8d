#!/usr/bin/env python3
"""Self-healing benchmarks (the self-healing issue), as ratios from one run:

1. re-replication of one shard of ~MB megabytes onto a new node vs copying the
   same bytes between two loopback sockets (the physical floor here);
2. write throughput (wrk, PUT of 1 KiB) from the moment the move shows in
   GET /v1/cluster vs the same load just before the kill;
3. time from SIGKILL of a shard's leader to the first acknowledged write on
   that shard, vs the configured election timeout.

    benches/heal/heal.py [--bin target/release/stratosdb] [--mb 100] [--out DIR]

Starts 4 `stratosdb node` processes on free 127.0.0.1 ports (founded together
with --peers, --down-after 2s), data under DIR (default /tmp/heal-bench, wiped
first), fills collection `big` (1 shard, 3 replicas) with MB x 1024 documents
of 1 KiB through benches/peers/fill.py, SIGKILLs a follower of the shard, and
polls GET /v1/cluster (which waits at most 1 s for a member that does not
answer, and not at all for one marked down) every 0.1 s until the shard is
healed (3 voters on live nodes, no move, equal applied index and root). wrk comes from Debian's
packages and drives /work/shared/peers/http/json_post.lua ($PEERS_DIR).
Every process it starts is stopped by PID at the end, also on an error;
every wait is bounded.
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
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PEERS_DIR = os.environ.get("PEERS_DIR", "/work/shared/peers")
ELECTION_TIMEOUT_S = 1.0  # 10 ticks of 100 ms: replication/src/config.rs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def socket_floor(nbytes, runs=3):
    """Seconds to copy nbytes between two loopback sockets (median of runs)."""
    times = []
    chunk = b"x" * (1 << 20)
    for _ in range(runs):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        received = [0]

        def sink():
            conn, _ = server.accept()
            with conn:
                while True:
                    data = conn.recv(1 << 20)
                    if not data:
                        return
                    received[0] += len(data)

        t = threading.Thread(target=sink)
        t.start()
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as c:
            sent = 0
            while sent < nbytes:
                c.sendall(chunk)
                sent += len(chunk)
        t.join(60)
        times.append(time.monotonic() - start)
        server.close()
    return statistics.median(times)


def http(method, url, body=None, timeout=5):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


class Cluster:
    def __init__(self, binary, base, n, down_after):
        self.binary, self.base, self.n = binary, base, n
        self.p2p = ["127.0.0.1:%d" % free_port() for _ in range(n)]
        self.http = ["127.0.0.1:%d" % free_port() for _ in range(n)]
        self.down_after = down_after
        self.procs = [None] * n
        self.ids = [None] * n

    def args(self, i):
        others = [p for j, p in enumerate(self.p2p) if j != i]
        return [self.binary, "node", "--data", os.path.join(self.base, "n%d" % i),
                "--p2p", self.p2p[i], "--http", self.http[i],
                "--peers", ",".join(others), "--down-after", self.down_after, "--dev"]

    def start(self, i):
        out = open(os.path.join(self.base, "n%d.out" % i), "w")
        log = open(os.path.join(self.base, "n%d.log" % i), "a")
        self.procs[i] = subprocess.Popen(self.args(i), stdout=out, stderr=log)

    def start_all(self):
        for i in range(self.n):
            self.start(i)
        deadline = time.monotonic() + 60
        for i in range(self.n):
            while True:
                if time.monotonic() > deadline:
                    raise RuntimeError("node %d not healthy in 60 s (logs in %s)" % (i, self.base))
                try:
                    if http("GET", self.url(i) + "/v1/health", timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            self.ids[i] = json.loads(http("GET", self.url(i) + "/v1/cluster")[1])["self"]

    def url(self, i):
        return "http://" + self.http[i]

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def stop(self):
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in self.procs:
            if p is not None and p.poll() is None:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)


def sql(url, text, timeout=60):
    status, body = http("POST", url + "/v1/sql", json.dumps({"sql": text}), timeout)
    if status >= 300:
        raise RuntimeError("%s: HTTP %d %s" % (text[:60], status, body[:300]))
    return json.loads(body)


def shard_state(cmap, collection, shard, replicas):
    """(healed, move) for one shard in a GET /v1/cluster reply."""
    up = {n["id"] for n in cmap["nodes"] if n.get("up")}
    s = next(s for s in cmap["shards"] if s["collection"] == collection and s["shard"] == shard)
    moves = [m for m in cmap.get("moves", []) if m["collection"] == collection and m["shard"] == shard]
    voters = [r for r in s["replicas"] if r.get("role", "voter") == "voter" and r["node"] in up]
    same = len({(r["applied"], r["root"]) for r in s["replicas"]}) == 1
    healed = len(voters) == replicas == len(s["replicas"]) and not moves and same
    return healed, (moves[0] if moves else None), s


def wrk(url, collection, seconds, conns=16):
    env = dict(os.environ, HTTP_METHOD="PUT", HTTP_PATH="/v1/collections/%s/docs/{{key}}" % collection,
               HTTP_BODY='{"v":"{{pad:1024}}"}', KEYSPACE="10000", KEY_PREFIX="w")
    out = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "10s",
                          "-s", os.path.join(PEERS_DIR, "http", "json_post.lua"), url],
                         env=env, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out.stdout)
    if not m:
        raise RuntimeError("wrk printed no rate: %s %s" % (out.stdout[-500:], out.stderr[-500:]))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out.stdout)
    return float(m.group(1)), int(non2xx.group(1)) if non2xx else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "stratosdb"))
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--out", default="/tmp/heal-bench")
    ap.add_argument("--load-seconds", type=int, default=10)
    a = ap.parse_args()
    if not os.access(a.bin, os.X_OK):
        sys.exit("no binary at %s (cargo build --release --bin stratosdb)" % a.bin)
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    nbytes = a.mb << 20
    floor = socket_floor(nbytes)
    print("socket floor: %d MB in %.3f s (%.0f MB/s)" % (a.mb, floor, a.mb / floor), flush=True)

    c = Cluster(a.bin, a.out, 4, "2s")
    rows = []
    try:
        c.start_all()
        url0 = c.url(0)
        sql(url0, "CREATE COLLECTION big WITH (shards = 1, replicas = 3)")
        env = dict(os.environ, KEYSPACE=str(a.mb * 1024), KEY_PREFIX="big", FILL_CONCURRENCY="4")
        subprocess.run([sys.executable, os.path.join(ROOT, "benches", "peers", "fill.py"), url0, "big"],
                       env=env, check=True, timeout=1800)
        cmap = json.loads(http("GET", url0 + "/v1/cluster")[1])
        _, _, s = shard_state(cmap, "big", 0, 3)
        leader = s["leader"]
        follower = next(r["node"] for r in s["replicas"] if r["node"] != leader)
        leader_i, victim = c.ids.index(leader), c.ids.index(follower)
        leader_url = c.url(leader_i)

        before, errs_before = wrk(leader_url, "big", a.load_seconds)
        print("writes before: %.0f/s (%d non-2xx)" % (before, errs_before), flush=True)

        killed = time.monotonic()
        c.kill(victim)
        during = {}
        load = threading.Thread(target=lambda: during.update(
            zip(("rate", "errors"), wrk(leader_url, "big", a.load_seconds))))
        move_start = move_end = None
        deadline = killed + 600
        while time.monotonic() < deadline:
            try:
                status, body = http("GET", leader_url + "/v1/cluster", timeout=5)
            except OSError:
                status, body = 0, ""
            if status == 200:
                healed, move, _ = shard_state(json.loads(body), "big", 0, 3)
                if move and move_start is None:
                    move_start = time.monotonic()
                    load.start()  # the write load runs while the shard is copied
                    print("move started %.1f s after the kill: %s" % (move_start - killed, move), flush=True)
                if healed and move_start is not None:
                    move_end = time.monotonic()
                    break
            time.sleep(0.1)
        if move_start is not None:
            load.join(a.load_seconds + 120)
        if move_end is None:
            raise RuntimeError("shard not healed within 600 s of the kill (logs in %s)" % a.out)
        copy = move_end - move_start
        print("re-replicated in %.2f s (%.2f s after the kill)" % (copy, move_end - killed), flush=True)
        rows.append(("re-replication of a %d MB shard / loopback socket copy of the same bytes" % a.mb,
                     "%.1fx the floor's time (%.2f s vs %.3f s)" % (copy / floor, copy, floor)))
        rows.append(("writes during re-replication / writes before (wrk, 16 connections, PUT 1 KiB)",
                     "%.2fx (%.0f vs %.0f ops/s; non-2xx %d, %d)" % (during["rate"] / before, during["rate"],
                                                                    before, during["errors"], errs_before)))

        # Failover: kill the leader, write through another live node until a 2xx.
        other = next(i for i in range(c.n) if i not in (leader_i, victim))
        key_url = c.url(other) + "/v1/collections/big/docs/failover"
        c.kill(leader_i)
        killed = time.monotonic()
        first_ack = None
        while time.monotonic() < killed + 60:
            try:
                status, _ = http("PUT", key_url, '{"v":"after failover"}', timeout=2)
                if status < 300:
                    first_ack = time.monotonic() - killed
                    break
            except OSError:
                pass
            time.sleep(0.01)
        if first_ack is None:
            raise RuntimeError("no write acknowledged within 60 s of killing the leader")
        rows.append(("SIGKILL of the shard's leader -> first acknowledged write / election timeout",
                     "%.2fx (%.0f ms vs %.0f ms)" % (first_ack / ELECTION_TIMEOUT_S, first_ack * 1000,
                                                    ELECTION_TIMEOUT_S * 1000)))
    finally:
        c.stop()
    print()
    print("| measure (same run) | ratio |")
    print("|---|---|")
    for what, ratio in rows:
        print("| %s | %s |" % (what, ratio))


if __name__ == "__main__":
    main()
