//! Index scans beyond the property test: compound prefixes with a range on the
//! next field, forward and reverse; nested paths; arrays of objects; and
//! time-ordered generated ids.

use std::ops::Bound;

use stratosdb_engine::{Durability, Engine, IndexRange, IndexSpec, Op, Shard, Value};

fn shard() -> Shard {
    let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
    shard.create_collection("c").unwrap();
    shard
}

fn ids(shard: &Shard, index: &str, range: IndexRange, reverse: bool) -> Vec<String> {
    shard
        .index_scan("c", index, &range, reverse)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn v(s: &str) -> Value {
    Value::from_json_str(s).unwrap()
}

#[test]
fn compound_prefix_and_range_forward_and_reverse() {
    let shard = shard();
    shard
        .create_index("c", IndexSpec::new("city_age", &["address.city", "age"]))
        .unwrap();
    let people = [
        ("a", "Paris", 30),
        ("b", "Paris", 25),
        ("c", "Lyon", 40),
        ("d", "Paris", 41),
        ("e", "Paris", 30),
        ("f", "Nice", 30),
    ];
    for (id, city, age) in people {
        shard
            .insert(
                "c",
                v(&format!(
                    r#"{{"_id":"{id}","address":{{"city":"{city}"}},"age":{age}}}"#
                )),
            )
            .unwrap();
    }
    // Equality on the prefix.
    let paris = IndexRange::prefix(vec![Value::from("Paris")]);
    assert_eq!(
        ids(&shard, "city_age", paris.clone(), false),
        ["b", "a", "e", "d"]
    );
    assert_eq!(ids(&shard, "city_age", paris, true), ["d", "e", "a", "b"]);
    // Prefix equality plus a range on the next field: Paris, 26 <= age < 41.
    let range = IndexRange {
        lower: Bound::Included(vec![Value::from("Paris"), Value::Int(26)]),
        upper: Bound::Excluded(vec![Value::from("Paris"), Value::Int(41)]),
    };
    assert_eq!(ids(&shard, "city_age", range.clone(), false), ["a", "e"]);
    assert_eq!(ids(&shard, "city_age", range, true), ["e", "a"]);
    // Paris, age > 30 (floats and ints interleave).
    let range = IndexRange {
        lower: Bound::Excluded(vec![Value::from("Paris"), Value::Float(30.0)]),
        upper: Bound::Included(vec![Value::from("Paris")]),
    };
    assert_eq!(ids(&shard, "city_age", range, false), ["d"]);
    // A range over the first field only: cities after "Lyon", up to "Paris".
    let range = IndexRange {
        lower: Bound::Excluded(vec![Value::from("Lyon")]),
        upper: Bound::Included(vec![Value::from("Paris")]),
    };
    assert_eq!(
        ids(&shard, "city_age", range, false),
        ["f", "b", "a", "e", "d"]
    );
    // An inverted range is empty, not a panic.
    let range = IndexRange {
        lower: Bound::Included(vec![Value::from("Z")]),
        upper: Bound::Included(vec![Value::from("A")]),
    };
    assert!(ids(&shard, "city_age", range, false).is_empty());
}

#[test]
fn arrays_of_objects_fan_out_and_mark_the_index_multikey() {
    let shard = shard();
    shard
        .create_index("c", IndexSpec::new("sku", &["items.sku"]))
        .unwrap();
    shard
        .insert(
            "c",
            v(r#"{"_id":"o1","items":[{"sku":"x"},{"sku":"y"},{"sku":"x"}]}"#),
        )
        .unwrap();
    shard
        .insert("c", v(r#"{"_id":"o2","items":[{"sku":"y"}]}"#))
        .unwrap();
    assert_eq!(
        ids(
            &shard,
            "sku",
            IndexRange::prefix(vec![Value::from("y")]),
            false
        ),
        ["o1", "o2"]
    );
    assert_eq!(
        ids(
            &shard,
            "sku",
            IndexRange::prefix(vec![Value::from("x")]),
            false
        ),
        ["o1"]
    );
    assert!(
        shard
            .collection("c")
            .unwrap()
            .index("sku")
            .unwrap()
            .multikey
    );
}

#[test]
fn unique_index_allows_many_missing_and_null() {
    let shard = shard();
    shard
        .create_index("c", IndexSpec::new("email", &["email"]).unique())
        .unwrap();
    for (i, doc) in [r#"{}"#, r#"{}"#, r#"{"email":null}"#, r#"{"email":null}"#]
        .iter()
        .enumerate()
    {
        let mut d = v(doc);
        if let Value::Object(m) = &mut d {
            m.insert("_id".into(), Value::String(format!("n{i}")));
        }
        shard.insert("c", d).unwrap();
    }
    shard
        .insert("c", v(r#"{"_id":"a","email":"x@y"}"#))
        .unwrap();
    assert!(
        shard
            .insert("c", v(r#"{"_id":"b","email":"x@y"}"#))
            .is_err()
    );
    // A document may keep its own unique value when replaced.
    shard
        .write(
            vec![Op::Replace {
                collection: "c".into(),
                doc: v(r#"{"_id":"a","email":"x@y","n":1}"#),
            }],
            Durability::Sync,
        )
        .unwrap();
}

#[test]
fn generated_ids_are_time_ordered() {
    let shard = shard();
    let ids: Vec<String> = (0..500)
        .map(|_| shard.insert("c", v("{}")).unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    let scanned: Vec<String> = shard
        .scan("c", Bound::Unbounded, Bound::Unbounded, false)
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(scanned, ids);
    // Bounded scans by _id, both directions.
    let mid = ids[250].as_str();
    let after: Vec<String> = shard
        .scan(
            "c",
            Bound::Excluded(mid),
            Bound::Included(ids[252].as_str()),
            true,
        )
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(after, [ids[252].clone(), ids[251].clone()]);
}
