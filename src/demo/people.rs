//! The demo's data set: people with names, ages, nested addresses, tags and a
//! plan, generated from a fixed seed so that every run loads the same
//! documents and the demo can check any of them after a node is lost.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value as Json, json};

/// The collection the demo creates and loads.
pub const COLLECTION: &str = "people";

const SEED: u64 = 20_261_125;

const FIRST_NAMES: &[&str] = &[
    "Ann", "Bruno", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mateo", "Nadia", "Olu", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Uma", "Víctor",
    "Wen", "Yara", "Zoltan",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "O'Brien",
    "García",
    "Nakamura",
    "Kowalski",
    "Dubois",
    "Rossi",
    "Okafor",
    "Müller",
    "Haddad",
    "Silva",
    "Novak",
    "Andersen",
    "Chen",
    "Papadopoulos",
    "Ivanova",
];

/// City, country: a few cities, so that GROUP BY has groups worth showing.
const CITIES: &[(&str, &str)] = &[
    ("Paris", "FR"),
    ("Lyon", "FR"),
    ("Berlin", "DE"),
    ("Lisbon", "PT"),
    ("Tokyo", "JP"),
    ("Lagos", "NG"),
    ("Toronto", "CA"),
    ("Seoul", "KR"),
];

const TAGS: &[&str] = &["admin", "dev", "ops", "sales", "design", "support"];

const PLANS: &[&str] = &["free", "pro", "team"];

/// The id of the `i`th person: `p000042`.
pub fn id_of(i: usize) -> String {
    format!("p{i:06}")
}

/// The first `count` people, in order.
pub fn people(count: usize) -> Vec<Json> {
    let mut rng = StdRng::seed_from_u64(SEED);
    (0..count).map(|i| person(i, &mut rng)).collect()
}

fn person(i: usize, rng: &mut StdRng) -> Json {
    let first = pick(FIRST_NAMES, rng);
    let last = pick(LAST_NAMES, rng);
    let (city, country) = *CITIES.choose(rng).unwrap_or(&CITIES[0]);
    let tag_count = rng.random_range(0..=2);
    let tags: Vec<&str> = TAGS.choose_multiple(rng, tag_count).copied().collect();
    let email = format!(
        "{}.{}{i}@example.org",
        first.to_lowercase(),
        last.to_lowercase().replace('\'', "")
    );
    json!({
        "_id": id_of(i),
        "name": format!("{first} {last}"),
        "email": email,
        "age": rng.random_range(18..=80),
        "address": {
            "city": city,
            "country": country,
            "zip": format!("{:05}", rng.random_range(1000..99_999)),
        },
        "tags": tags,
        "plan": {
            "name": pick(PLANS, rng),
            "since": rng.random_range(2015..=2026),
        },
        "score": rng.random_range(0..1_000),
    })
}

fn pick(words: &[&'static str], rng: &mut StdRng) -> &'static str {
    words.choose(rng).copied().unwrap_or("")
}

/// One multi-row `INSERT INTO people VALUES ('{...}'), ...` of the documents.
pub fn insert_statement(docs: &[Json]) -> String {
    let rows: Vec<String> = docs
        .iter()
        // A SQL string literal doubles its quotes (O'Brien).
        .map(|d| format!("('{}')", d.to_string().replace('\'', "''")))
        .collect();
    format!("INSERT INTO {COLLECTION} VALUES {}", rows.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_people() {
        let a = people(50);
        assert_eq!(a, people(50));
        assert_eq!(a[7]["_id"], "p000007");
        assert_eq!(people(8)[..], a[..8]);
        let cities: std::collections::BTreeSet<&str> = a
            .iter()
            .filter_map(|p| p["address"]["city"].as_str())
            .collect();
        assert!(cities.len() > 3, "a spread of cities: {cities:?}");
    }

    #[test]
    fn quotes_in_names_are_escaped_for_sql() {
        let doc = json!({"_id": "x", "name": "Ann O'Brien"});
        assert_eq!(
            insert_statement(&[doc.clone(), doc]),
            r#"INSERT INTO people VALUES ('{"_id":"x","name":"Ann O''Brien"}'), ('{"_id":"x","name":"Ann O''Brien"}')"#
        );
    }
}
