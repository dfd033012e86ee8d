//! UNIQUE is checked on the result of a command, as SQL checks a statement:
//! one write may swap two documents' values, and a clash that remains at the
//! end of the write is refused with nothing written.

use stratosdb_engine::{Durability, Engine, EngineError, IndexRange, IndexSpec, Op, Shard, Value};

fn doc(s: &str) -> Value {
    Value::from_json_str(s).unwrap()
}

fn setup() -> (Engine, Shard) {
    let engine = Engine::open_temporary().unwrap();
    let shard = engine.shard(0).unwrap();
    shard.create_collection("c").unwrap();
    shard
        .create_index("c", IndexSpec::new("by_u", &["u"]).unique())
        .unwrap();
    for (id, u) in [("a", 1), ("b", 2)] {
        shard
            .insert("c", doc(&format!(r#"{{"_id":"{id}","u":{u}}}"#)))
            .unwrap();
    }
    (engine, shard)
}

fn replace(s: &str) -> Op {
    Op::Replace {
        collection: "c".into(),
        doc: doc(s),
    }
}

fn holders(shard: &Shard) -> Vec<String> {
    shard
        .index_scan("c", "by_u", &IndexRange::all(), false)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn one_write_may_swap_two_unique_values() {
    let (_engine, shard) = setup();
    shard
        .write(
            vec![
                replace(r#"{"_id":"a","u":2}"#),
                replace(r#"{"_id":"b","u":1}"#),
            ],
            Durability::Buffered,
        )
        .unwrap();
    // Index order is by value: u=1 is b's now, u=2 is a's.
    assert_eq!(holders(&shard), ["b", "a"]);
    assert_eq!(shard.root().unwrap(), shard.root_from_scratch().unwrap());
}

#[test]
fn a_clash_left_at_the_end_of_the_write_is_refused_and_changes_nothing() {
    let (_engine, shard) = setup();
    let root = shard.root().unwrap();
    let err = shard
        .write(vec![replace(r#"{"_id":"a","u":2}"#)], Durability::Buffered)
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::UniqueViolation { existing_id, .. } if existing_id == "b"),
        "{err}"
    );
    assert_eq!(holders(&shard), ["a", "b"]);
    assert_eq!(shard.root().unwrap(), root);
}

#[test]
fn an_entry_taken_over_and_let_go_in_one_write_returns_to_its_holder() {
    let (_engine, shard) = setup();
    shard
        .write(
            vec![
                replace(r#"{"_id":"b","u":1}"#),
                Op::Delete {
                    collection: "c".into(),
                    id: "b".into(),
                },
            ],
            Durability::Buffered,
        )
        .unwrap();
    assert_eq!(holders(&shard), ["a"]);
    // a still owns u=1: a new document cannot take it.
    let clash = Op::Insert {
        collection: "c".into(),
        doc: doc(r#"{"_id":"z","u":1}"#),
    };
    assert!(shard.write(vec![clash], Durability::Buffered).is_err());
}
