#!/usr/bin/env python3
"""Prints the ratios BENCHMARKS.md reports, from criterion's last run.

    cargo bench --bench engine && python3 benches/ratios.py

Each line is `candidate / baseline` as a throughput ratio (baseline time divided
by candidate time), both measured in the same run; > 1 means the candidate is faster.
"""
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or pathlib.Path(__file__).resolve().parent.parent / "target") / "criterion"

# (label, candidate, baseline): criterion ids as "group/function".
PAIRS = [
    ("insert, 2 indexes + Merkle vs raw sled insert", "insert_1k/engine_2_indexes_merkle", "insert_1k/raw_sled"),
    ("  sled alone: doc + 2 index keys, plain inserts", "insert_1k/raw_sled_doc_and_2_index_keys", "insert_1k/raw_sled"),
    ("  sled alone: doc + 2 index keys, one atomic batch", "insert_1k/raw_sled_atomic_batch_doc_and_2_index_keys", "insert_1k/raw_sled"),
    ("insert in batches of 100 vs raw sled inserts", "insert_1k_batch_100/engine_2_indexes_merkle", "insert_1k_batch_100/raw_sled"),
    ("apply 64 insert commands as one batch vs 64 raw sled inserts", "apply_batch_64/engine_apply_batch", "apply_batch_64/raw_sled_64_inserts"),
    ("  sled alone: 64 docs + 128 index keys, one atomic batch", "apply_batch_64/raw_sled_one_batch_docs_and_2_index_keys", "apply_batch_64/raw_sled_64_inserts"),
    ("open a 100k-document shard (Merkle rebuild) vs sled open + full scan", "open_100k/engine_open_and_rebuild", "open_100k/raw_sled_open_and_scan"),
    ("get by _id (stored bytes) vs raw sled get", "get_1k/engine_get_raw", "get_1k/raw_sled"),
    ("get by _id, decoded vs raw sled get", "get_1k/engine_get_decoded", "get_1k/raw_sled"),
    ("index range scan of 100 + fetch vs sled scan of 100", "range_scan_100/engine_index_scan_and_fetch", "range_scan_100/raw_sled"),
    ("proof generation vs raw sled get", "proof/generate", "get_1k/raw_sled"),
    ("Merkle update (patch) at 10k vs sled overwrite at 10k", "merkle_update/10000", "sled_overwrite/10000"),
    ("Merkle update (patch) at 100k vs sled overwrite at 100k", "merkle_update/100000", "sled_overwrite/100000"),
    ("Merkle update (patch) at 1M vs sled overwrite at 1M", "merkle_update/1000000", "sled_overwrite/1000000"),
    ("Merkle update: 100k vs 10k", "merkle_update/100000", "merkle_update/10000"),
    ("Merkle update: 1M vs 10k", "merkle_update/1000000", "merkle_update/10000"),
    ("raft log: raft-engine vs the sled log, 8 groups x 8 entries, one sync", "raft_log_write_64_entries_synced/raft_engine", "raft_log_write_64_entries_synced/sled_log"),
    ("durable inserts: 4 writers vs 1 (group commit)", "sync_insert_small/4_writers", "sync_insert_small/1_writers"),
    ("rpc: 64 calls of 1 KiB on one shared call stream vs a stream per call", "rpc_64_calls_1k/shared_stream", "rpc_64_calls_1k/stream_per_call"),
    ("anchored proof verification, 10k shard vs hashing the document", "proof_verify/10000", "proof_verify/sha256_of_document"),
    ("anchored proof verification, 1M shard vs hashing the document", "proof_verify/1000000", "proof_verify/sha256_of_document"),
    ("read proof (decoded), 10k shard vs hashing the document (CPU time)", "read_proof_verify/verify/10000", "read_proof_verify/sha256_of_document"),
    ("read proof (decoded), 1M shard vs hashing the document (CPU time)", "read_proof_verify/verify/1000000", "read_proof_verify/sha256_of_document"),
    ("read proof from its JSON, 10k shard vs hashing the document (CPU time)", "read_proof_verify/decode_and_verify/10000", "read_proof_verify/sha256_of_document"),
    ("read proof from its JSON, 1M shard vs hashing the document (CPU time)", "read_proof_verify/decode_and_verify/1000000", "read_proof_verify/sha256_of_document"),
    ("proof against the latest mark vs against the current root", "anchored_prove/anchored", "anchored_prove/current_root"),
    ("raft apply of single writes, a mark every 1000 vs no marks", "apply_with_marks/mark_every_1000", "apply_with_marks/no_marks"),
    ("raft apply of single writes, a mark every 100 vs no marks", "apply_with_marks/mark_every_100", "apply_with_marks/no_marks"),
    ("signed + metered point reads vs unsigned --dev ones (traffic)", "requests/get_signed", "requests/get_unsigned_dev"),
    ("  the node's CPU per request, signed vs unsigned --dev (traffic)", "requests_node_cpu/get_signed", "requests_node_cpu/get_unsigned_dev"),
    ("signed + metered durable PUTs vs unsigned --dev ones (traffic)", "requests/put_signed", "requests/put_unsigned_dev"),
    ("  the node's CPU per PUT, signed vs unsigned --dev (traffic)", "requests_node_cpu/put_signed", "requests_node_cpu/put_unsigned_dev"),
    ("3-node cluster: signed + metered point reads vs unsigned --dev ones (traffic, TRAFFIC_NODES=3)", "requests_3nodes/get_signed", "requests_3nodes/get_unsigned_dev"),
    ("  the 3 nodes' CPU per request, signed vs unsigned --dev", "requests_3nodes_cpu/get_signed", "requests_3nodes_cpu/get_unsigned_dev"),
    ("3-node cluster: signed + metered durable PUTs vs unsigned --dev ones (traffic, TRAFFIC_NODES=3)", "requests_3nodes/put_signed", "requests_3nodes/put_unsigned_dev"),
    ("  the 3 nodes' CPU per PUT, signed vs unsigned --dev", "requests_3nodes_cpu/put_signed", "requests_3nodes_cpu/put_unsigned_dev"),
    ("verify with a fixed-base key table (k256) vs libsecp256k1, cached key (CPU)", "verify_cached_key/fixed_base", "verify_cached_key/libsecp256k1"),
    ("  k256's own verify_prehash vs libsecp256k1, cached key (CPU)", "verify_cached_key/k256", "verify_cached_key/libsecp256k1"),
    ("batch check, batches of 4, vs libsecp256k1 recovery, per signature (CPU)", "batch_verify/batch_4", "batch_verify/libsecp256k1_recover"),
    ("batch check, batches of 16, vs libsecp256k1 recovery, per signature (CPU)", "batch_verify/batch_16", "batch_verify/libsecp256k1_recover"),
    ("batch check, batches of 64, vs libsecp256k1 recovery, per signature (CPU)", "batch_verify/batch_64", "batch_verify/libsecp256k1_recover"),
    ("a node's settlement of 100k receipts vs reading them back", "settlement_100k/node_volume", "settlement_100k/read_receipts"),
    ("a node's settlement of 100k receipts from its running volume vs building it from them read back", "settlement_100k/closed_volume", "settlement_100k/node_volume"),
    ("the auditor's check of 100k receipts vs reading them back", "settlement_100k/audit_volume", "settlement_100k/read_receipts"),
]


def mean_ns(bench_id):
    path = ROOT.joinpath(*bench_id.split("/"), "new", "estimates.json")
    if not path.exists():
        return None
    return json.loads(path.read_text())["mean"]["point_estimate"]


def main():
    for label, candidate, baseline in PAIRS:
        c, b = mean_ns(candidate), mean_ns(baseline)
        if c is None or b is None:
            continue
        print(f"{label:60s} {b / c:8.3f}x   ({c / 1000:.2f} us vs {b / 1000:.2f} us)")
    table = mean_ns("verify_cached_key/fixed_base")
    for part in ("66_mixed_additions", "to_affine", "scalar_invert_vartime"):
        t = mean_ns(f"verify_parts/{part}")
        if table and t:
            print(f"{'  share of a fixed-base verification: ' + part:60s} {t / table:8.3f}")
    verify = mean_ns("proof/verify")
    if verify:
        print(f"{'proof verifications per second on one core':60s} {1e9 / verify:8.0f}")
    for size in ("10000", "1000000"):
        verify = mean_ns(f"proof_verify/{size}")
        if verify:
            print(f"{'anchored proof verifications per second, ' + size + ' shard':60s} {1e9 / verify:8.0f}")


if __name__ == "__main__":
    sys.exit(main())
