//! Every single-bit flip of a small bundle (document, proof, shard root, leaf,
//! leaf proof, anchor payload) is rejected; random flips over large shards too.
//! Proofs come from the real engine (a dev-dependency only).

use proptest::prelude::*;
use stratosdb_engine::Engine;
use stratosdb_proof::{Proof, Value, canonical_json};

use super::*;
use crate::{cluster_root, leaves::sort_leaves};

/// A shard of `n` documents in collection `c` (shard number 1 of an epoch
/// with two other shards), the bundle of `_id` `target` (inclusion when it
/// exists), and the anchor payload.
fn case(n: usize, target: &str) -> (ReadProof, AnchorPayload) {
    let engine = Engine::open_temporary().unwrap();
    let shard = engine.shard(0).unwrap();
    shard.create_collection("c").unwrap();
    for i in 0..n {
        let doc = format!(r#"{{"_id":"d{i}","n":{i},"tags":["x{i}"],"f":{}.5}}"#, i);
        shard
            .insert("c", Value::from_json_str(&doc).unwrap())
            .unwrap();
    }
    let (root, proof, document) = shard.prove("c", target).unwrap();
    let mut leaves = vec![
        ShardLeaf {
            collection: "c".into(),
            shard: 1,
            raft_index: 40,
            root,
        },
        ShardLeaf {
            collection: "c".into(),
            shard: 0,
            raft_index: 33,
            root: [5; 32],
        },
        ShardLeaf {
            collection: "b".into(),
            shard: 0,
            raft_index: 9,
            root: [6; 32],
        },
    ];
    sort_leaves(&mut leaves);
    let index = leaves
        .iter()
        .position(|l| l.shard == 1 && l.collection == "c")
        .unwrap();
    let payload = AnchorPayload {
        cluster_id: [9; 32],
        epoch: 12,
        cluster_root: cluster_root(&leaves),
        leaf_count: leaves.len() as u32,
        previous: [3; 32],
    };
    let bundle = ReadProof {
        collection: "c".into(),
        shard: 1,
        id: target.into(),
        raft_index: 40,
        shard_root: root,
        proof,
        document,
        anchor: Some(AnchorProof {
            epoch: 12,
            cluster_root: payload.cluster_root,
            reference: "ledger:12:00".into(),
            leaf_proof: LeafProof::new(&leaves, index).unwrap(),
        }),
        leaf_collection: None,
    };
    (bundle, payload)
}

fn flip(h: &mut Hash, bit: usize) {
    h[bit / 8] ^= 1 << (bit % 8);
}

/// Every variant of the bundle and payload with one bit flipped, but for the
/// bits of the document's canonical text (see [`document_flips`]).
fn structural_flips(b: &ReadProof, p: &AnchorPayload) -> Vec<(String, ReadProof, AnchorPayload)> {
    let mut out = Vec::new();
    let mut push = |what: String, b2: ReadProof, p2: AnchorPayload| out.push((what, b2, p2));
    for bit in 0..256 {
        let mut x = b.clone();
        flip(&mut x.shard_root, bit);
        push(format!("shard root bit {bit}"), x, p.clone());
        let mut x = b.clone();
        if let Some(a) = &mut x.anchor {
            flip(&mut a.cluster_root, bit);
        }
        push(format!("claimed cluster root bit {bit}"), x, p.clone());
        let levels = match &b.proof {
            Proof::Inclusion(i) => i.levels.clone(),
            Proof::NonInclusion(i) => i.levels.clone(),
        };
        for (l, level) in levels.iter().enumerate() {
            for s in 0..level.siblings.len() {
                let mut x = b.clone();
                let lv = match &mut x.proof {
                    Proof::Inclusion(i) => &mut i.levels,
                    Proof::NonInclusion(i) => &mut i.levels,
                };
                flip(&mut lv[l].siblings[s], bit);
                push(
                    format!("proof level {l} sibling {s} bit {bit}"),
                    x,
                    p.clone(),
                );
            }
        }
        if let Proof::NonInclusion(ni) = &b.proof
            && let stratosdb_proof::Terminal::OtherLeaf { .. } = ni.terminal
        {
            for which in 0..2 {
                let mut x = b.clone();
                if let Proof::NonInclusion(ni) = &mut x.proof
                    && let stratosdb_proof::Terminal::OtherLeaf { key_hash, doc_hash } =
                        &mut ni.terminal
                {
                    flip(if which == 0 { key_hash } else { doc_hash }, bit);
                }
                push(format!("terminal hash {which} bit {bit}"), x, p.clone());
            }
        }
        let hashes = b.anchor.as_ref().map_or(0, |a| a.leaf_proof.hashes.len());
        for k in 0..hashes {
            let mut x = b.clone();
            if let Some(a) = &mut x.anchor {
                flip(&mut a.leaf_proof.hashes[k], bit);
            }
            push(format!("leaf proof hash {k} bit {bit}"), x, p.clone());
        }
    }
    let levels = match &b.proof {
        Proof::Inclusion(i) => i.levels.len(),
        Proof::NonInclusion(i) => i.levels.len(),
    };
    for l in 0..levels {
        for bit in 0..16 {
            let mut x = b.clone();
            match &mut x.proof {
                Proof::Inclusion(i) => i.levels[l].bitmap ^= 1 << bit,
                Proof::NonInclusion(i) => i.levels[l].bitmap ^= 1 << bit,
            }
            push(format!("proof level {l} bitmap bit {bit}"), x, p.clone());
        }
    }
    for bit in 0..64 {
        let mut x = b.clone();
        x.raft_index ^= 1 << bit;
        push(format!("raft index bit {bit}"), x, p.clone());
        let mut x = b.clone();
        if let Some(a) = &mut x.anchor {
            a.epoch ^= 1 << bit;
        }
        push(format!("claimed epoch bit {bit}"), x, p.clone());
    }
    for bit in 0..32 {
        let mut x = b.clone();
        x.shard ^= 1 << bit;
        push(format!("shard bit {bit}"), x, p.clone());
        let mut x = b.clone();
        if let Some(a) = &mut x.anchor {
            a.leaf_proof.index ^= 1 << bit;
        }
        push(format!("leaf index bit {bit}"), x, p.clone());
        let mut x = b.clone();
        if let Some(a) = &mut x.anchor {
            a.leaf_proof.count ^= 1 << bit;
        }
        push(format!("leaf count bit {bit}"), x, p.clone());
    }
    for (name, text) in [("collection", &b.collection), ("id", &b.id)] {
        for byte in 0..text.len() {
            for bit in 0..8 {
                let mut bytes = text.as_bytes().to_vec();
                bytes[byte] ^= 1 << bit;
                let Ok(s) = String::from_utf8(bytes) else {
                    continue;
                };
                let mut x = b.clone();
                if name == "collection" {
                    x.collection = s;
                } else {
                    x.id = s;
                }
                push(format!("{name} byte {byte} bit {bit}"), x, p.clone());
            }
        }
    }
    // The payload: every bit of its encoding whose flip still decodes.
    let encoded = p.encode();
    for byte in 0..encoded.len() {
        for bit in 0..8 {
            let mut e = encoded.clone();
            e[byte] ^= 1 << bit;
            let Ok(p2) = AnchorPayload::decode(&e) else {
                continue;
            };
            // The cluster id and the previous reference are not the read's
            // business: the client checks them when it reads the anchor.
            if (5..37).contains(&byte) || byte >= 81 {
                continue;
            }
            push(format!("payload byte {byte} bit {bit}"), b.clone(), p2);
        }
    }
    out
}

/// The document with one bit of its canonical text flipped, where the result
/// is still a JSON document (a flip that breaks the JSON cannot be served).
fn document_flips(doc: &Value) -> Vec<(String, Value)> {
    let text = canonical_json(doc);
    let mut out = Vec::new();
    for byte in 0..text.len() {
        for bit in 0..8 {
            let mut t = text.clone();
            t[byte] ^= 1 << bit;
            if let Ok(v) = Value::from_json_slice(&t)
                && canonical_json(&v) != text
            {
                out.push((format!("document byte {byte} bit {bit}"), v));
            }
        }
    }
    out
}

fn check_all_flips_rejected(b: &ReadProof, p: &AnchorPayload) {
    b.verify(Some(p)).unwrap();
    for (what, b2, p2) in structural_flips(b, p) {
        assert!(b2.verify(Some(&p2)).is_err(), "accepted with {what}");
    }
    if let Some(doc) = &b.document {
        let flips = document_flips(doc);
        assert!(flips.len() > 50, "{} document flips", flips.len());
        for (what, d) in flips {
            let mut x = b.clone();
            x.document = Some(d);
            assert!(x.verify(Some(p)).is_err(), "accepted with {what}");
        }
    }
}

#[test]
fn every_single_bit_flip_of_a_small_inclusion_case_is_rejected() {
    let (b, p) = case(5, "d3");
    assert!(matches!(b.proof, Proof::Inclusion(_)));
    check_all_flips_rejected(&b, &p);
}

#[test]
fn every_single_bit_flip_of_a_small_non_inclusion_case_is_rejected() {
    for missing in ["zz", "d77", "q"] {
        let (b, p) = case(5, missing);
        assert!(b.document.is_none());
        assert!(matches!(b.proof, Proof::NonInclusion(_)));
        check_all_flips_rejected(&b, &p);
        // A document smuggled beside a non-inclusion proof is refused.
        let mut x = b.clone();
        x.document = Some(Value::from_json_str(&format!(r#"{{"_id":"{missing}"}}"#)).unwrap());
        assert!(x.verify(Some(&p)).is_err());
    }
}

#[test]
fn wrong_collection_shard_epoch_or_missing_anchor_is_rejected() {
    let (b, p) = case(8, "d2");
    let mut other_epoch = p.clone();
    other_epoch.epoch += 1;
    assert!(b.verify(Some(&other_epoch)).is_err());
    let mut x = b.clone();
    x.collection = "b".into();
    assert!(x.verify(Some(&p)).is_err());
    let mut x = b.clone();
    x.shard = 0;
    assert!(x.verify(Some(&p)).is_err());
    // The same document proved for another _id.
    let mut x = b.clone();
    x.id = "d3".into();
    assert!(x.verify(Some(&p)).is_err());
    // Unanchored where an anchor is given, anchored where none is.
    let mut x = b.clone();
    x.anchor = None;
    assert!(matches!(
        x.verify(Some(&p)),
        Err(VerifyError::Unanchored(_))
    ));
    assert_eq!(
        x.verify(None).unwrap(),
        Verified::Unanchored { raft_index: 40 }
    );
    assert!(b.verify(None).is_err());
    assert_eq!(
        b.verify(Some(&p)).unwrap(),
        Verified::Anchored { epoch: 12 }
    );
}

#[test]
fn the_bundle_round_trips_through_json() {
    let (b, p) = case(4, "d1");
    let text = serde_json::to_string(&b).unwrap();
    let back: ReadProof = serde_json::from_str(&text).unwrap();
    assert_eq!(back, b);
    back.verify(Some(&p)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["proof"]["proof"], "inclusion");
    assert_eq!(json["shard_root"], hex::encode(b.shard_root));
    assert_eq!(json["anchor"]["leaf_proof"]["count"], 3);
}

#[test]
fn rows_must_be_projections_of_the_proven_documents() {
    let (b, _) = case(4, "d1");
    let (b2, _) = case(4, "d2");
    let doc = b.document.clone().unwrap();
    let doc2 = b2.document.clone().unwrap();
    let whole = |d: &Value| -> Result<Value, String> { Ok(d.clone()) };
    verify_rows(
        "c",
        &[doc.clone(), doc2.clone()],
        &[b.clone(), b2.clone()],
        &whole,
    )
    .unwrap();
    // Swapped, missing, extra, altered rows; the wrong collection.
    assert!(
        verify_rows(
            "c",
            &[doc2.clone(), doc.clone()],
            &[b.clone(), b2.clone()],
            &whole
        )
        .is_err()
    );
    assert!(
        verify_rows(
            "c",
            std::slice::from_ref(&doc),
            &[b.clone(), b2.clone()],
            &whole
        )
        .is_err()
    );
    assert!(
        verify_rows(
            "c",
            &[doc.clone(), doc2.clone(), doc.clone()],
            &[b.clone(), b2.clone()],
            &whole
        )
        .is_err()
    );
    let altered = Value::from_json_str(r#"{"_id":"d1","n":2,"tags":["x1"],"f":1.5}"#).unwrap();
    assert!(verify_rows("c", &[altered], std::slice::from_ref(&b), &whole).is_err());
    assert!(
        verify_rows(
            "b",
            std::slice::from_ref(&doc),
            std::slice::from_ref(&b),
            &whole
        )
        .is_err()
    );
    // A projection: only `n`.
    let only_n = |d: &Value| -> Result<Value, String> {
        let n = d
            .as_object()
            .and_then(|o| o.get("n"))
            .cloned()
            .ok_or("no n")?;
        Ok(Value::Object([("n".to_string(), n)].into_iter().collect()))
    };
    let row = Value::from_json_str(r#"{"n":1}"#).unwrap();
    verify_rows(
        "c",
        std::slice::from_ref(&row),
        std::slice::from_ref(&b),
        &only_n,
    )
    .unwrap();
    let wrong = Value::from_json_str(r#"{"n":2}"#).unwrap();
    assert!(verify_rows("c", &[wrong], std::slice::from_ref(&b), &only_n).is_err());
    // A non-inclusion proof cannot stand for a row.
    let (absent, _) = case(4, "zz");
    assert!(verify_rows("c", &[row], &[absent], &only_n).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Large shards: random bits of a random document's proof, roots,
    /// document text or leaf proof flipped are rejected.
    #[test]
    fn random_flips_over_large_shards_are_rejected(n in 300usize..1500, pick in 0usize..1500, seed in any::<u64>()) {
        let (b, p) = case(n, &format!("d{}", pick % n));
        prop_assert!(b.verify(Some(&p)).is_ok());
        let mut flips: Vec<(String, ReadProof)> = structural_flips(&b, &p)
            .into_iter()
            .filter(|(_, _, p2)| *p2 == p)
            .map(|(what, b2, _)| (what, b2))
            .collect();
        if let Some(doc) = &b.document {
            for (what, d) in document_flips(doc) {
                let mut x = b.clone();
                x.document = Some(d);
                flips.push((what, x));
            }
        }
        let mut state = seed | 1;
        for _ in 0..200 {
            // xorshift: a cheap stream of picks from the proptest seed.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let (what, x) = &flips[(state % flips.len() as u64) as usize];
            prop_assert!(x.verify(Some(&p)).is_err(), "accepted with {}", what);
        }
    }
}
