//! The worked example of docs/merkle.md, recomputed from the functions an
//! auditor uses. If this fails, the format changed: update the document too.

use stratosdb_proof::hash::{doc_hash, key_hash, leaf_hash, node_hash};
use stratosdb_proof::{InclusionProof, ProofLevel, Value, canonical_json};

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn docs_merkle_worked_example() {
    let docs = [
        (
            "a",
            r#"{"_id":"a","n":1}"#,
            "a5fe4289d090d55084a18ba37092adefaadefac96e9886331f487929ac499a76",
            "e293603800831106527dc378d80cfec27ada306f556a51901383b28126ab571b",
            "7de348c861a72f58927a776fa392ead3388484134524ec5aa1c563d0b612ab0e",
        ),
        (
            "b",
            r#"{"_id":"b","n":2.5}"#,
            "7a00b193349cfb66f81acc73cea217d02e8686c8f005c9c6c27c1f19c744a0d3",
            "aba2c40b9291a8ef45fa617a5e10d9fee4b591378e1c6ac5e7215f515b5f299a",
            "376a96e43c53fd60a5ce2c51f957e9bea3ff043b25fd7cff3587b2884ca2c131",
        ),
        (
            "c",
            r#"{"_id":"c","tags":["x"]}"#,
            "c98eb44af230468489ac4c35ee2f796619ec9bc04232ba573f1a73d7befc2750",
            "c864b337c022c12f1176f1f149fd28349b6e5b43ef72e014d8a7202ba9fd5c97",
            "31bc0997c8a6f14fe81c66550e3100c2b8d9c6e86a010b1a446393b38f84f245",
        ),
    ];
    let mut leaves = Vec::new();
    for (id, canonical, key, doc, leaf) in docs {
        let value = Value::from_json_str(canonical).unwrap();
        assert_eq!(canonical_json(&value), canonical.as_bytes());
        let k = key_hash("users", id);
        let d = doc_hash(&value);
        assert_eq!(hex(&k), key);
        assert_eq!(hex(&d), doc);
        assert_eq!(hex(&leaf_hash(&k, &d)), leaf);
        leaves.push(leaf_hash(&k, &d));
    }
    let bitmap = (1 << 7) | (1 << 10) | (1 << 12);
    assert_eq!(bitmap, 5248);
    let root = node_hash(bitmap, [&leaves[1], &leaves[0], &leaves[2]]);
    assert_eq!(
        hex(&root),
        "40ebb3b2a62bf69d960668eeaa35a5d7212375c8c2298e2179b5b38b1f7097f5"
    );

    let proof = InclusionProof {
        collection: "users".into(),
        id: "a".into(),
        levels: vec![ProofLevel {
            bitmap,
            siblings: vec![leaves[1], leaves[2]],
        }],
    };
    proof
        .verify(&root, &Value::from_json_str(docs[0].1).unwrap())
        .unwrap();
}
