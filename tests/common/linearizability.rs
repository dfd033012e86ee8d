//! A linearizability checker for histories of a key-value register, written
//! for the fault campaigns (no outside crate).
//!
//! The model is one register per key: `read → value or absent`, `write(v)`,
//! and `cas(expected, new) → ok | failed` (a conditional update: it applies
//! iff the register holds `expected`). Keys are independent objects, so each
//! key's sub-history is checked alone (linearizability is compositional,
//! the "P-compositionality" porcupine uses).
//!
//! The search is Wing & Gong's, with Lowe's just-in-time refinement and
//! memoization (as porcupine does): from the operations not yet linearized,
//! the ones that may go next are those invoked before every other pending
//! operation completed; each is tried against the model, depth first, and a
//! (linearized set, register state) pair already explored is not explored
//! again. The history is linearizable iff some order linearizes every
//! completed operation.
//!
//! An indeterminate operation (the client timed out, or was told the outcome
//! is unknown) completes at +infinity: it may take effect at any time after
//! it was invoked, or never (it is simply left out of the order). A read
//! whose reply was lost says nothing and belongs out of the history.
//!
//! The search is bounded: past `budget` explored states it gives up with
//! [`Verdict::TooComplex`] instead of running for hours.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    Read,
    Write(String),
    Cas { expected: String, new: String },
}

/// What the client learned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A read's answer: the value, or `None` for absent.
    Read(Option<String>),
    /// A write, or a cas that applied, acknowledged.
    Ok,
    /// A cas that was answered "not applied" (the register held another value).
    CasFailed,
    /// No one knows whether it applied (timeout, reset, 503 `unavailable`).
    Unknown,
}

/// One operation of a history. Times are in any one monotonic unit (the
/// campaigns use nanoseconds since they started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub call: Call,
    pub outcome: Outcome,
    pub invoked: u64,
    /// `None`: indeterminate, completes at +infinity.
    pub completed: Option<u64>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "absent".to_string());
        let what = match (&self.call, &self.outcome) {
            (Call::Read, Outcome::Read(v)) => format!("read -> {}", shown(v)),
            (Call::Read, other) => format!("read -> {other:?}"),
            (Call::Write(v), o) => format!("write({v}) -> {}", outcome_word(o)),
            (Call::Cas { expected, new }, o) => {
                format!("cas({expected} -> {new}) -> {}", outcome_word(o))
            }
        };
        let end = self
            .completed
            .map_or_else(|| "inf".to_string(), |t| t.to_string());
        write!(
            f,
            "client {} key {:?}: {what} [{}, {end}]",
            self.client, self.key, self.invoked
        )
    }
}

fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::CasFailed => "failed",
        Outcome::Unknown => "unknown",
        Outcome::Read(_) => "a read's answer",
    }
}

/// The result of checking one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order works. `explanation` names the key, the longest order the
    /// search found, the register's state after it, and the operations none
    /// of which could go next.
    NotLinearizable {
        key: String,
        explanation: String,
    },
    /// The search gave up after exploring `states` states.
    TooComplex {
        key: String,
        states: usize,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        *self == Verdict::Linearizable
    }
}

/// Checks every key of `history` alone; the verdicts by key.
pub fn check_history(history: &[Operation], budget: usize) -> BTreeMap<String, Verdict> {
    let mut by_key: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.clone()).or_default().push(op.clone());
    }
    by_key
        .into_iter()
        .map(|(key, ops)| {
            let verdict = check_key(&key, &ops, budget);
            (key, verdict)
        })
        .collect()
}

/// The register: `None` is absent; values are interned as numbers.
type State = Option<u32>;

/// An operation as the search sees it.
struct Entry {
    call: InternedCall,
    outcome: InternedOutcome,
    invoked: u64,
    completed: u64, // u64::MAX: +infinity
}

enum InternedCall {
    Read,
    Write(u32),
    Cas(u32, u32),
}

enum InternedOutcome {
    Read(State),
    Ok,
    CasFailed,
    Unknown,
}

/// The register's next state if `entry` takes effect on `state` and gives
/// its recorded outcome; `None` if it could not have given that outcome.
fn step(state: State, entry: &Entry) -> Option<State> {
    use InternedCall as C;
    use InternedOutcome as O;
    match (&entry.call, &entry.outcome) {
        (C::Read, O::Read(seen)) => (*seen == state).then_some(state),
        // A read with no answer constrains nothing.
        (C::Read, _) => Some(state),
        (C::Write(v), O::Ok | O::Unknown) => Some(Some(*v)),
        (C::Write(_), _) => None,
        (C::Cas(expected, new), O::Ok) => (state == Some(*expected)).then_some(Some(*new)),
        (C::Cas(expected, _), O::CasFailed) => (state != Some(*expected)).then_some(state),
        (C::Cas(expected, new), O::Unknown) => Some(if state == Some(*expected) {
            Some(*new)
        } else {
            state
        }),
        (C::Cas(..), O::Read(_)) => None,
    }
}

/// A set of operation indexes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
    /// The first index below `n` not in the set (`n` if all are).
    fn first_clear(&self, n: usize) -> usize {
        self.0
            .iter()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)
            .map_or(n, |(k, w)| (k * 64 + w.trailing_ones() as usize).min(n))
    }
}

/// Checks one key's operations (all of `ops` must be on `key`).
///
/// Indeterminate writes multiply the orders to try (each may go anywhere
/// after its invocation), so the search first runs without the
/// indeterminate writes and cas whose value no operation ever saw: if that
/// history is linearizable, so is the whole one (they never took effect).
/// Only if it is not is the whole history searched.
pub fn check_key(key: &str, ops: &[Operation], budget: usize) -> Verdict {
    let mut seen_values: HashSet<&String> = HashSet::new();
    for op in ops {
        if let Outcome::Read(Some(v)) = &op.outcome {
            seen_values.insert(v);
        }
        if let Call::Cas { expected, .. } = &op.call {
            seen_values.insert(expected);
        }
    }
    let unseen_unknown = |op: &Operation| {
        op.outcome == Outcome::Unknown
            && match &op.call {
                Call::Write(v) | Call::Cas { new: v, .. } => !seen_values.contains(v),
                Call::Read => true,
            }
    };
    let pruned: Vec<Operation> = ops
        .iter()
        .filter(|op| !unseen_unknown(op))
        .cloned()
        .collect();
    if pruned.len() < ops.len() {
        match search(key, &pruned, budget) {
            Verdict::Linearizable => return Verdict::Linearizable,
            Verdict::TooComplex { .. } | Verdict::NotLinearizable { .. } => {}
        }
    }
    search(key, ops, budget)
}

/// The search itself, on every operation given.
fn search(key: &str, ops: &[Operation], budget: usize) -> Verdict {
    let mut values: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut intern = |v: &String| -> u32 {
        *values.entry(v.clone()).or_insert_with(|| {
            names.push(v.clone());
            (names.len() - 1) as u32
        })
    };
    let mut sorted: Vec<&Operation> = ops.iter().collect();
    sorted.sort_by_key(|op| op.invoked);
    let entries: Vec<Entry> = sorted
        .iter()
        .map(|op| Entry {
            call: match &op.call {
                Call::Read => InternedCall::Read,
                Call::Write(v) => InternedCall::Write(intern(v)),
                Call::Cas { expected, new } => InternedCall::Cas(intern(expected), intern(new)),
            },
            outcome: match &op.outcome {
                Outcome::Read(v) => InternedOutcome::Read(v.as_ref().map(&mut intern)),
                Outcome::Ok => InternedOutcome::Ok,
                Outcome::CasFailed => InternedOutcome::CasFailed,
                Outcome::Unknown => InternedOutcome::Unknown,
            },
            invoked: op.invoked,
            completed: op.completed.unwrap_or(u64::MAX),
        })
        .collect();
    let n = entries.len();
    let must = entries.iter().filter(|e| e.completed != u64::MAX).count();

    // Depth-first, with an explicit stack of (operation linearized, state
    // before it) so a long history cannot overflow the thread's stack.
    let mut done = Bits::new(n);
    let mut done_finite = 0usize;
    let mut state: State = None;
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut seen: HashSet<(Bits, State)> = HashSet::new();
    let mut states = 0usize;
    // The deepest point reached, for the explanation.
    let mut deepest: (usize, Vec<usize>, State) = (0, Vec::new(), None);
    // Where to resume the scan of candidates after backtracking.
    let mut next_try = 0usize;
    loop {
        if done_finite == must {
            return Verdict::Linearizable;
        }
        // Candidates: pending operations invoked no later than the earliest
        // completion among pending ones (nothing pending finished before them).
        // Operations are in invocation order and none completes before it is
        // invoked, so the scan can stop at the first pending one invoked
        // after the smallest completion seen so far; it starts at the first
        // pending one (what is done is mostly a prefix).
        let first = done.first_clear(n);
        let mut earliest = u64::MAX;
        for (i, entry) in entries.iter().enumerate().skip(first) {
            if entry.invoked > earliest {
                break;
            }
            if !done.has(i) {
                earliest = earliest.min(entry.completed);
            }
        }
        let mut advanced = false;
        let mut i = next_try.max(first);
        while i < n && entries[i].invoked <= earliest {
            if !done.has(i)
                && let Some(after) = step(state, &entries[i])
            {
                done.flip(i);
                if seen.insert((done.clone(), after)) {
                    states += 1;
                    if states > budget {
                        return Verdict::TooComplex {
                            key: key.to_string(),
                            states,
                        };
                    }
                    stack.push((i, state));
                    state = after;
                    if entries[i].completed != u64::MAX {
                        done_finite += 1;
                    }
                    advanced = true;
                    break;
                }
                done.flip(i);
            }
            i += 1;
        }
        if advanced {
            next_try = 0;
            if stack.len() > deepest.0 {
                deepest = (stack.len(), stack.iter().map(|(i, _)| *i).collect(), state);
            }
            continue;
        }
        // Nothing can go next from here: undo the last choice and try the
        // operations after it.
        let Some((last, before)) = stack.pop() else {
            let explanation = explain(key, &sorted, &entries, &deepest, &names);
            return Verdict::NotLinearizable {
                key: key.to_string(),
                explanation,
            };
        };
        done.flip(last);
        if entries[last].completed != u64::MAX {
            done_finite -= 1;
        }
        state = before;
        next_try = last + 1;
    }
}

/// Names the key, the longest order found, the state after it, and the
/// operations that could not go next.
fn explain(
    key: &str,
    sorted: &[&Operation],
    entries: &[Entry],
    deepest: &(usize, Vec<usize>, State),
    names: &[String],
) -> String {
    let (_, order, state) = deepest;
    let in_order: HashSet<usize> = order.iter().copied().collect();
    let earliest = (0..entries.len())
        .filter(|i| !in_order.contains(i))
        .map(|i| entries[i].completed)
        .min()
        .unwrap_or(u64::MAX);
    let stuck: Vec<String> = (0..entries.len())
        .filter(|i| !in_order.contains(i) && entries[*i].invoked <= earliest)
        .map(|i| format!("    {}", sorted[i]))
        .collect();
    let shown_state = state.map_or("absent".to_string(), |v| names[v as usize].clone());
    // The end of the order is what matters; a campaign's can be hundreds long.
    const SHOWN: usize = 12;
    let mut linearized: Vec<String> = Vec::new();
    if order.len() > SHOWN {
        linearized.push(format!("    ... {} earlier", order.len() - SHOWN));
    }
    linearized.extend(
        order[order.len().saturating_sub(SHOWN)..]
            .iter()
            .map(|&i| format!("    {}", sorted[i])),
    );
    format!(
        "key {key:?} is not linearizable ({} operations).\n  longest order found ({} operations):\n{}\n  \
         the register then holds {shown_state}, and none of these can go next:\n{}",
        entries.len(),
        order.len(),
        if linearized.is_empty() {
            "    (none)".to_string()
        } else {
            linearized.join("\n")
        },
        stuck.join("\n")
    )
}
