//! The server-side assignors of consumer groups: `uniform` (sticky,
//! balanced assignment of partitions to members) and `range` (each topic's
//! partitions in contiguous ranges over its subscribers), and the choice
//! of a group's assignor from what its members ask for.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::TopicPartition;

/// A member as the assignor sees it.
#[derive(Clone, Debug)]
pub struct MemberInput {
    pub member_id: String,
    pub subscription: BTreeSet<String>,
    /// Its previous target, kept where possible (stickiness).
    pub previous: BTreeSet<TopicPartition>,
}

/// The uniform assignor: sticky and balanced ([`assign`]); what a member
/// gets when it names none.
pub const UNIFORM: &str = "uniform";
/// The range assignor ([`assign_range`]).
pub const RANGE: &str = "range";
/// The server-side assignors a member may ask for.
pub const ASSIGNORS: [&str; 2] = [UNIFORM, RANGE];

/// The assignor a group uses: the one most of its members ask for; on a
/// tie, [`UNIFORM`] if it is among the most asked for, else the first by
/// name.
pub fn group_assignor<'a>(asked: impl IntoIterator<Item = &'a str>) -> &'static str {
    let mut votes: BTreeMap<&'static str, usize> = BTreeMap::new();
    for a in asked {
        if let Some(known) = ASSIGNORS.iter().find(|k| **k == a) {
            *votes.entry(known).or_default() += 1;
        }
    }
    let most = votes.values().copied().max().unwrap_or(0);
    if votes.is_empty() || votes.get(UNIFORM) == Some(&most) {
        return UNIFORM;
    }
    votes
        .into_iter()
        .find(|&(_, n)| n == most)
        .map_or(UNIFORM, |(a, _)| a)
}

/// The range assignor: for each subscribed topic, its subscribers in
/// member id order take its partitions in contiguous ranges, the first
/// `partitions % subscribers` of them one more than the others (Kafka's
/// range assignment). Not sticky; hand-overs still wait for releases.
pub fn assign_range(
    members: &[MemberInput],
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .iter()
        .map(|m| (m.member_id.clone(), BTreeSet::new()))
        .collect();
    for (topic, &count) in topics {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.subscription.contains(topic))
            .map(|m| m.member_id.as_str())
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_unstable();
        let n = subscribers.len() as u32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in subscribers.into_iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            if let Some(set) = out.get_mut(member) {
                set.extend((next..next + take).map(|p| TopicPartition::new(topic, p)));
            }
            next += take;
        }
    }
    out
}

/// Assigns every partition of the subscribed `topics` (name → partition
/// count) to exactly one member subscribed to its topic. Members keep their
/// previous partitions where balance allows; counts differ by at most one
/// among members with the same subscription.
pub fn assign(
    members: &[MemberInput],
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .iter()
        .map(|m| (m.member_id.clone(), BTreeSet::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    let eligible = |tp: &TopicPartition, m: &MemberInput| m.subscription.contains(&tp.topic);
    let all: Vec<TopicPartition> = topics
        .iter()
        .filter(|(t, _)| members.iter().any(|m| m.subscription.contains(*t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| TopicPartition::new(t, p)))
        .collect();
    let cap = all.len().div_ceil(members.len()).max(1);
    // Keep previous partitions that still exist and are still subscribed,
    // at most `cap` per member and each by one member only.
    let mut taken = BTreeSet::new();
    for m in members {
        let keep: Vec<_> = m
            .previous
            .iter()
            .filter(|tp| {
                eligible(tp, m) && topics.get(&tp.topic).is_some_and(|&n| tp.partition < n)
            })
            .filter(|tp| !taken.contains(*tp))
            .take(cap)
            .cloned()
            .collect();
        for tp in keep {
            taken.insert(tp.clone());
            out.get_mut(&m.member_id).expect("member").insert(tp);
        }
    }
    // Hand out the rest, each to the eligible member holding the fewest.
    for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
        if let Some(m) = members
            .iter()
            .filter(|m| eligible(tp, m))
            .min_by_key(|m| (out[&m.member_id].len(), m.member_id.clone()))
        {
            out.get_mut(&m.member_id)
                .expect("member")
                .insert(tp.clone());
        }
    }
    // Even out: move partitions from the fullest member to an eligible
    // member holding at least two fewer, until none can move.
    for _ in 0..all.len() * members.len() {
        let mut moved = false;
        let by_size: Vec<&MemberInput> = {
            let mut v: Vec<&MemberInput> = members.iter().collect();
            v.sort_by_key(|m| std::cmp::Reverse(out[&m.member_id].len()));
            v
        };
        'outer: for from in &by_size {
            for to in by_size.iter().rev() {
                if out[&from.member_id].len() < out[&to.member_id].len() + 2 {
                    continue;
                }
                let candidate = out[&from.member_id]
                    .iter()
                    .rev()
                    .find(|tp| eligible(tp, to))
                    .cloned();
                if let Some(tp) = candidate {
                    out.get_mut(&from.member_id).expect("member").remove(&tp);
                    out.get_mut(&to.member_id).expect("member").insert(tp);
                    moved = true;
                    break 'outer;
                }
            }
        }
        if !moved {
            break;
        }
    }
    out
}

/// Encodes a partition set as `topic:p,topic:p`.
pub(crate) fn encode(set: &BTreeSet<TopicPartition>) -> String {
    set.iter()
        .map(|tp| format!("{}:{}", tp.topic, tp.partition))
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes [`encode`]'s format; malformed entries are skipped.
pub(crate) fn decode(s: &str) -> BTreeSet<TopicPartition> {
    s.split(',')
        .filter_map(|e| {
            let (t, p) = e.rsplit_once(':')?;
            Some(TopicPartition::new(t, p.parse().ok()?))
        })
        .collect()
}

/// Encodes topic partition counts as `topic:count,topic:count`.
pub(crate) fn encode_counts(counts: &BTreeMap<String, u32>) -> String {
    counts
        .iter()
        .map(|(t, n)| format!("{t}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes [`encode_counts`]'s format; malformed entries are skipped.
pub(crate) fn decode_counts(s: &str) -> BTreeMap<String, u32> {
    s.split(',')
        .filter_map(|e| {
            let (t, n) = e.rsplit_once(':')?;
            Some((t.to_string(), n.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(id: &str, topics: &[&str], previous: &[(&str, u32)]) -> MemberInput {
        MemberInput {
            member_id: id.into(),
            subscription: topics.iter().map(|t| t.to_string()).collect(),
            previous: previous
                .iter()
                .map(|(t, p)| TopicPartition::new(*t, *p))
                .collect(),
        }
    }

    #[test]
    fn balanced_then_sticky() {
        let topics = BTreeMap::from([("t".to_string(), 12)]);
        let ms = vec![
            member("a", &["t"], &[]),
            member("b", &["t"], &[]),
            member("c", &["t"], &[]),
        ];
        let first = assign(&ms, &topics);
        assert!(first.values().all(|s| s.len() == 4));
        // c leaves: a and b keep theirs and split c's.
        let ms2 = vec![
            member(
                "a",
                &["t"],
                &first["a"]
                    .iter()
                    .map(|tp| (tp.topic.as_str(), tp.partition))
                    .collect::<Vec<_>>(),
            ),
            member(
                "b",
                &["t"],
                &first["b"]
                    .iter()
                    .map(|tp| (tp.topic.as_str(), tp.partition))
                    .collect::<Vec<_>>(),
            ),
        ];
        let second = assign(&ms2, &topics);
        assert!(second.values().all(|s| s.len() == 6));
        assert!(first["a"].is_subset(&second["a"]));
        assert!(first["b"].is_subset(&second["b"]));
    }

    #[test]
    fn subscriptions_are_respected() {
        let topics = BTreeMap::from([("x".to_string(), 2), ("y".to_string(), 4)]);
        let ms = vec![member("a", &["x"], &[]), member("b", &["x", "y"], &[])];
        let out = assign(&ms, &topics);
        assert!(out["a"].iter().all(|tp| tp.topic == "x"));
        assert_eq!(out["a"].len() + out["b"].len(), 6);
    }

    #[test]
    fn codec_round_trips() {
        let set: BTreeSet<_> =
            [TopicPartition::new("a.b-c", 3), TopicPartition::new("x", 0)].into();
        assert_eq!(decode(&encode(&set)), set);
        assert!(decode("").is_empty());
        assert_eq!(decode("bad,x:1,y:z").len(), 1);
        let counts = BTreeMap::from([("a.b-c".to_string(), 3), ("x".to_string(), 0)]);
        assert_eq!(decode_counts(&encode_counts(&counts)), counts);
        assert!(decode_counts("").is_empty());
        assert_eq!(decode_counts("bad,x:1,y:z").len(), 1);
    }

    proptest! {
        #[test]
        fn every_partition_once_and_balanced(
            members in 1usize..8,
            partitions in 0u32..40,
            previous_seed in proptest::collection::vec((0usize..8, 0u32..40), 0..40),
        ) {
            let topics = BTreeMap::from([("t".to_string(), partitions)]);
            let mut ms: Vec<MemberInput> = (0..members).map(|i| member(&format!("m{i}"), &["t"], &[])).collect();
            for (m, p) in previous_seed {
                if m < members {
                    ms[m].previous.insert(TopicPartition::new("t", p));
                }
            }
            let out = assign(&ms, &topics);
            let mut seen = BTreeSet::new();
            for set in out.values() {
                for tp in set {
                    prop_assert!(seen.insert(tp.clone()), "assigned twice: {tp:?}");
                }
            }
            prop_assert_eq!(seen.len(), partitions as usize);
            let sizes: Vec<usize> = out.values().map(BTreeSet::len).collect();
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        }
    }

    #[test]
    fn range_gives_each_topic_in_contiguous_ranges() {
        let members = [member("b", &["t", "u"], &[]), member("a", &["t"], &[])];
        let topics = BTreeMap::from([("t".to_string(), 5), ("u".to_string(), 2)]);
        let out = assign_range(&members, &topics);
        let parts = |m: &str| -> Vec<(String, u32)> {
            out[m]
                .iter()
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect()
        };
        // "a" sorts first: t0..t2; "b": t3, t4 and all of u.
        assert_eq!(
            parts("a"),
            [("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]
        );
        assert_eq!(
            parts("b"),
            [
                ("t".into(), 3),
                ("t".into(), 4),
                ("u".into(), 0),
                ("u".into(), 1)
            ]
        );
    }

    #[test]
    fn a_group_uses_the_assignor_most_members_ask_for() {
        assert_eq!(group_assignor([]), UNIFORM);
        assert_eq!(group_assignor(["range"]), RANGE);
        assert_eq!(group_assignor(["range", "uniform", "range"]), RANGE);
        assert_eq!(group_assignor(["range", "uniform"]), UNIFORM, "a tie");
        assert_eq!(group_assignor(["bogus", "bogus", "range"]), RANGE);
    }
}
