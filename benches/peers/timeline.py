#!/usr/bin/env python3
"""Lines a wrk time line (benches/peers/timeline.lua, TIMELINE=1 with cpu.sh)
up with the traffic epochs: replies per window by the time since the epoch
began (the epoch's first reply), averaged over every whole epoch of the run,
relative to the run's mean. A dip after each epoch change shows as low
ratios in the first windows.

    benches/peers/timeline.py OUT/LABEL.timeline.txt [...]
"""
import sys
from collections import defaultdict


def load(path):
    windows, epochs = {}, {}
    with open(path) as f:
        for line in f:
            kind, a, b = line.split()
            if kind == "w":
                windows[int(a)] = int(b)
            elif kind == "e":
                epochs[int(a)] = int(b)
    return windows, epochs


def report(path):
    windows, epochs = load(path)
    if not windows:
        print(f"{path}: no replies")
        return
    step = min(b - a for a, b in zip(sorted(windows), sorted(windows)[1:])) if len(windows) > 1 else 50
    first, last = min(windows), max(windows)
    series = [windows.get(t, 0) for t in range(first, last + step, step)]
    # Drop the first and last window (partial).
    inner = series[1:-1] or series
    mean = sum(inner) / len(inner)
    starts = sorted(epochs.values())
    print(f"{path}: {len(inner)} windows of {step} ms, mean {mean:.1f} replies "
          f"({mean * 1000 / step:.0f}/s), min {min(inner)}, epochs seen {len(starts)}")
    if len(starts) < 3:
        print("  fewer than 3 epoch changes: nothing to line up")
        return
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    print(f"  epoch length: min {min(gaps)} ms, median {sorted(gaps)[len(gaps) // 2]} ms, max {max(gaps)} ms")
    # Whole epochs only (between the first and last change seen).
    by_phase = defaultdict(list)
    for t in range(first + step, last, step):
        if t < starts[0] or t + step > starts[-1]:
            continue
        begin = max(s for s in starts if s <= t)
        by_phase[(t - begin) // step].append(windows.get(t, 0))
    # Around each epoch's first reply: a stall at the change shows before it
    # (that reply is the first to get through) and a catch-up after it.
    around = defaultdict(list)
    for begin in starts[1:-1]:
        for t in range(first + step, last, step):
            d = (t - begin) // step
            if -6 <= d <= 6:
                around[d].append(windows.get(t, 0))
    print("  windows around an epoch's first reply (0: the window holding it)")
    for d in sorted(around):
        m = sum(around[d]) / len(around[d])
        print(f"  {d * step:+5d} {m:7.1f} ({m / mean:4.2f}) n={len(around[d]):3d} {'#' * int(round(20 * m / mean))}")
    length = sorted(gaps)[len(gaps) // 2] // step
    print("  ms since epoch start: mean replies per window (ratio to the run's mean)")
    for phase in range(0, length + 1):
        vals = by_phase.get(phase)
        if not vals:
            continue
        m = sum(vals) / len(vals)
        bar = "#" * int(round(20 * m / mean))
        print(f"  {phase * step:5d} {m:7.1f} ({m / mean:4.2f}) n={len(vals):3d} {bar}")


for p in sys.argv[1:]:
    report(p)
