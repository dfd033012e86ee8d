#!/usr/bin/env python3
"""Per-thread CPU of processes, by thread name, for cpu.sh's THREADS=1.

    threads.py snapshot PID... > FILE        "pid tid name ticks" lines
    threads.py diff BEFORE AFTER REQUESTS    CPU us per request by node and
                                             thread name (threads that ended
                                             in between are not counted)
"""
import os
import sys
from collections import defaultdict


def snapshot(pids):
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")].replace(" ", "_")
            fields = stat[stat.rindex(")") + 2:].split()
            ticks = int(fields[11]) + int(fields[12])  # utime + stime
            print(pid, tid, name, ticks)


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            pid, tid, name, ticks = line.split()
            out[(pid, tid)] = (name, int(ticks))
    return out


def diff(before, after, requests):
    hz = os.sysconf("SC_CLK_TCK")
    a, b = load(after), load(before)
    pids = sorted({pid for pid, _ in a})
    per = defaultdict(float)
    for key, (name, ticks) in a.items():
        base = b.get(key, (name, 0))[1]
        # A thread name may end in a number (tokio workers): group them.
        group = name.rstrip("0123456789-")
        per[(key[0], group)] += (ticks - base) / hz * 1e6 / requests
    names = sorted({g for _, g in per}, key=lambda g: -sum(per[(p, g)] for p in pids))
    print(f"{'thread':24s}" + "".join(f"{'node ' + str(i + 1):>10s}" for i in range(len(pids))) + f"{'all':>10s}")
    for g in names:
        vals = [per.get((p, g), 0.0) for p in pids]
        if sum(vals) < 0.5:
            continue
        print(f"{g:24s}" + "".join(f"{v:10.1f}" for v in vals) + f"{sum(vals):10.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "snapshot":
        snapshot(sys.argv[2:])
    elif sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
