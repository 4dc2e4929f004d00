//! The history of a run (what was acknowledged, which transactions
//! committed or aborted, who owned which group partition when) and the
//! checker that compares it with what the log holds at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

/// A partition: (topic, partition).
pub type Tp = (String, u32);

/// How a transaction ended, as its producer saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted,
    /// The commit or abort call failed: either may have happened.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Txn {
    pub id: String,
    /// Values with their acknowledged position, if the send was acked.
    pub values: Vec<(String, Option<(Tp, i64)>)>,
    pub outcome: Outcome,
}

/// A time a consumer group member held a partition (times since the run
/// started; `to` is `None` while it still holds it).
#[derive(Clone, Debug)]
pub struct Ownership {
    pub member: String,
    pub tp: Tp,
    pub from: Duration,
    pub to: Option<Duration>,
}

/// Everything the workload saw and did.
#[derive(Default)]
pub struct History {
    /// Acknowledged non-transactional records: value → where.
    pub acked: Vec<(String, Tp, i64)>,
    /// Sent, but the send failed: stored at most once.
    pub unacked: Vec<String>,
    pub txns: Vec<Txn>,
    pub ownership: Vec<Ownership>,
    /// Violations seen while running (a sampled coordinator state that
    /// gives a partition to two members; a consumer that did not reach the
    /// end in time).
    pub observed: Vec<Violation>,
}

/// One batch as the log holds it at the end (read_uncommitted).
#[derive(Clone, Debug)]
pub struct LogBatch {
    pub first: i64,
    pub last: i64,
    pub control: bool,
    /// (offset, value) of its records (none for control batches).
    pub records: Vec<(i64, String)>,
}

/// A partition's log at the end.
#[derive(Clone, Debug, Default)]
pub struct PartitionLog {
    pub log_start: i64,
    pub high_watermark: i64,
    pub batches: Vec<LogBatch>,
    /// Where reading stopped on an error, and the error.
    pub unreadable: Option<(i64, String)>,
}

/// What the final reads saw.
#[derive(Default)]
pub struct Observed {
    pub logs: BTreeMap<Tp, PartitionLog>,
    /// Records a read_committed consumer returned: (partition, offset, value).
    pub committed: Vec<(Tp, i64, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged record (or one of a committed transaction) is not
    /// in the log (or not visible to read_committed).
    Missing {
        value: String,
        view: &'static str,
    },
    Duplicate {
        value: String,
        view: &'static str,
        at: Vec<(Tp, i64)>,
    },
    WrongOffset {
        value: String,
        acked: (Tp, i64),
        stored: (Tp, i64),
    },
    /// Offsets the log's batches do not cover, or cover twice.
    Gap {
        tp: Tp,
        from: i64,
        to: i64,
    },
    Overlap {
        tp: Tp,
        offset: i64,
    },
    /// A value nobody sent.
    Unknown {
        value: String,
        at: (Tp, i64),
    },
    AbortedVisible {
        txn: String,
        value: String,
    },
    /// Some, not all, records of a transaction are visible.
    PartialTransaction {
        txn: String,
        visible: usize,
        of: usize,
    },
    /// The same partition held by two members; `at` when the second got
    /// it (times since the run started).
    SharedOwnership {
        tp: Tp,
        members: Vec<String>,
        at: Duration,
    },
    /// The log cannot be read at this offset (e.g. an object it
    /// references is gone).
    Unreadable {
        tp: Tp,
        offset: i64,
        error: String,
    },
    Stuck {
        what: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl History {
    /// Compares the history with the final reads; every violation found.
    pub fn check(&self, seen: &Observed) -> Vec<Violation> {
        let mut violations = self.observed.clone();
        let mut stored: HashMap<&str, Vec<(Tp, i64)>> = HashMap::new();
        for (tp, log) in &seen.logs {
            if let Some((offset, error)) = &log.unreadable {
                violations.push(Violation::Unreadable {
                    tp: tp.clone(),
                    offset: *offset,
                    error: error.clone(),
                });
            } else {
                check_dense(tp, log, &mut violations);
            }
            for b in log.batches.iter().filter(|b| !b.control) {
                for (offset, value) in &b.records {
                    stored
                        .entry(value.as_str())
                        .or_default()
                        .push((tp.clone(), *offset));
                }
            }
        }
        let mut visible: HashMap<&str, Vec<(Tp, i64)>> = HashMap::new();
        for (tp, offset, value) in &seen.committed {
            visible
                .entry(value.as_str())
                .or_default()
                .push((tp.clone(), *offset));
        }
        let mut sent: HashMap<&str, ()> = HashMap::new();
        for (value, tp, offset) in &self.acked {
            sent.insert(value, ());
            let acked = (tp.clone(), *offset);
            exactly_once_at(value, &acked, &stored, "log", &mut violations);
            exactly_once_at(value, &acked, &visible, "read_committed", &mut violations);
        }
        for value in &self.unacked {
            sent.insert(value, ());
            at_most_once(value, &stored, "log", &mut violations);
            at_most_once(value, &visible, "read_committed", &mut violations);
        }
        for txn in &self.txns {
            let mut shown = 0;
            for (value, acked) in &txn.values {
                sent.insert(value, ());
                at_most_once(value, &stored, "log", &mut violations);
                at_most_once(value, &visible, "read_committed", &mut violations);
                let is_visible = visible.contains_key(value.as_str());
                shown += usize::from(is_visible);
                match txn.outcome {
                    Outcome::Committed => match acked {
                        Some(acked) => exactly_once_at(
                            value,
                            acked,
                            &visible,
                            "read_committed",
                            &mut violations,
                        ),
                        None if !is_visible => violations.push(Violation::Missing {
                            value: value.clone(),
                            view: "read_committed",
                        }),
                        None => {}
                    },
                    Outcome::Aborted if is_visible => violations.push(Violation::AbortedVisible {
                        txn: txn.id.clone(),
                        value: value.clone(),
                    }),
                    Outcome::Aborted | Outcome::Unknown => {}
                }
            }
            if txn.outcome == Outcome::Unknown && shown != 0 && shown != txn.values.len() {
                violations.push(Violation::PartialTransaction {
                    txn: txn.id.clone(),
                    visible: shown,
                    of: txn.values.len(),
                });
            }
        }
        for (value, at) in &stored {
            if !sent.contains_key(value) {
                violations.push(Violation::Unknown {
                    value: value.to_string(),
                    at: at[0].clone(),
                });
            }
        }
        violations.extend(self.shared_ownership());
        violations
    }

    /// Times two members held the same partition.
    fn shared_ownership(&self) -> Vec<Violation> {
        let mut by_tp: BTreeMap<&Tp, Vec<&Ownership>> = BTreeMap::new();
        for o in &self.ownership {
            by_tp.entry(&o.tp).or_default().push(o);
        }
        let mut violations = Vec::new();
        for (tp, mut spans) in by_tp {
            spans.sort_by_key(|o| o.from);
            for (i, a) in spans.iter().enumerate() {
                for b in &spans[i + 1..] {
                    let a_end = a.to.unwrap_or(Duration::MAX);
                    if b.from < a_end && b.member != a.member {
                        violations.push(Violation::SharedOwnership {
                            tp: tp.clone(),
                            members: vec![
                                format!("{} from {:?} to {:?}", a.member, a.from, a.to),
                                format!("{} from {:?} to {:?}", b.member, b.from, b.to),
                            ],
                            at: b.from,
                        });
                    }
                }
            }
        }
        violations
    }
}

/// The batches must cover every offset from the log start to the high
/// watermark once (records, control markers and aborted batches alike).
fn check_dense(tp: &Tp, log: &PartitionLog, violations: &mut Vec<Violation>) {
    let mut batches: Vec<&LogBatch> = log.batches.iter().collect();
    batches.sort_by_key(|b| b.first);
    let mut next = batches
        .first()
        .map_or(log.log_start, |b| b.first.min(log.log_start));
    for b in batches {
        if b.first > next {
            violations.push(Violation::Gap {
                tp: tp.clone(),
                from: next,
                to: b.first,
            });
        } else if b.first < next {
            violations.push(Violation::Overlap {
                tp: tp.clone(),
                offset: b.first,
            });
        }
        next = next.max(b.last + 1);
    }
    if next != log.high_watermark {
        violations.push(Violation::Gap {
            tp: tp.clone(),
            from: next.min(log.high_watermark),
            to: next.max(log.high_watermark),
        });
    }
}

fn exactly_once_at(
    value: &str,
    acked: &(Tp, i64),
    index: &HashMap<&str, Vec<(Tp, i64)>>,
    view: &'static str,
    violations: &mut Vec<Violation>,
) {
    match index.get(value).map(Vec::as_slice) {
        None | Some([]) => violations.push(Violation::Missing {
            value: value.to_string(),
            view,
        }),
        Some([at]) if at != acked => violations.push(Violation::WrongOffset {
            value: value.to_string(),
            acked: acked.clone(),
            stored: at.clone(),
        }),
        Some([_]) => {}
        Some(_) => {} // reported by at_most_once
    }
    at_most_once(value, index, view, violations);
}

fn at_most_once(
    value: &str,
    index: &HashMap<&str, Vec<(Tp, i64)>>,
    view: &'static str,
    violations: &mut Vec<Violation>,
) {
    if let Some(at) = index.get(value).filter(|at| at.len() > 1) {
        let v = Violation::Duplicate {
            value: value.to_string(),
            view,
            at: at.clone(),
        };
        if !violations.contains(&v) {
            violations.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: u32) -> Tp {
        ("t".to_string(), p)
    }

    /// A clean history: a, b acked on partition 0 at 0 and 1; a committed
    /// transaction (c at 2, marker at 3) and an aborted one (x at 4,
    /// marker at 5).
    fn clean() -> (History, Observed) {
        let history = History {
            acked: vec![("a".into(), tp(0), 0), ("b".into(), tp(0), 1)],
            txns: vec![
                Txn {
                    id: "t1".into(),
                    values: vec![("c".into(), Some((tp(0), 2)))],
                    outcome: Outcome::Committed,
                },
                Txn {
                    id: "t2".into(),
                    values: vec![("x".into(), Some((tp(0), 4)))],
                    outcome: Outcome::Aborted,
                },
            ],
            ..History::default()
        };
        let batch = |first, last, control, records: &[(i64, &str)]| LogBatch {
            first,
            last,
            control,
            records: records.iter().map(|(o, v)| (*o, v.to_string())).collect(),
        };
        let log = PartitionLog {
            log_start: 0,
            high_watermark: 6,
            batches: vec![
                batch(0, 1, false, &[(0, "a"), (1, "b")]),
                batch(2, 2, false, &[(2, "c")]),
                batch(3, 3, true, &[]),
                batch(4, 4, false, &[(4, "x")]),
                batch(5, 5, true, &[]),
            ],
            unreadable: None,
        };
        let observed = Observed {
            logs: [(tp(0), log)].into_iter().collect(),
            committed: vec![
                (tp(0), 0, "a".into()),
                (tp(0), 1, "b".into()),
                (tp(0), 2, "c".into()),
            ],
        };
        (history, observed)
    }

    #[test]
    fn a_clean_history_passes() {
        let (h, o) = clean();
        assert_eq!(h.check(&o), vec![]);
    }

    #[test]
    fn a_planted_duplicate_is_found() {
        let (h, mut o) = clean();
        let log = o.logs.get_mut(&tp(0)).unwrap();
        log.batches.push(LogBatch {
            first: 6,
            last: 6,
            control: false,
            records: vec![(6, "a".into())],
        });
        log.high_watermark = 7;
        let v = h.check(&o);
        assert!(
            v.iter().any(
                |v| matches!(v, Violation::Duplicate { value, view: "log", .. } if value == "a")
            ),
            "{v:?}"
        );
    }

    #[test]
    fn a_missing_acked_record_is_found() {
        let (h, mut o) = clean();
        o.logs.get_mut(&tp(0)).unwrap().batches[0].records.remove(1);
        o.committed.remove(1);
        let v = h.check(&o);
        assert!(
            v.contains(&Violation::Missing {
                value: "b".into(),
                view: "log"
            }),
            "{v:?}"
        );
        assert!(
            v.contains(&Violation::Missing {
                value: "b".into(),
                view: "read_committed"
            }),
            "{v:?}"
        );
    }

    #[test]
    fn a_wrong_offset_is_found() {
        let (mut h, o) = clean();
        h.acked[1].2 = 7;
        let v = h.check(&o);
        assert!(
            v.iter()
                .any(|v| matches!(v, Violation::WrongOffset { value, .. } if value == "b")),
            "{v:?}"
        );
    }

    #[test]
    fn a_visible_aborted_record_is_found() {
        let (h, mut o) = clean();
        o.committed.push((tp(0), 4, "x".into()));
        let v = h.check(&o);
        assert_eq!(
            v,
            vec![Violation::AbortedVisible {
                txn: "t2".into(),
                value: "x".into()
            }]
        );
    }

    #[test]
    fn gaps_overlaps_unknown_values_and_partial_transactions_are_found() {
        let (mut h, mut o) = clean();
        let log = o.logs.get_mut(&tp(0)).unwrap();
        log.batches.remove(2); // the marker at 3
        log.batches.push(LogBatch {
            first: 4,
            last: 4,
            control: false,
            records: vec![(4, "z".into())],
        });
        h.txns.push(Txn {
            id: "t3".into(),
            values: vec![("u1".into(), None), ("u2".into(), None)],
            outcome: Outcome::Unknown,
        });
        o.committed.push((tp(1), 0, "u1".into()));
        let v = h.check(&o);
        for expected in [
            Violation::Gap {
                tp: tp(0),
                from: 3,
                to: 4,
            },
            Violation::Overlap {
                tp: tp(0),
                offset: 4,
            },
            Violation::Unknown {
                value: "z".into(),
                at: (tp(0), 4),
            },
            Violation::PartialTransaction {
                txn: "t3".into(),
                visible: 1,
                of: 2,
            },
        ] {
            assert!(v.contains(&expected), "{expected:?} not in {v:?}");
        }
    }

    #[test]
    fn an_unreadable_log_is_found() {
        let (h, mut o) = clean();
        let log = o.logs.get_mut(&tp(0)).unwrap();
        log.batches.truncate(1);
        log.unreadable = Some((2, "object gone".into()));
        o.committed.truncate(2);
        let v = h.check(&o);
        assert!(
            v.contains(&Violation::Unreadable {
                tp: tp(0),
                offset: 2,
                error: "object gone".into()
            }),
            "{v:?}"
        );
    }

    #[test]
    fn two_owners_at_once_are_found() {
        let (mut h, o) = clean();
        let span = |member: &str, from, to: Option<u64>| Ownership {
            member: member.into(),
            tp: tp(0),
            from: Duration::from_millis(from),
            to: to.map(Duration::from_millis),
        };
        h.ownership = vec![span("m1", 0, Some(100)), span("m2", 100, None)];
        assert_eq!(h.check(&o), vec![]);
        h.ownership.push(span("m3", 150, Some(160)));
        let v = h.check(&o);
        assert_eq!(
            v,
            vec![Violation::SharedOwnership {
                tp: tp(0),
                members: vec![
                    "m2 from 100ms to None".into(),
                    "m3 from 150ms to Some(160ms)".into()
                ],
                at: Duration::from_millis(150),
            }]
        );
    }
}
