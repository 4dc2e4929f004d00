//! A walk over a request body before it is decoded, checking that every
//! array's element count fits in the bytes left. The codec reserves memory
//! for the count it reads before reading any element, so a forged count
//! (say 2^31 topics in a 20-byte frame) would otherwise ask the allocator
//! for hundreds of gigabytes and abort the process. Each element takes at
//! least one byte, so a real request always passes.
//!
//! The walk follows the layouts of the APIs whose requests hold arrays, at
//! the versions this listener decodes; fields after the last array are
//! left to the codec.

use kafka_protocol::messages::ApiKey;

use crate::error::Error;

/// Why a body fails the walk.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Malformed {
    /// The request ends early.
    Truncated,
    /// An array claims more elements than there are bytes left.
    Count { count: u64, left: usize },
    /// An unsigned varint longer than 5 bytes.
    Varint,
    /// An array of more elements than any client sends in one request.
    TooMany { count: u64 },
}

/// The most elements one array of a request may hold: far above what
/// clients send (a fetch of every partition a consumer owns), low enough
/// that no request makes the agent do millions of lookups.
const MAX_ELEMENTS: u64 = 100_000;

impl From<Malformed> for Error {
    fn from(m: Malformed) -> Error {
        Error::KafkaConnection(match m {
            Malformed::Truncated => "the request ends early".to_string(),
            Malformed::Count { count, left } => {
                format!("an array claims {count} elements with {left} bytes left")
            }
            Malformed::Varint => "an unsigned varint is longer than 5 bytes".to_string(),
            Malformed::TooMany { count } => {
                format!("an array of {count} elements is over the {MAX_ELEMENTS} served")
            }
        })
    }
}

type Walk = Result<(), Malformed>;

struct Cursor<'a> {
    buf: &'a [u8],
    flexible: bool,
}

impl Cursor<'_> {
    fn skip(&mut self, n: usize) -> Walk {
        if n > self.buf.len() {
            return Err(Malformed::Truncated);
        }
        self.buf = &self.buf[n..];
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(Malformed::Truncated)?;
        self.buf = rest;
        Ok(*head)
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for i in 0..5 {
            let [b] = self.take::<1>()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed::Varint)
    }

    /// A string, nullable or not (its length, then its bytes).
    fn string(&mut self) -> Walk {
        let len = if self.flexible {
            self.varint()?.saturating_sub(1) as usize
        } else {
            usize::try_from(i16::from_be_bytes(self.take::<2>()?)).unwrap_or(0)
        };
        self.skip(len)
    }

    /// Bytes, nullable or not.
    fn bytes(&mut self) -> Walk {
        let len = if self.flexible {
            self.varint()?.saturating_sub(1) as usize
        } else {
            usize::try_from(i32::from_be_bytes(self.take::<4>()?)).unwrap_or(0)
        };
        self.skip(len)
    }

    fn tagged_fields(&mut self) -> Walk {
        if !self.flexible {
            return Ok(());
        }
        let n = self.varint()?;
        self.fits(n)?;
        for _ in 0..n {
            self.varint()?;
            let size = self.varint()?;
            self.skip(usize::try_from(size).map_err(|_| Malformed::Truncated)?)?;
        }
        Ok(())
    }

    fn fits(&self, count: u64) -> Walk {
        if count > MAX_ELEMENTS {
            return Err(Malformed::TooMany { count });
        }
        if count > self.buf.len() as u64 {
            return Err(Malformed::Count {
                count,
                left: self.buf.len(),
            });
        }
        Ok(())
    }

    /// An array (a null one walks as empty: the codec judges it).
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Walk) -> Walk {
        let count = if self.flexible {
            self.varint()?.saturating_sub(1)
        } else {
            u64::try_from(i32::from_be_bytes(self.take::<4>()?)).unwrap_or(0)
        };
        self.fits(count)?;
        for _ in 0..count {
            element(self)?;
        }
        Ok(())
    }
}

/// Walks the body (after the request header) of `api` at `version`; the
/// bytes walked (up to the end of its last array).
pub(super) fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<usize, Malformed> {
    let flexible_from = match api {
        ApiKey::Metadata => 9,
        ApiKey::Produce => 9,
        ApiKey::Fetch => 12,
        ApiKey::ListOffsets => 6,
        ApiKey::CreateTopics => 5,
        ApiKey::DeleteTopics => 4,
        ApiKey::CreatePartitions => 2,
        ApiKey::DescribeConfigs => 4,
        ApiKey::AlterConfigs => 2,
        ApiKey::IncrementalAlterConfigs => 1,
        ApiKey::FindCoordinator => 3,
        ApiKey::OffsetCommit => 8,
        ApiKey::OffsetFetch => 6,
        ApiKey::OffsetForLeaderEpoch => 4,
        ApiKey::DeleteRecords => 2,
        ApiKey::AddPartitionsToTxn => 3,
        ApiKey::TxnOffsetCommit => 3,
        ApiKey::ListTransactions | ApiKey::DescribeTransactions | ApiKey::DescribeProducers => 0,
        ApiKey::ConsumerGroupHeartbeat | ApiKey::ConsumerGroupDescribe => 0,
        ApiKey::JoinGroup => 6,
        ApiKey::SyncGroup => 4,
        ApiKey::LeaveGroup => 4,
        ApiKey::ListGroups => 3,
        ApiKey::DescribeGroups => 5,
        ApiKey::DeleteGroups => 2,
        ApiKey::OffsetDelete => i16::MAX,
        ApiKey::CreateAcls | ApiKey::DeleteAcls => 2,
        ApiKey::DescribeUserScramCredentials | ApiKey::AlterUserScramCredentials => 0,
        _ => return Ok(0),
    };
    let mut c = Cursor {
        buf: body,
        flexible: version >= flexible_from,
    };
    walk(&mut c, api, version)?;
    Ok(body.len() - c.buf.len())
}

fn walk(c: &mut Cursor<'_>, api: ApiKey, v: i16) -> Walk {
    match api {
        ApiKey::Metadata => c.array(|c| {
            if v >= 10 {
                c.skip(16)?;
            }
            c.string()?;
            c.tagged_fields()
        }),
        ApiKey::Produce => {
            c.string()?; // transactional id
            c.skip(2 + 4)?; // acks, timeout
            c.array(|c| {
                if v <= 12 {
                    c.string()?;
                } else {
                    c.skip(16)?;
                }
                c.array(|c| {
                    c.skip(4)?;
                    c.bytes()?;
                    c.tagged_fields()
                })?;
                c.tagged_fields()
            })
        }
        ApiKey::ListOffsets => {
            c.skip(4 + usize::from(v >= 2))?; // replica id, isolation level
            c.array(|c| {
                c.string()?;
                c.array(|c| {
                    c.skip(4 + if v >= 4 { 4 } else { 0 } + 8)?;
                    c.tagged_fields()
                })?;
                c.tagged_fields()
            })
        }
        ApiKey::Fetch => {
            // replica id (to v14), max wait, min bytes, max bytes, isolation
            // level; session id and epoch from v7.
            c.skip(if v <= 14 { 4 } else { 0 } + 4 + 4 + 4 + 1)?;
            if v >= 7 {
                c.skip(8)?;
            }
            let topic = |c: &mut Cursor<'_>| if v <= 12 { c.string() } else { c.skip(16) };
            c.array(|c| {
                topic(c)?;
                c.array(|c| {
                    let epochs = if v >= 9 { 4 } else { 0 } + if v >= 12 { 4 } else { 0 };
                    let log_start = if v >= 5 { 8 } else { 0 };
                    c.skip(4 + 8 + 4 + epochs + log_start)?;
                    c.tagged_fields()
                })?;
                c.tagged_fields()
            })?;
            if v >= 7 {
                c.array(|c| {
                    topic(c)?;
                    c.array(|c| c.skip(4))?;
                    c.tagged_fields()
                })?;
            }
            Ok(())
        }
        ApiKey::CreateTopics => c.array(|c| {
            c.string()?;
            c.skip(4 + 2)?; // partitions, replication factor
            c.array(|c| {
                c.skip(4)?;
                c.array(|c| c.skip(4))?;
                c.tagged_fields()
            })?;
            c.array(|c| {
                c.string()?;
                c.string()?;
                c.tagged_fields()
            })?;
            c.tagged_fields()
        }),
        ApiKey::DeleteRecords => c.array(|c| {
            c.string()?;
            c.array(|c| {
                c.skip(4 + 8)?;
                c.tagged_fields()
            })?;
            c.tagged_fields()
        }),
        ApiKey::DeleteTopics if v >= 6 => c.array(|c| {
            c.string()?;
            c.skip(16)?;
            c.tagged_fields()
        }),
        ApiKey::DeleteTopics => c.array(|c| c.string()),
        ApiKey::CreatePartitions => c.array(|c| {
            c.string()?;
            c.skip(4)?;
            c.array(|c| {
                c.array(|c| c.skip(4))?;
                c.tagged_fields()
            })?;
            c.tagged_fields()
        }),
        ApiKey::DescribeConfigs => c.array(|c| {
            c.skip(1)?;
            c.string()?;
            c.array(|c| c.string())?;
            c.tagged_fields()
        }),
        ApiKey::AlterConfigs | ApiKey::IncrementalAlterConfigs => {
            let incremental = api == ApiKey::IncrementalAlterConfigs;
            c.array(|c| {
                c.skip(1)?;
                c.string()?;
                c.array(|c| {
                    c.string()?;
                    if incremental {
                        c.skip(1)?;
                    }
                    c.string()?;
                    c.tagged_fields()
                })?;
                c.tagged_fields()
            })
        }
        ApiKey::AddPartitionsToTxn if v <= 3 => {
            c.string()?; // transactional id
            c.skip(8 + 2)?; // producer id and epoch
            c.array(|c| {
                c.string()?;
                c.array(|c| c.skip(4))?;
                c.tagged_fields()
            })
        }
        ApiKey::AddPartitionsToTxn => c.array(|c| {
            c.string()?;
            c.skip(8 + 2 + 1)?; // producer id and epoch, verify only
            c.array(|c| {
                c.string()?;
                c.array(|c| c.skip(4))?;
                c.tagged_fields()
            })?;
            c.tagged_fields()
        }),
        ApiKey::TxnOffsetCommit => {
            c.string()?; // transactional id
            c.string()?; // group id
            c.skip(8 + 2)?; // producer id and epoch
            if v >= 3 {
                c.skip(4)?; // generation
                c.string()?; // member id
                c.string()?; // group instance id
            }
            c.array(|c| {
                c.string()?;
                c.array(|c| {
                    c.skip(4 + 8 + if v >= 2 { 4 } else { 0 })?;
                    c.string()?;
                    c.tagged_fields()
                })?;
                c.tagged_fields()
            })
        }
        ApiKey::ListTransactions => {
            c.array(|c| c.string())?;
            c.array(|c| c.skip(8))
        }
        ApiKey::DescribeTransactions => c.array(|c| c.string()),
        ApiKey::DescribeProducers => c.array(|c| {
            c.string()?;
            c.array(|c| c.skip(4))?;
            c.tagged_fields()
        }),
        ApiKey::FindCoordinator if v >= 4 => {
            c.skip(1)?;
            c.array(|c| c.string())
        }
        ApiKey::OffsetCommit => {
            c.string()?; // group id
            c.skip(4)?; // generation or member epoch
            c.string()?; // member id
            if v >= 7 {
                c.string()?; // group instance id
            }
            if v <= 4 {
                c.skip(8)?; // retention time
            }
            c.array(|c| {
                c.string()?;
                c.array(|c| {
                    c.skip(4 + 8 + if v >= 6 { 4 } else { 0 })?;
                    c.string()?;
                    c.tagged_fields()
                })?;
                c.tagged_fields()
            })
        }
        ApiKey::OffsetFetch => {
            let topics = |c: &mut Cursor<'_>| {
                c.array(|c| {
                    c.string()?;
                    c.array(|c| c.skip(4))?;
                    c.tagged_fields()
                })
            };
            if v <= 7 {
                c.string()?;
                topics(c)
            } else {
                c.array(|c| {
                    c.string()?;
                    if v >= 9 {
                        c.string()?;
                        c.skip(4)?;
                    }
                    topics(c)?;
                    c.tagged_fields()
                })
            }
        }
        ApiKey::ConsumerGroupHeartbeat => {
            c.string()?; // group id
            c.string()?; // member id
            c.skip(4)?; // member epoch
            c.string()?; // instance id
            c.string()?; // rack id
            c.skip(4)?; // rebalance timeout
            c.array(|c| c.string())?; // subscribed topic names
            if v >= 1 {
                c.string()?; // subscribed topic regex
            }
            c.string()?; // server assignor
            c.array(|c| {
                c.skip(16)?; // topic id
                c.array(|c| c.skip(4))?;
                c.tagged_fields()
            })
        }
        ApiKey::ConsumerGroupDescribe => c.array(|c| c.string()),
        ApiKey::OffsetForLeaderEpoch => {
            if v >= 3 {
                c.skip(4)?;
            }
            c.array(|c| {
                c.string()?;
                c.array(|c| {
                    c.skip(4 + 4 + 4)?;
                    c.tagged_fields()
                })?;
                c.tagged_fields()
            })
        }
        ApiKey::JoinGroup => {
            c.string()?; // group id
            c.skip(4 + if v >= 1 { 4 } else { 0 })?; // session, rebalance timeouts
            c.string()?; // member id
            if v >= 5 {
                c.string()?; // group instance id
            }
            c.string()?; // protocol type
            c.array(|c| {
                c.string()?;
                c.bytes()?;
                c.tagged_fields()
            })
        }
        ApiKey::SyncGroup => {
            c.string()?; // group id
            c.skip(4)?; // generation
            c.string()?; // member id
            if v >= 3 {
                c.string()?; // group instance id
            }
            if v >= 5 {
                c.string()?; // protocol type
                c.string()?; // protocol name
            }
            c.array(|c| {
                c.string()?;
                c.bytes()?;
                c.tagged_fields()
            })
        }
        ApiKey::LeaveGroup => {
            c.string()?; // group id
            if v <= 2 {
                return c.string(); // member id
            }
            c.array(|c| {
                c.string()?;
                c.string()?;
                if v >= 5 {
                    c.string()?; // reason
                }
                c.tagged_fields()
            })
        }
        ApiKey::ListGroups => {
            if v >= 4 {
                c.array(|c| c.string())?;
            }
            if v >= 5 {
                c.array(|c| c.string())?;
            }
            Ok(())
        }
        ApiKey::DescribeGroups | ApiKey::DeleteGroups => c.array(|c| c.string()),
        // resource type, name, pattern type, principal, host, operation,
        // permission: a binding (CreateAcls) or a filter (DeleteAcls).
        ApiKey::CreateAcls | ApiKey::DeleteAcls => c.array(|c| {
            c.skip(1)?;
            c.string()?;
            c.skip(1)?;
            c.string()?;
            c.string()?;
            c.skip(2)?;
            c.tagged_fields()
        }),
        ApiKey::DescribeUserScramCredentials => c.array(|c| {
            c.string()?;
            c.tagged_fields()
        }),
        ApiKey::AlterUserScramCredentials => {
            c.array(|c| {
                c.string()?;
                c.skip(1)?;
                c.tagged_fields()
            })?;
            c.array(|c| {
                c.string()?;
                c.skip(1 + 4)?;
                c.bytes()?;
                c.bytes()?;
                c.tagged_fields()
            })
        }
        ApiKey::OffsetDelete => {
            c.string()?;
            c.array(|c| {
                c.string()?;
                c.array(|c| c.skip(4))
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn name(s: &'static str) -> TopicName {
        TopicName(StrBytes::from_static_str(s))
    }

    fn encoded<T: Encodable>(m: &T, v: i16) -> BytesMut {
        let mut b = BytesMut::new();
        m.encode(&mut b, v).unwrap();
        b
    }

    /// Real requests of every version pass; the same with an array count
    /// forged to 2^31-1 fails.
    #[test]
    fn real_requests_pass_and_forged_counts_fail() {
        let metadata = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("a"))),
            MetadataRequestTopic::default().with_name(Some(name("bb"))),
        ]));
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name("t"))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(1)
                            .with_records(Some(bytes::Bytes::from_static(b"xyz"))),
                    ]),
            ]);
        let list = ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)]),
        ]);
        let fetch = FetchRequest::default()
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(name("t"))
                    .with_partitions(vec![FetchPartition::default(), FetchPartition::default()]),
            ])
            .with_forgotten_topics_data(vec![
                ForgottenTopic::default()
                    .with_topic(name("u"))
                    .with_partitions(vec![1, 2, 3]),
            ]);
        let mut cases: Vec<(ApiKey, i16, BytesMut)> = Vec::new();
        for v in 1..=12 {
            cases.push((ApiKey::Metadata, v, encoded(&metadata, v)));
        }
        for v in 3..=12 {
            cases.push((ApiKey::Produce, v, encoded(&produce, v)));
        }
        for v in 1..=10 {
            cases.push((ApiKey::ListOffsets, v, encoded(&list, v)));
        }
        for v in 7..=12 {
            cases.push((ApiKey::Fetch, v, encoded(&fetch, v)));
        }
        cases.extend(admin_cases());
        cases.extend(security_cases());
        for (api, v, body) in cases {
            let walked = check(api, v, &body).unwrap_or_else(|e| panic!("{api:?} v{v}: {e:?}"));
            assert!(walked > 0, "{api:?} v{v}");
            // Every prefix that cuts into the arrays ends early (or has a
            // count too large).
            for cut in 0..walked {
                assert!(
                    check(api, v, &body[..cut]).is_err(),
                    "{api:?} v{v} cut {cut}"
                );
            }
        }
        // A forged count at the first array of each API.
        let forged = |prefix: &[u8]| {
            let mut b = prefix.to_vec();
            b.extend_from_slice(&i32::MAX.to_be_bytes());
            b.extend_from_slice(&[0; 16]);
            b
        };
        assert!(matches!(
            check(ApiKey::Metadata, 1, &forged(&[])),
            Err(Malformed::TooMany { .. })
        ));
        assert!(matches!(
            check(ApiKey::Produce, 3, &forged(&[0xff, 0xff, 0, 1, 0, 0, 0, 0])),
            Err(Malformed::TooMany { .. })
        ));
        assert!(matches!(
            check(ApiKey::ListOffsets, 2, &forged(&[0; 5])),
            Err(Malformed::TooMany { .. })
        ));
        assert!(matches!(
            check(ApiKey::Fetch, 4, &forged(&[0; 17])),
            Err(Malformed::TooMany { .. })
        ));
        // Compact arrays of the consumer group APIs claiming 2^31 elements.
        let huge = [0xff, 0xff, 0xff, 0xff, 0x07];
        let mut heartbeat = vec![2, b'g', 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        heartbeat.extend_from_slice(&huge);
        assert!(matches!(
            check(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat),
            Err(Malformed::TooMany { .. })
        ));
        assert!(matches!(
            check(ApiKey::ConsumerGroupDescribe, 0, &huge),
            Err(Malformed::TooMany { .. })
        ));
        let join_prefix = [&[0, 1, b'x'][..], &[0; 8], &[0, 1, b'x', 0, 1, b'x']].concat();
        assert!(matches!(
            check(ApiKey::JoinGroup, 1, &forged(&join_prefix)),
            Err(Malformed::TooMany { .. })
        ));
        assert!(matches!(
            check(ApiKey::DeleteGroups, 1, &forged(&[])),
            Err(Malformed::TooMany { .. })
        ));
        // A count under the cap but over the bytes left.
        let mut short = 1_000i32.to_be_bytes().to_vec();
        short.extend_from_slice(&[0; 16]);
        assert!(matches!(
            check(ApiKey::Metadata, 1, &short),
            Err(Malformed::Count {
                count: 1_000,
                left: 16
            })
        ));
        // A compact array whose varint claims 2^32 elements.
        assert!(matches!(
            check(ApiKey::Metadata, 9, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(Malformed::TooMany { .. })
        ));
    }

    /// One request of every admin and offsets API at every version, each
    /// array holding an element.
    fn admin_cases() -> Vec<(ApiKey, i16, BytesMut)> {
        use kafka_protocol::messages::*;
        let topic = || name("t");
        let text = || StrBytes::from_static_str("x");
        let mut out = Vec::new();
        let create = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic())
                .with_assignments(vec![
                    create_topics_request::CreatableReplicaAssignment::default()
                        .with_broker_ids(vec![BrokerId(1)]),
                ])
                .with_configs(vec![
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(text())
                        .with_value(Some(text())),
                ]),
        ]);
        for v in 2..=7 {
            out.push((ApiKey::CreateTopics, v, encoded(&create, v)));
        }
        for v in 1..=6 {
            let delete = if v >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    delete_topics_request::DeleteTopicState::default().with_name(Some(topic())),
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![topic()])
            };
            out.push((ApiKey::DeleteTopics, v, encoded(&delete, v)));
        }
        let partitions = CreatePartitionsRequest::default().with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic())
                .with_assignments(Some(vec![
                    create_partitions_request::CreatePartitionsAssignment::default()
                        .with_broker_ids(vec![BrokerId(1)]),
                ])),
        ]);
        for v in 0..=3 {
            out.push((ApiKey::CreatePartitions, v, encoded(&partitions, v)));
        }
        let describe = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_name(text())
                .with_configuration_keys(Some(vec![text()])),
        ]);
        for v in 1..=4 {
            out.push((ApiKey::DescribeConfigs, v, encoded(&describe, v)));
        }
        let alter = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_name(text())
                .with_configs(vec![
                    alter_configs_request::AlterableConfig::default()
                        .with_name(text())
                        .with_value(Some(text())),
                ]),
        ]);
        for v in 0..=2 {
            out.push((ApiKey::AlterConfigs, v, encoded(&alter, v)));
        }
        let incremental = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_name(text())
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(text())
                        .with_value(Some(text())),
                ]),
        ]);
        for v in 0..=1 {
            out.push((ApiKey::IncrementalAlterConfigs, v, encoded(&incremental, v)));
        }
        let find = FindCoordinatorRequest::default().with_coordinator_keys(vec![text()]);
        for v in 4..=6 {
            out.push((ApiKey::FindCoordinator, v, encoded(&find, v)));
        }
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(text()))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_metadata(Some(text())),
                    ]),
            ]);
        for v in 2..=9 {
            out.push((ApiKey::OffsetCommit, v, encoded(&commit, v)));
        }
        for v in 1..=9 {
            let fetch = if v >= 8 {
                OffsetFetchRequest::default().with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(text()))
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(topic())
                                .with_partition_indexes(vec![0, 1]),
                        ])),
                ])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(text()))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(topic())
                            .with_partition_indexes(vec![0, 1]),
                    ]))
            };
            out.push((ApiKey::OffsetFetch, v, encoded(&fetch, v)));
        }
        for v in 0..=1 {
            let heartbeat = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(text()))
                .with_member_id(text())
                .with_instance_id(Some(text()))
                .with_subscribed_topic_names(Some(vec![topic(), topic()]))
                .with_subscribed_topic_regex((v >= 1).then(text))
                .with_server_assignor(Some(text()))
                .with_topic_partitions(Some(vec![
                    consumer_group_heartbeat_request::TopicPartitions::default()
                        .with_partitions(vec![0, 1]),
                ]));
            out.push((ApiKey::ConsumerGroupHeartbeat, v, encoded(&heartbeat, v)));
            let describe = ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(text()), GroupId(text())]);
            out.push((ApiKey::ConsumerGroupDescribe, v, encoded(&describe, v)));
        }
        let epochs = OffsetForLeaderEpochRequest::default().with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(topic())
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default(),
                ]),
        ]);
        for v in 2..=4 {
            out.push((ApiKey::OffsetForLeaderEpoch, v, encoded(&epochs, v)));
        }
        let records = DeleteRecordsRequest::default().with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default().with_offset(-1),
                ]),
        ]);
        for v in 0..=2 {
            out.push((ApiKey::DeleteRecords, v, encoded(&records, v)));
        }
        out.extend(group_cases());
        out
    }

    /// One request of every group API at every version served, each array
    /// holding an element.
    fn group_cases() -> Vec<(ApiKey, i16, BytesMut)> {
        use kafka_protocol::messages::*;
        let text = || StrBytes::from_static_str("x");
        let mut out = Vec::new();
        for v in 0..=9 {
            let join = JoinGroupRequest::default()
                .with_group_id(GroupId(text()))
                .with_member_id(text())
                .with_group_instance_id((v >= 5).then(text))
                .with_protocol_type(text())
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(text())
                        .with_metadata(bytes::Bytes::from_static(b"meta")),
                ]);
            out.push((ApiKey::JoinGroup, v, encoded(&join, v)));
        }
        for v in 0..=5 {
            let sync = SyncGroupRequest::default()
                .with_group_id(GroupId(text()))
                .with_member_id(text())
                .with_group_instance_id((v >= 3).then(text))
                .with_protocol_type((v >= 5).then(text))
                .with_protocol_name((v >= 5).then(text))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(text())
                        .with_assignment(bytes::Bytes::from_static(b"assigned")),
                ]);
            out.push((ApiKey::SyncGroup, v, encoded(&sync, v)));
            let leave = if v >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(text()))
                    .with_members(vec![
                        leave_group_request::MemberIdentity::default()
                            .with_member_id(text())
                            .with_reason((v >= 5).then(text)),
                    ])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(text()))
                    .with_member_id(text())
            };
            out.push((ApiKey::LeaveGroup, v, encoded(&leave, v)));
            if v >= 4 {
                let list = ListGroupsRequest::default()
                    .with_states_filter(vec![text()])
                    .with_types_filter(if v >= 5 { vec![text()] } else { vec![] });
                out.push((ApiKey::ListGroups, v, encoded(&list, v)));
            }
            let describe = DescribeGroupsRequest::default().with_groups(vec![GroupId(text())]);
            out.push((ApiKey::DescribeGroups, v, encoded(&describe, v)));
        }
        for v in 0..=2 {
            let delete = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text())]);
            out.push((ApiKey::DeleteGroups, v, encoded(&delete, v)));
        }
        let offsets = OffsetDeleteRequest::default()
            .with_group_id(GroupId(text()))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(3),
                    ]),
            ]);
        out.push((ApiKey::OffsetDelete, 0, encoded(&offsets, 0)));
        out
    }

    /// One request of every ACL and SCRAM user API at every version
    /// served, each array holding an element.
    fn security_cases() -> Vec<(ApiKey, i16, BytesMut)> {
        use kafka_protocol::messages::*;
        let text = || StrBytes::from_static_str("x");
        let mut out = Vec::new();
        for v in 1..=3 {
            let create = CreateAclsRequest::default().with_creations(vec![
                create_acls_request::AclCreation::default()
                    .with_resource_name(text())
                    .with_principal(text())
                    .with_host(text()),
            ]);
            out.push((ApiKey::CreateAcls, v, encoded(&create, v)));
            let delete = DeleteAclsRequest::default().with_filters(vec![
                delete_acls_request::DeleteAclsFilter::default()
                    .with_resource_name_filter(Some(text()))
                    .with_principal_filter(None)
                    .with_host_filter(Some(text())),
            ]);
            out.push((ApiKey::DeleteAcls, v, encoded(&delete, v)));
        }
        let describe = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
            describe_user_scram_credentials_request::UserName::default().with_name(text()),
        ]));
        out.push((
            ApiKey::DescribeUserScramCredentials,
            0,
            encoded(&describe, 0),
        ));
        let alter = AlterUserScramCredentialsRequest::default()
            .with_deletions(vec![
                alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                    .with_name(text()),
            ])
            .with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(text())
                    .with_salt(bytes::Bytes::from_static(b"salt"))
                    .with_salted_password(bytes::Bytes::from_static(b"salted")),
            ]);
        out.push((ApiKey::AlterUserScramCredentials, 0, encoded(&alter, 0)));
        for (api, v, body) in &out {
            // The walk covers each body but its last tagged fields.
            let walked = check(*api, *v, body).unwrap();
            assert!(body.len() - walked <= 1, "{api:?} v{v}");
        }
        out
    }
}
