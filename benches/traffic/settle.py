#!/usr/bin/env python3
"""Settlement of an epoch of ~100k receipts, end to end on a real cluster, as
ratios from one run (the traffic issue's benchmark):

1. the cluster's settlement of the epoch (from the moment every node has moved
   past it to its record `settled` in GET /v1/settlements: every node closes
   the epoch and reports its volume, the leader merges, two thirds sign, the
   entry goes on the ledger, one group-0 command debits and credits) vs
   fetching the same receipts once from the nodes (GET /v1/receipts pages, the
   bytes a settlement has to account for, moved to one place);
2. `stratosdb audit --settlements` of that epoch (every receipt fetched and its
   ed25519 signature, fee and sequence checked) vs the same fetch;
3. the settlement vs the epoch's length.

    benches/traffic/settle.py [--bin target/release/stratosdb] [--receipts 100000]
                              [--epoch 60] [--out DIR]

Starts 3 `stratosdb node --dev` processes on free 127.0.0.1 ports, founded
together, sharing one local ledger, with --anchor-interval EPOCH seconds
(epochs are the anchor epochs); creates `t` (4 shards x 3 replicas) with 200
documents; waits for a new epoch, then drives unsigned GETs by `_id` (billed to
the dev account, each metered and receipted) with wrk against all three nodes
in 5-second slices until RECEIPTS requests were served or the epoch is about
to end. wrk comes from Debian's packages and drives
/work/shared/peers/http/json_post.lua ($PEERS_DIR). Every process it starts is
stopped at the end, also on an error; every wait is bounded.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "benches", "heal"))
import heal  # noqa: E402  (the cluster harness shared with the self-healing bench)

PEERS_DIR = os.environ.get("PEERS_DIR", "/work/shared/peers")
DOCUMENTS = 200
SLICE_S = 5


class TrafficCluster(heal.Cluster):
    def __init__(self, binary, base, n, epoch_s):
        super().__init__(binary, base, n, "10s")
        self.epoch_s = epoch_s

    def args(self, i):
        return super().args(i) + ["--anchor-interval", "%ds" % self.epoch_s,
                                  "--ledger", os.path.join(self.base, "ledger")]


def get_json(url, timeout=10):
    status, body = heal.http("GET", url, timeout=timeout)
    if status != 200:
        raise RuntimeError("GET %s: HTTP %d %s" % (url, status, body[:300]))
    return json.loads(body)


def epoch_of(url):
    return get_json(url + "/v1/prices")["epoch"]


def wait_for(what, seconds, check, every=0.1):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %d s waiting for %s" % (seconds, what))
        time.sleep(every)


def wrk_slice(urls, seconds):
    """GETs by _id on every node at once for `seconds`; requests served (2xx)."""
    env = dict(os.environ, HTTP_METHOD="GET", HTTP_PATH="/v1/collections/t/docs/{{key}}",
               KEYSPACE=str(DOCUMENTS), KEY_PREFIX="d")
    procs = [subprocess.Popen(["wrk", "-t1", "-c8", "-d%ds" % seconds, "--timeout", "10s",
                               "-s", os.path.join(PEERS_DIR, "http", "json_post.lua"), url],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for url in urls]
    served = 0
    for p in procs:
        out, err = p.communicate(timeout=seconds + 60)
        m = re.search(r"(\d+) requests in", out)
        if not m:
            raise RuntimeError("wrk printed no count: %s %s" % (out[-500:], err[-500:]))
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        served += int(m.group(1)) - (int(bad.group(1)) if bad else 0)
    return served


def fetch_receipts(cluster, report):
    """Downloads every node's receipts of the report's ranges; (seconds, count, bytes)."""
    urls = {}
    for i in range(cluster.n):
        cmap = get_json(cluster.url(i) + "/v1/cluster")
        me = next(n for n in cmap["nodes"] if n["id"] == cmap["self"])
        urls[me["node_key"]] = cluster.url(i)
    start = time.monotonic()
    count = size = 0
    for volume in report["node_volumes"]:
        url = urls[volume["node_key"]]
        at, last = volume["first_sequence"], volume["last_sequence"]
        while at <= last:
            limit = min(10_000, last - at + 1)
            status, body = heal.http("GET", "%s/v1/receipts?from=%d&limit=%d" % (url, at, limit),
                                     timeout=60)
            if status != 200:
                raise RuntimeError("GET /v1/receipts: HTTP %d %s" % (status, body[:300]))
            size += len(body)
            at += limit
            count += limit
    return time.monotonic() - start, count, size


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "stratosdb"))
    ap.add_argument("--receipts", type=int, default=100_000)
    ap.add_argument("--epoch", type=int, default=60, help="epoch (anchor interval) in seconds")
    ap.add_argument("--out", default="/tmp/settle-bench")
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    cluster = TrafficCluster(os.path.abspath(a.bin), a.out, 3, a.epoch)
    try:
        cluster.start_all()
        url = cluster.url(0)
        heal.sql(url, "CREATE COLLECTION t WITH (shards = 4, replicas = 3)")
        for k in range(DOCUMENTS):
            status, body = heal.http("PUT", "%s/v1/collections/t/docs/d%08d" % (url, k),
                                     json.dumps({"n": k, "name": "x" * 200}), timeout=30)
            if status >= 300:
                raise RuntimeError("PUT: HTTP %d %s" % (status, body[:300]))
        # Start with a fresh epoch on every node, so the load fits in one.
        first = epoch_of(url)
        epoch = wait_for("a new epoch", 3 * a.epoch,
                         lambda: min(epoch_of(cluster.url(i)) for i in range(3)) > first
                         and epoch_of(url))
        began = time.monotonic()
        urls = [cluster.url(i) for i in range(3)]
        served = 0
        while served < a.receipts and time.monotonic() - began + SLICE_S + 3 < a.epoch:
            served += wrk_slice(urls, SLICE_S)
            if max(epoch_of(u) for u in urls) != epoch:
                raise RuntimeError("the epoch ended during the load: raise --epoch")
        print("served %d requests in epoch %d (%.1f s)" % (served, epoch, time.monotonic() - began))
        wait_for("epoch %d to end on every node" % epoch, 2 * a.epoch,
                 lambda: all(epoch_of(u) > epoch for u in urls), every=0.05)
        ended = time.monotonic()

        def settled():
            records = get_json("%s/v1/settlements?from=%d&limit=1" % (url, epoch))["settlements"]
            record = records[0] if records and records[0]["epoch"] == epoch else None
            if record and record["status"] == "failed":
                raise RuntimeError("epoch %d failed: %s" % (epoch, record.get("reason")))
            return record if record and record["status"] == "settled" else None
        record = wait_for("epoch %d settled" % epoch, 300, settled, every=0.05)
        settle_s = time.monotonic() - ended
        report = record["report"]
        receipts = sum(v["last_sequence"] - v["first_sequence"] + 1 for v in report["node_volumes"])

        fetch_s, fetched, size = fetch_receipts(cluster, report)
        assert fetched == receipts, (fetched, receipts)

        audit = [cluster.binary, "audit", "--settlements", "--connect", url,
                 "--ledger", os.path.join(a.out, "ledger"), "--from-epoch", str(epoch)]
        start = time.monotonic()
        done = subprocess.run(audit, capture_output=True, text=True, timeout=600)
        audit_s = time.monotonic() - start
        if done.returncode != 0:
            raise RuntimeError("audit failed:\n%s\n%s" % (done.stdout[-2000:], done.stderr[-2000:]))

        print("epoch %d: %d receipts (%d payer(s), %d node volumes), %.1f MB of receipts JSON"
              % (epoch, receipts, len(report["wallet_volumes"]), len(report["node_volumes"]),
                 size / 1e6))
        print("settlement (epoch end -> settled):  %.2f s" % settle_s)
        print("fetching the receipts once:         %.2f s" % fetch_s)
        print("audit --settlements of the epoch:   %.2f s" % audit_s)
        print("settlement / fetch:   %.2fx" % (settle_s / fetch_s))
        print("audit / fetch:        %.2fx" % (audit_s / fetch_s))
        print("settlement / epoch:   %.3fx (epoch %d s)" % (settle_s / a.epoch, a.epoch))
        with open(os.path.join(a.out, "result.json"), "w") as f:
            json.dump({"epoch": epoch, "receipts": receipts, "settle_s": settle_s,
                       "fetch_s": fetch_s, "audit_s": audit_s, "epoch_s": a.epoch}, f)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
