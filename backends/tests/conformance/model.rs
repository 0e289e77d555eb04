//! Model-based property test: random operation sequences applied to a store and to a plain
//! `BTreeMap` model must give the same results (same success or same error with the same
//! data) and the same listing after every step.

use std::collections::BTreeMap;
use std::future::Future;

use calico_backends::{Compare, KeyValue, Revision, Store, StoreError, TxnOp};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use super::unique_prefix;

const KEYS: [&str; 4] = ["a", "a/x", "b", "c"];

/// Which expected revision an operation passes.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The key's real mod revision (or a plausible one when absent).
    Current,
    /// A revision that cannot match.
    Stale,
}

/// One transaction compare, by key index.
#[derive(Debug, Clone)]
enum Cmp {
    Absent(usize),
    Mod(usize, Expect),
}

/// One operation of a sequence; keys are indexes into `KEYS`, values single bytes.
#[derive(Debug, Clone)]
enum Op {
    Create(usize, u8),
    Update(usize, u8, Expect),
    Put(usize, u8),
    Delete(usize, Option<Expect>),
    /// Compares, then ops on distinct keys (`None` deletes); the first op is always a put so
    /// every successful transaction writes (etcd keeps the revision of an empty one).
    Txn(Vec<Cmp>, Vec<(usize, Option<u8>)>),
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![3 => Just(Expect::Current), 1 => Just(Expect::Stale)]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let cmp = prop_oneof![
        key.clone().prop_map(Cmp::Absent),
        (key.clone(), expect()).prop_map(|(k, e)| Cmp::Mod(k, e)),
    ];
    let txn = (
        prop::collection::vec(cmp, 0..3),
        prop::sample::subsequence((0..KEYS.len()).collect::<Vec<_>>(), 1..=KEYS.len()),
        prop::collection::vec(prop::option::of(any::<u8>()), KEYS.len()),
        any::<u8>(),
    )
        .prop_map(|(cmps, keys, values, first)| {
            let mut ops: Vec<_> = keys.into_iter().zip(values).collect();
            ops[0].1 = Some(first);
            Op::Txn(cmps, ops)
        });
    prop_oneof![
        (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        (key.clone(), any::<u8>(), expect()).prop_map(|(k, v, e)| Op::Update(k, v, e)),
        (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        (key, prop::option::of(expect())).prop_map(|(k, e)| Op::Delete(k, e)),
        txn,
    ]
}

/// What the model predicts for a write: success, or an error with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Written,
    NotFound(String),
    AlreadyExists(String),
    Conflict(String, Revision, Revision),
}

/// The model: the keys under one prefix, with the revisions the store reported.
#[derive(Debug, Default)]
struct Model {
    keys: BTreeMap<String, KeyValue>,
    /// The largest revision the store has returned so far.
    last: Revision,
}

impl Model {
    fn mod_revision(&self, key: &str) -> Revision {
        self.keys.get(key).map_or(0, |kv| kv.mod_revision)
    }

    /// The revision an op passes: the real one, or one that cannot match.
    fn expected(&self, key: &str, expect: Expect) -> Revision {
        match (self.keys.get(key), expect) {
            (Some(kv), Expect::Current) => kv.mod_revision,
            (Some(kv), Expect::Stale) => kv.mod_revision - 1,
            (None, _) => self.last.max(1),
        }
    }

    fn check_mod(&self, key: &str, expected: Revision) -> Outcome {
        match self.keys.get(key) {
            None => Outcome::NotFound(key.to_owned()),
            Some(kv) if kv.mod_revision != expected => {
                Outcome::Conflict(key.to_owned(), expected, kv.mod_revision)
            }
            Some(_) => Outcome::Written,
        }
    }

    fn apply(&mut self, ops: &[TxnOp], revision: Revision) {
        for op in ops {
            match op {
                TxnOp::Put { key, value } => {
                    let create_revision =
                        self.keys.get(key).map_or(revision, |kv| kv.create_revision);
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                    };
                    self.keys.insert(key.clone(), kv);
                }
                TxnOp::Delete { key } => {
                    self.keys.remove(key);
                }
            }
        }
    }
}

fn outcome(result: &Result<Revision, StoreError>) -> Result<Outcome, TestCaseError> {
    match result {
        Ok(_) => Ok(Outcome::Written),
        Err(StoreError::NotFound { key }) => Ok(Outcome::NotFound(key.clone())),
        Err(StoreError::AlreadyExists { key }) => Ok(Outcome::AlreadyExists(key.clone())),
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => Ok(Outcome::Conflict(key.clone(), *expected, *actual)),
        Err(e) => Err(TestCaseError::fail(format!("unexpected store error: {e}"))),
    }
}

/// Runs one sequence against `store` under `prefix`, comparing with the model at each step.
async fn run_sequence<S: Store + ?Sized>(
    store: &S,
    prefix: &str,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let key = |i: usize| format!("{prefix}{}", KEYS[i]);
    for (step, op) in ops.into_iter().enumerate() {
        let (predicted, writes, result) = match &op {
            Op::Create(k, v) => {
                let key = key(*k);
                let predicted = if model.keys.contains_key(&key) {
                    Outcome::AlreadyExists(key.clone())
                } else {
                    Outcome::Written
                };
                let result = store.create(&key, vec![*v]).await;
                (
                    predicted,
                    vec![TxnOp::Put {
                        key,
                        value: vec![*v],
                    }],
                    result,
                )
            }
            Op::Update(k, v, e) => {
                let key = key(*k);
                let expected = model.expected(&key, *e);
                let predicted = model.check_mod(&key, expected);
                let result = store.update(&key, vec![*v], expected).await;
                (
                    predicted,
                    vec![TxnOp::Put {
                        key,
                        value: vec![*v],
                    }],
                    result,
                )
            }
            Op::Put(k, v) => {
                let key = key(*k);
                let result = store.put(&key, vec![*v]).await;
                (
                    Outcome::Written,
                    vec![TxnOp::Put {
                        key,
                        value: vec![*v],
                    }],
                    result,
                )
            }
            Op::Delete(k, e) => {
                let key = key(*k);
                let expected = e.map(|e| model.expected(&key, e));
                let predicted = match expected {
                    Some(expected) => model.check_mod(&key, expected),
                    None if model.keys.contains_key(&key) => Outcome::Written,
                    None => Outcome::NotFound(key.clone()),
                };
                let result = store.delete(&key, expected).await;
                (predicted, vec![TxnOp::Delete { key }], result)
            }
            Op::Txn(cmps, ops) => {
                let compares: Vec<Compare> = cmps
                    .iter()
                    .map(|c| match c {
                        Cmp::Absent(k) => Compare::Absent { key: key(*k) },
                        Cmp::Mod(k, e) => Compare::ModRevision {
                            key: key(*k),
                            revision: model.expected(&key(*k), *e),
                        },
                    })
                    .collect();
                let predicted = compares
                    .iter()
                    .map(|c| {
                        let (k, expected) = match c {
                            Compare::Absent { key } => (key, 0),
                            Compare::ModRevision { key, revision } => (key, *revision),
                        };
                        (k.clone(), expected, model.mod_revision(k))
                    })
                    .find(|(_, expected, actual)| expected != actual)
                    .map_or(Outcome::Written, |(k, e, a)| Outcome::Conflict(k, e, a));
                let writes: Vec<TxnOp> = ops
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => TxnOp::Put {
                            key: key(*k),
                            value: vec![*v],
                        },
                        None => TxnOp::Delete { key: key(*k) },
                    })
                    .collect();
                let result = store.txn(compares, writes.clone()).await;
                (predicted, writes, result)
            }
        };
        prop_assert_eq!(
            outcome(&result)?,
            predicted.clone(),
            "step {}: {:?}",
            step,
            op
        );
        if let Ok(revision) = result {
            prop_assert!(
                revision > model.last,
                "step {}: revision {} after {}",
                step,
                revision,
                model.last
            );
            model.last = revision;
            model.apply(&writes, revision);
        }
        let (listed, at) = store
            .list(prefix)
            .await
            .map_err(|e| TestCaseError::fail(format!("list: {e}")))?;
        prop_assert!(
            at >= model.last,
            "step {}: list revision {} older than {}",
            step,
            at,
            model.last
        );
        let want: Vec<KeyValue> = model.keys.values().cloned().collect();
        prop_assert_eq!(listed, want, "step {}: listing after {:?}", step, op);
    }
    Ok(())
}

/// Runs `cases` random sequences against one store built by `new_store`, each under a fresh
/// prefix. Call it from a plain `#[test]` (it builds and owns its tokio runtime, so a
/// runtime-bound client such as etcd's lives in the runtime that drives it).
///
/// # Panics
/// On the first (shrunk) sequence where the store and the model disagree.
pub fn model_check<S, F, Fut>(new_store: F, cases: u32)
where
    S: Store,
    F: FnOnce() -> Fut,
    Fut: Future<Output = S>,
{
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let store = rt.block_on(new_store());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..24), |ops| {
        rt.block_on(run_sequence(&store, &unique_prefix("model"), ops))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!("store disagrees with the model: {reason}\nminimal sequence: {ops:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model check aborted: {reason}"),
    }
}
