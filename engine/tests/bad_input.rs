//! Every limit and every kind of bad input gets a typed error naming the
//! problem, and changes nothing: same root, same count, same documents.

use stratosdb_engine::{
    ApplyOutcome, Command, Durability, Engine, EngineConfig, EngineError, IndexSpec, Limits, Op,
    Shard, Value,
};

fn engine_with(limits: Limits) -> Shard {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        limits,
        max_command_bytes: 64 << 10,
        ..EngineConfig::default()
    };
    let engine = Engine::open(dir.keep(), config).unwrap();
    let shard = engine.shard(0).unwrap();
    shard.create_collection("c").unwrap();
    shard
        .create_index("c", IndexSpec::new("by_email", &["email"]).unique())
        .unwrap();
    shard
        .create_index("c", IndexSpec::new("by_a_b", &["a", "b"]))
        .unwrap();
    shard
        .insert(
            "c",
            Value::from_json_str(r#"{"_id":"keep","email":"k@x","n":1}"#).unwrap(),
        )
        .unwrap();
    shard
}

fn state(shard: &Shard) -> (stratosdb_engine::Hash, u64, Vec<String>) {
    let docs = shard
        .scan(
            "c",
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
        )
        .unwrap()
        .map(|r| r.unwrap().1.to_json_string())
        .collect();
    (
        shard.root().unwrap(),
        shard.collection("c").unwrap().count,
        docs,
    )
}

fn insert(shard: &Shard, doc: Value) -> Result<(), EngineError> {
    shard
        .write(
            vec![Op::Insert {
                collection: "c".into(),
                doc,
            }],
            Durability::Sync,
        )
        .map(|_| ())
}

#[test]
fn every_limit_refuses_and_changes_nothing() {
    let limits = Limits {
        max_document_bytes: 1000,
        max_depth: 8,
        max_id_bytes: 16,
    };
    let shard = engine_with(limits);
    let before = state(&shard);
    let v = |s: &str| Value::from_json_str(s).unwrap();

    let big = v(&format!(r#"{{"_id":"big","s":"{}"}}"#, "x".repeat(2000)));
    let e = insert(&shard, big).unwrap_err();
    assert!(
        matches!(e, EngineError::DocumentTooLarge { limit: 1000, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("over the limit of 1000 bytes"));

    let deep = v(&format!(
        r#"{{"_id":"deep","a":{}1{}}}"#,
        "[".repeat(9),
        "]".repeat(9)
    ));
    let e = insert(&shard, deep).unwrap_err();
    assert!(
        matches!(
            e,
            EngineError::DocumentTooDeep {
                depth: 10,
                limit: 8
            }
        ),
        "{e}"
    );

    let e = insert(&shard, v("[1,2]")).unwrap_err();
    assert!(
        e.to_string().contains("must be a JSON object, not array"),
        "{e}"
    );

    let e = insert(&shard, v(r#"{"_id":5}"#)).unwrap_err();
    assert!(matches!(e, EngineError::InvalidId { .. }), "{e}");
    assert!(e.to_string().contains("integer"));

    let e = insert(&shard, v(r#"{"_id":""}"#)).unwrap_err();
    assert!(matches!(e, EngineError::InvalidId { .. }), "{e}");
    let e = insert(&shard, v(r#"{"_id":"an-id-longer-than-16"}"#)).unwrap_err();
    assert!(matches!(e, EngineError::InvalidId { max: 16, .. }), "{e}");

    let e = insert(&shard, v(r#"{"_id":"keep"}"#)).unwrap_err();
    assert!(matches!(e, EngineError::DuplicateId { .. }), "{e}");

    let e = insert(&shard, v(r#"{"_id":"dupmail","email":"k@x"}"#)).unwrap_err();
    assert!(matches!(e, EngineError::UniqueViolation { .. }), "{e}");
    assert!(e.to_string().contains("\"keep\""), "{e}");

    let e = insert(&shard, v(r#"{"_id":"par","a":[1,2],"b":[3,4]}"#)).unwrap_err();
    assert!(matches!(e, EngineError::ParallelArrays(_)), "{e}");

    let e = shard
        .write(
            vec![Op::Insert {
                collection: "nope".into(),
                doc: v("{}"),
            }],
            Durability::Sync,
        )
        .unwrap_err();
    assert!(
        matches!(e, EngineError::CollectionNotFound(ref c) if c == "nope"),
        "{e}"
    );

    let e = shard.create_collection("bad name!").unwrap_err();
    assert!(
        matches!(e, EngineError::InvalidCollectionName { .. }),
        "{e}"
    );
    let e = shard
        .create_index("c", IndexSpec::new("by_n", &["a..b"]))
        .unwrap_err();
    assert!(matches!(e, EngineError::InvalidPath { .. }), "{e}");
    let e = shard
        .create_index("c", IndexSpec::new("by_n", &["n"]).unique())
        .and_then(|_| shard.create_index("c", IndexSpec::new("by_n", &["n"])))
        .unwrap_err();
    assert!(matches!(e, EngineError::IndexExists { .. }), "{e}");
    shard.drop_index("c", "by_n").unwrap();

    assert_eq!(state(&shard), before);
}

#[test]
fn invalid_json_values_are_refused_by_name() {
    for (text, expect) in [
        (r#"{"a":"#, "invalid JSON"),
        (
            "{\"a\":9223372036854775808}",
            "outside the 64-bit signed range",
        ),
        ("{\"a\":1e999}", "invalid JSON"),
        (
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
            "invalid JSON",
        ),
    ] {
        let e = Value::from_json_str(text).unwrap_err();
        assert!(e.to_string().contains(expect), "{text:.40}: {e}");
    }
}

#[test]
fn creating_a_unique_index_over_duplicates_fails_and_changes_nothing() {
    let shard = engine_with(Limits::default());
    insert(
        &shard,
        Value::from_json_str(r#"{"_id":"a","n":1}"#).unwrap(),
    )
    .unwrap();
    let before = state(&shard);
    let e = shard
        .create_index("c", IndexSpec::new("by_n", &["n"]).unique())
        .unwrap_err();
    assert!(matches!(e, EngineError::UniqueViolation { .. }), "{e}");
    assert!(shard.collection("c").unwrap().index("by_n").is_err());
    assert_eq!(state(&shard), before);
}

#[test]
fn bad_commands_are_rejected_deterministically() {
    let shard = engine_with(Limits::default());
    let before = state(&shard);
    let good = Command {
        ops: vec![Op::Insert {
            collection: "c".into(),
            doc: Value::from_json_str(r#"{"_id":"r1"}"#).unwrap(),
        }],
    }
    .encode();

    // Garbage, a wrong version, truncation, trailing bytes, and an oversized command.
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty command"),
        (vec![9, 1, 2], "unknown command version 9"),
        (good[..good.len() - 3].to_vec(), "malformed"),
        (trailing, "trailing"),
        (vec![1; 70 << 10], "over the limit"),
    ];
    for (n, (bytes, expect)) in cases.into_iter().enumerate() {
        let index = n as u64 + 1;
        match shard.apply(index, &bytes).unwrap() {
            ApplyOutcome::Rejected(e) => assert!(e.to_string().contains(expect), "{e}"),
            other => panic!("case {n}: {other:?}"),
        }
        assert_eq!(shard.applied_index().unwrap(), index);
    }
    // A command without _id cannot be applied (ids are chosen before proposing).
    let no_id = Command {
        ops: vec![Op::Insert {
            collection: "c".into(),
            doc: Value::from_json_str(r#"{"x":1}"#).unwrap(),
        }],
    };
    assert!(matches!(
        shard.apply(10, &no_id.encode()).unwrap(),
        ApplyOutcome::Rejected(_)
    ));
    assert_eq!(state(&shard), before);
}
