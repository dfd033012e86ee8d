//! The linearizability checker of `tests/common/linearizability.rs`, on
//! histories whose answer is known: linearizable ones pass, each kind of
//! anomaly the fault campaigns look for is caught (and the failure names
//! the key and the operations), indeterminate operations may apply late or
//! never, and a hopeless search stops with "too complex".

mod common;

use common::linearizability::{Call, Operation, Outcome, Verdict, check_history, check_key};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BUDGET: usize = 1_000_000;

fn op(client: usize, call: Call, outcome: Outcome, invoked: u64, completed: u64) -> Operation {
    Operation {
        client,
        key: "k".to_string(),
        call,
        outcome,
        invoked,
        completed: Some(completed),
    }
}

fn write(client: usize, v: &str, invoked: u64, completed: u64) -> Operation {
    op(
        client,
        Call::Write(v.into()),
        Outcome::Ok,
        invoked,
        completed,
    )
}

fn read(client: usize, v: Option<&str>, invoked: u64, completed: u64) -> Operation {
    op(
        client,
        Call::Read,
        Outcome::Read(v.map(str::to_string)),
        invoked,
        completed,
    )
}

fn cas(
    client: usize,
    expected: &str,
    new: &str,
    ok: bool,
    invoked: u64,
    completed: u64,
) -> Operation {
    let call = Call::Cas {
        expected: expected.into(),
        new: new.into(),
    };
    let outcome = if ok { Outcome::Ok } else { Outcome::CasFailed };
    op(client, call, outcome, invoked, completed)
}

/// An operation whose outcome is unknown: it completes at +infinity.
fn unknown(mut o: Operation) -> Operation {
    o.outcome = Outcome::Unknown;
    o.completed = None;
    o
}

fn verdict(history: &[Operation]) -> Verdict {
    check_key("k", history, BUDGET)
}

/// Asserts the history is not linearizable and that the explanation names
/// the key and each of `mentions`; returns the explanation.
fn assert_caught(history: &[Operation], mentions: &[&str]) -> String {
    match verdict(history) {
        Verdict::NotLinearizable { key, explanation } => {
            assert_eq!(key, "k");
            assert!(explanation.contains("key \"k\""), "{explanation}");
            for m in mentions {
                assert!(explanation.contains(m), "no {m:?} in:\n{explanation}");
            }
            explanation
        }
        other => panic!("expected NotLinearizable, got {other:?}"),
    }
}

#[test]
fn sequential_and_concurrent_histories_that_are_linearizable_pass() {
    // Sequential: absent, write, read it, cas, read the cas's value.
    let h = vec![
        read(0, None, 0, 1),
        write(0, "a", 2, 3),
        read(1, Some("a"), 4, 5),
        cas(1, "a", "b", true, 6, 7),
        cas(0, "a", "c", false, 8, 9),
        read(0, Some("b"), 10, 11),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // A read concurrent with a write may see either value.
    for seen in [None, Some("a")] {
        let h = vec![write(0, "a", 0, 10), read(1, seen, 5, 6)];
        assert_eq!(verdict(&h), Verdict::Linearizable, "read saw {seen:?}");
    }
    // Two concurrent writes, then reads agree on the one that went last.
    let h = vec![
        write(0, "a", 0, 10),
        write(1, "b", 1, 9),
        read(2, Some("a"), 11, 12),
        read(3, Some("a"), 13, 14),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // The empty history.
    assert_eq!(verdict(&[]), Verdict::Linearizable);
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_caught() {
    let h = vec![
        write(0, "a", 0, 10),
        write(0, "b", 20, 30),
        read(1, Some("a"), 40, 50),
    ];
    let why = assert_caught(&h, &["read -> a", "write(b) -> ok"]);
    assert!(why.contains("holds b"), "{why}");
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    // `a` was acknowledged, yet a later read finds nothing.
    let h = vec![write(0, "a", 0, 10), read(1, None, 20, 30)];
    assert_caught(&h, &["read -> absent", "holds a"]);
    // ... or a later cas finds something else there.
    let h = vec![
        write(0, "a", 0, 10),
        write(1, "b", 0, 10),
        read(2, Some("b"), 20, 30),
        cas(2, "a", "c", true, 40, 50),
    ];
    assert_caught(&h, &["cas(a -> c) -> ok"]);
}

#[test]
fn a_cas_that_succeeded_twice_on_one_value_is_caught() {
    let h = vec![
        write(0, "a", 0, 10),
        cas(1, "a", "b", true, 20, 40),
        cas(2, "a", "c", true, 21, 41),
    ];
    assert_caught(&h, &["cas(a -> b)", "cas(a -> c)"]);
    // One of them failing is fine.
    let h = vec![
        write(0, "a", 0, 10),
        cas(1, "a", "b", true, 20, 40),
        cas(2, "a", "c", false, 21, 41),
        read(0, Some("b"), 50, 60),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // A cas that failed while the register held exactly its value is not.
    let h = vec![write(0, "a", 0, 10), cas(1, "a", "b", false, 20, 30)];
    assert_caught(&h, &["cas(a -> b) -> failed"]);
}

#[test]
fn indeterminate_operations_apply_any_time_after_their_invocation_or_never() {
    // Applied late: seen only long after the client gave up.
    let h = vec![
        unknown(write(0, "a", 0, 0)),
        read(1, None, 10, 20),
        read(1, Some("a"), 100, 110),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // Never applied.
    let h = vec![unknown(write(0, "a", 0, 0)), read(1, None, 100, 110)];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // But once seen it stays (nothing else wrote).
    let h = vec![
        unknown(write(0, "a", 0, 0)),
        read(1, Some("a"), 10, 20),
        read(1, None, 30, 40),
    ];
    assert_caught(&h, &["read -> absent"]);
    // Never before its invocation.
    let h = vec![read(1, Some("a"), 0, 10), unknown(write(0, "a", 20, 0))];
    assert_caught(&h, &["read -> a"]);
    // An indeterminate cas that did apply.
    let h = vec![
        write(0, "a", 0, 10),
        unknown(cas(1, "a", "b", true, 20, 0)),
        read(2, Some("b"), 30, 40),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // An indeterminate write that a later acknowledged write overwrote, seen
    // in between: only one order works, and it is found.
    let h = vec![
        unknown(write(0, "x", 0, 0)),
        read(1, Some("x"), 5, 6),
        write(2, "y", 10, 20),
        read(1, Some("y"), 30, 40),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn each_key_is_checked_alone_and_the_verdicts_name_their_keys() {
    let mut good = vec![write(0, "a", 0, 10), read(1, Some("a"), 20, 30)];
    let mut bad = vec![write(0, "a", 0, 10), read(1, None, 20, 30)];
    for o in &mut good {
        o.key = "good".into();
    }
    for o in &mut bad {
        o.key = "bad".into();
    }
    let history: Vec<Operation> = good.into_iter().chain(bad).collect();
    let verdicts = check_history(&history, BUDGET);
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts["good"], Verdict::Linearizable);
    match &verdicts["bad"] {
        Verdict::NotLinearizable { key, explanation } => {
            assert_eq!(key, "bad");
            assert!(explanation.contains("key \"bad\""), "{explanation}");
            assert!(!explanation.contains("\"good\""), "{explanation}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_search_past_its_budget_says_too_complex() {
    // Thirty overlapping indeterminate writes, all of whose values are read
    // later, in an order no interleaving gives: the search must try many
    // subsets before it could conclude.
    let mut h: Vec<Operation> = (0..30)
        .map(|i| unknown(write(i, &format!("v{i}"), i as u64, 0)))
        .collect();
    for i in 0..30 {
        h.push(read(
            100,
            Some(&format!("v{i}")),
            1000 + 10 * i as u64,
            1005 + 10 * i as u64,
        ));
    }
    h.push(read(100, None, 2000, 2001));
    match check_key("k", &h, 1000) {
        Verdict::TooComplex { key, states } => {
            assert_eq!(key, "k");
            assert!(states > 1000);
        }
        other => panic!("expected TooComplex, got {other:?}"),
    }
}

/// Random histories made from a real register, each operation's interval
/// spread around the moment it really took effect, some of them with lost
/// replies: always linearizable (no false alarms), and the checker stays
/// within its budget on histories the size of a campaign's.
#[test]
fn random_histories_of_a_real_register_pass() {
    // Twenty of a campaign key's size, and one as long as a soak's.
    let runs = (0..20u64).map(|seed| (seed, 300)).chain([(99, 5000)]);
    for (seed, length) in runs {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state: Option<String> = None;
        let mut history = Vec::new();
        for step in 0..length {
            let at = 100 * step;
            let invoked = at - rng.random_range(0..=100.min(at));
            let completed = at + rng.random_range(0..300);
            let client = rng.random_range(0..6);
            let (call, outcome) = match rng.random_range(0..3) {
                0 => (Call::Read, Outcome::Read(state.clone())),
                1 => {
                    let v = format!("w{seed}-{step}");
                    state = Some(v.clone());
                    (Call::Write(v), Outcome::Ok)
                }
                _ => {
                    // Expect the current value half of the time.
                    let expected = match (&state, rng.random_bool(0.5)) {
                        (Some(v), true) => v.clone(),
                        _ => format!("w{seed}-{}", rng.random_range(0..=step)),
                    };
                    let new = format!("c{seed}-{step}");
                    if state.as_ref() == Some(&expected) {
                        state = Some(new.clone());
                        (Call::Cas { expected, new }, Outcome::Ok)
                    } else {
                        (Call::Cas { expected, new }, Outcome::CasFailed)
                    }
                }
            };
            let lost = call != Call::Read && rng.random_bool(0.05);
            history.push(Operation {
                client,
                key: "k".into(),
                call,
                outcome: if lost { Outcome::Unknown } else { outcome },
                invoked,
                completed: if lost { None } else { Some(completed) },
            });
        }
        let v = check_key("k", &history, BUDGET);
        assert_eq!(v, Verdict::Linearizable, "seed {seed}");
    }
}
