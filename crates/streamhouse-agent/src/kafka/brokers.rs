//! Brokers and partition leaders: the live agents of the group that have
//! a Kafka listener are the brokers, each known by its agent id's stable
//! node id; a partition's leader is chosen over them deterministically and
//! evenly (any agent can serve any partition, so it only spreads load).
//!
//! A client that names its zone gets leaders (and, in Fetch, a preferred
//! read replica) among the agents of that zone when any is live: the zone
//! is a `zone=NAME` token of its `client.id` (tokens separated by commas,
//! semicolons or spaces, e.g. `billing,zone=az1`) for Metadata, and its
//! `client.rack` for Fetch.

use streamhouse_metadata::AgentInfo;

use super::Broker;

/// A broker as Kafka clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KafkaBroker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// The live brokers of the agent's group, by node id.
pub(super) async fn live(broker: &Broker) -> streamhouse_metadata::Result<Vec<KafkaBroker>> {
    let agents = broker.metadata.list_agents(Some(&broker.group)).await?;
    Ok(brokers_of(agents, broker.agent_ttl))
}

fn brokers_of(agents: Vec<AgentInfo>, ttl: std::time::Duration) -> Vec<KafkaBroker> {
    let mut out: Vec<KafkaBroker> = agents
        .into_iter()
        .filter(|a| a.is_live(ttl))
        .filter_map(|a| {
            let (host, port) = split_address(a.kafka_address.as_deref()?)?;
            Some(KafkaBroker {
                node_id: a.node_id,
                host,
                port,
                rack: a.zone,
            })
        })
        .collect();
    out.sort_by_key(|b| b.node_id);
    out
}

/// `host:port` (or `[v6]:port`) split; `None` when it is not one.
pub(super) fn split_address(address: &str) -> Option<(String, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| (host.to_string(), i32::from(port)))
}

/// The leader of `topic`/`partition` among `brokers` (sorted by node id):
/// consecutive partitions go to consecutive brokers, starting at a broker
/// that depends on the topic's name, so every agent leads an equal share.
pub(super) fn leader(brokers: &[KafkaBroker], topic: &str, partition: u32) -> Option<i32> {
    if brokers.is_empty() {
        return None;
    }
    let start = fnv1a(topic.as_bytes());
    let i = (start.wrapping_add(u64::from(partition))) % brokers.len() as u64;
    Some(brokers[i as usize].node_id)
}

/// The zone a client names in its client id (see the module docs).
pub(super) fn client_zone(client_id: &str) -> Option<&str> {
    client_id
        .split([',', ';', ' '])
        .find_map(|token| token.strip_prefix("zone="))
        .filter(|zone| !zone.is_empty())
}

/// The leader for a client of `zone`: chosen among the brokers of that
/// zone when there are any, else among all.
pub(super) fn leader_for(
    brokers: &[KafkaBroker],
    zone: Option<&str>,
    topic: &str,
    partition: u32,
) -> Option<i32> {
    if let Some(zone) = zone {
        let local: Vec<KafkaBroker> = brokers
            .iter()
            .filter(|b| b.rack.as_deref() == Some(zone))
            .cloned()
            .collect();
        if !local.is_empty() {
            return leader(&local, topic, partition);
        }
    }
    leader(brokers, topic, partition)
}

/// FNV-1a: a fixed hash, the same in every agent and every release.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn agent(id: &str, node_id: i32, kafka: Option<&str>, age_ms: u64) -> AgentInfo {
        AgentInfo {
            agent_id: id.into(),
            group: "g".into(),
            address: "127.0.0.1:1".into(),
            zone: None,
            started_at_ms: 0,
            last_heartbeat_ms: 0,
            heartbeat_age: Duration::from_millis(age_ms),
            node_id,
            kafka_address: kafka.map(str::to_string),
        }
    }

    #[test]
    fn brokers_are_live_agents_with_a_kafka_listener() {
        let b = brokers_of(
            vec![
                agent("c", 3, Some("127.0.0.1:9094"), 0),
                agent("a", 1, Some("[::1]:9092"), 0),
                agent("dead", 2, Some("127.0.0.1:9093"), 60_000),
                agent("grpc-only", 4, None, 0),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(b.iter().map(|b| b.node_id).collect::<Vec<_>>(), [1, 3]);
        assert_eq!((b[0].host.as_str(), b[0].port), ("::1", 9092));
        assert_eq!(split_address("nohost"), None);
        assert_eq!(split_address(":9092"), None);
        assert_eq!(split_address("h:99999"), None);
    }

    #[test]
    fn leaders_spread_evenly_and_do_not_change() {
        let brokers: Vec<KafkaBroker> = (1..=3)
            .map(|node_id| KafkaBroker {
                node_id,
                host: "h".into(),
                port: 1,
                rack: None,
            })
            .collect();
        let mut count = [0; 3];
        for p in 0..30 {
            let l = leader(&brokers, "orders", p).unwrap();
            assert_eq!(leader(&brokers, "orders", p), Some(l));
            count[(l - 1) as usize] += 1;
        }
        assert_eq!(count, [10, 10, 10]);
        assert_eq!(leader(&[], "orders", 0), None);
    }

    #[test]
    fn clients_of_a_zone_get_leaders_in_it() {
        let brokers: Vec<KafkaBroker> = [(1, "az1"), (2, "az2"), (3, "az2")]
            .into_iter()
            .map(|(node_id, zone)| KafkaBroker {
                node_id,
                host: "h".into(),
                port: 1,
                rack: Some(zone.into()),
            })
            .collect();
        assert_eq!(client_zone("billing,zone=az2"), Some("az2"));
        assert_eq!(client_zone("zone=az1 other"), Some("az1"));
        assert_eq!(client_zone("billing"), None);
        assert_eq!(client_zone("zone="), None);
        for p in 0..10 {
            assert_eq!(leader_for(&brokers, Some("az1"), "t", p), Some(1));
            assert!(matches!(
                leader_for(&brokers, Some("az2"), "t", p),
                Some(2 | 3)
            ));
            // No agent in the zone: any agent.
            assert_eq!(
                leader_for(&brokers, Some("az9"), "t", p),
                leader(&brokers, "t", p)
            );
        }
    }
}
