#!/usr/bin/env python3
"""Writes every key of the key space once into a stratosdb collection, so that
reads always find a ~1 KiB document: INSERTs of BATCH sequential documents
`{"_id": "<prefix><%08d>", "v": "<VALUE_BYTES letters>"}` through POST /v1/sql,
CONCURRENCY keep-alive connections (the same key space as etcd3.sh fill).
Bounded: KEYSPACE/BATCH requests in all; any non-2xx answer fails the fill.

  fill.py URL COLLECTION        (env: KEYSPACE, KEY_PREFIX, VALUE_BYTES,
                                 FILL_BATCH, FILL_CONCURRENCY)
"""
import http.client
import json
import os
import random
import string
import sys
import threading
import time
from urllib.parse import urlparse

url, collection = sys.argv[1], sys.argv[2]
keyspace = int(os.environ.get("KEYSPACE", "100000"))
prefix = os.environ.get("KEY_PREFIX", "bench")
vbytes = int(os.environ.get("VALUE_BYTES", "1024"))
batch = int(os.environ.get("FILL_BATCH", "100"))
conc = int(os.environ.get("FILL_CONCURRENCY", "8"))
u = urlparse(url)
value = "".join(random.choice(string.ascii_letters) for _ in range(vbytes))
blocks = list(range((keyspace + batch - 1) // batch))
lock = threading.Lock()
errors = []
done = [0]


def body(b):
    rows = []
    for n in range(b * batch, min((b + 1) * batch, keyspace)):
        doc = json.dumps({"_id": "%s%08d" % (prefix, n), "v": value})
        rows.append("('%s')" % doc)
    return json.dumps({"sql": "INSERT INTO %s VALUES %s" % (collection, ", ".join(rows))})


def worker():
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    while True:
        with lock:
            if not blocks or errors:
                return
            b = blocks.pop(0)
        conn.request("POST", "/v1/sql", body(b), {"Content-Type": "application/json"})
        r = conn.getresponse()
        text = r.read()
        with lock:
            if r.status >= 300:
                errors.append("block %d: HTTP %d %s" % (b, r.status, text[:300].decode(errors="replace")))
            else:
                done[0] += 1


t0 = time.time()
threads = [threading.Thread(target=worker) for _ in range(conc)]
for t in threads:
    t.start()
for t in threads:
    t.join()
secs = time.time() - t0
n = min(done[0] * batch, keyspace)
print("fill %s: %d blocks of %d (%d documents) in %.1fs, %.0f docs/s; %d error(s)"
      % (collection, done[0], batch, n, secs, n / secs if secs else 0, len(errors)), file=sys.stderr)
for e in errors:
    print("  " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
