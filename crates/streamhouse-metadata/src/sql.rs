//! The SQL of every metadata operation, written once for both backends.
//!
//! SQLite and PostgreSQL run the same `$1…$n` statements; what differs is
//! given by the backend: its sqlx database type, how it begins a write
//! transaction (`begin_write`), and its clock expression (`$now`, epoch
//! milliseconds, so leases and heartbeats use the database's clock rather
//! than each machine's). The macro expands the trait implementations for a
//! backend struct that has `write` and `read` pools.

/// The columns [`segment`] reads, in its order, from `segments s` joined
/// with `objects o`.
macro_rules! segment_select {
    () => {
        "SELECT s.base_offset, s.last_offset, s.record_count, s.object_key, o.size_bytes, \
         s.byte_start, s.byte_length, s.min_timestamp, s.max_timestamp \
         FROM segments s JOIN objects o ON o.object_key = s.object_key"
    };
}

macro_rules! sql_store {
    ($Store:ty, $Db:ty, now = $now:literal) => {
        use std::collections::HashMap;
        use std::time::Duration;

        use async_trait::async_trait;
        use sqlx::Row;

        use crate::error::{Error, Result};
        use crate::types::*;
        use crate::{AgentStore, LogStore, OffsetStore, TopicStore, validate_group_id};

        /// Rows per multi-row INSERT, well under every backend's bind limit.
        const INSERT_CHUNK: usize = 500;

        impl $Store {
            async fn topic_configs(
                &self,
                topic_id: Option<TopicId>,
            ) -> Result<HashMap<TopicId, HashMap<String, String>>> {
                let rows = sqlx::query(
                    "SELECT topic_id, key, value FROM topic_configs \
                     WHERE $1 IS NULL OR topic_id = $1",
                )
                .bind(topic_id)
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("reading topic configs"))?;
                let mut out: HashMap<TopicId, HashMap<String, String>> = HashMap::new();
                for row in rows {
                    out.entry(row.get(0)).or_default().insert(row.get(1), row.get(2));
                }
                Ok(out)
            }

            fn topic_from_row(
                row: &<$Db as sqlx::Database>::Row,
                configs: &mut HashMap<TopicId, HashMap<String, String>>,
            ) -> Topic {
                let id: i64 = row.get("topic_id");
                Topic {
                    id,
                    name: row.get("name"),
                    partition_count: row.get::<i64, _>("partition_count") as u32,
                    retention_ms: row.get("retention_ms"),
                    config: configs.remove(&id).unwrap_or_default(),
                    created_at_ms: row.get("created_at_ms"),
                }
            }

            /// Resolves a topic name to (id, partition count) inside `tx`.
            async fn topic_partition(
                tx: &mut sqlx::Transaction<'static, $Db>,
                topic: &str,
                partition: u32,
            ) -> Result<TopicId> {
                let row = sqlx::query(
                    "SELECT topic_id, partition_count FROM topics WHERE name = $1",
                )
                .bind(topic)
                .fetch_optional(&mut **tx)
                .await
                .map_err(Error::db("looking up topic"))?
                .ok_or_else(|| Error::TopicNotFound(topic.to_string()))?;
                let count = row.get::<i64, _>(1) as u32;
                if partition >= count {
                    return Err(Error::PartitionNotFound {
                        topic: topic.to_string(),
                        partition,
                        partition_count: count,
                    });
                }
                Ok(row.get(0))
            }

            /// The log commit of one object inside `tx` (see `commit_object`).
            async fn commit_object_in(
                tx: &mut sqlx::Transaction<'static, $Db>,
                commit: &ObjectCommit,
            ) -> Result<CommitOutcome> {
                sqlx::query(concat!(
                    "INSERT INTO objects (object_key, size_bytes, created_at_ms) VALUES ($1, $2, ",
                    $now,
                    ")"
                ))
                .bind(&commit.object_key)
                .bind(commit.size_bytes as i64)
                .execute(&mut **tx)
                .await
                .map_err(Error::db("recording object"))?;

                // Lock partition rows in one global order so that concurrent
                // commits cannot deadlock.
                let mut order: Vec<usize> = (0..commit.chunks.len()).collect();
                order.sort_by_key(|&i| (commit.chunks[i].topic_id, commit.chunks[i].partition));
                let mut outcome: CommitOutcome = vec![Ok(Vec::new()); commit.chunks.len()];
                let mut segments = Vec::with_capacity(commit.chunks.len());
                let mut producers = crate::sql::ProducerEpochs::default();
                for i in order {
                    let chunk = &commit.chunks[i];
                    let result = if chunk.batches.iter().any(|b| b.producer.is_some()) {
                        Self::commit_idempotent_chunk(tx, chunk, &mut producers, &mut segments)
                            .await?
                    } else {
                        Self::commit_plain_chunk(tx, chunk, &mut segments).await?
                    };
                    outcome[i] = result;
                }
                for rows in segments.chunks(INSERT_CHUNK) {
                    sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO segments (topic_id, partition_id, base_offset, last_offset, \
                         record_count, object_key, byte_start, byte_length, min_timestamp, \
                         max_timestamp) ",
                    )
                    .push_values(rows, |mut b, s: &crate::sql::SegmentRow| {
                        b.push_bind(s.topic_id)
                            .push_bind(i64::from(s.partition))
                            .push_bind(s.base_offset)
                            .push_bind(s.last_offset)
                            .push_bind(s.record_count)
                            .push_bind(commit.object_key.as_str())
                            .push_bind(s.byte_start as i64)
                            .push_bind(s.byte_length as i64)
                            .push_bind(s.min_timestamp)
                            .push_bind(s.max_timestamp);
                    })
                    .build()
                    .execute(&mut **tx)
                    .await
                    .map_err(Error::db("inserting segments"))?;
                }
                Ok(outcome)
            }

            /// With a member: it must be live and at `epoch`. Without: the
            /// group must have no live members.
            async fn check_member(
                tx: &mut sqlx::Transaction<'static, $Db>,
                group: &str,
                member: Option<(&str, i32)>,
            ) -> Result<()> {
                match member {
                    Some((member_id, epoch)) => {
                        let row = sqlx::query(concat!(
                            "SELECT member_epoch, ",
                            $now,
                            " - last_heartbeat_ms <= session_timeout_ms FROM group_members \
                             WHERE group_id = $1 AND member_id = $2"
                        ))
                        .bind(group)
                        .bind(member_id)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(Error::db("checking group member"))?;
                        let unknown = || Error::UnknownMember {
                            group: group.to_string(),
                            member_id: member_id.to_string(),
                        };
                        let row = row.ok_or_else(unknown)?;
                        if !row.get::<bool, _>(1) {
                            return Err(unknown());
                        }
                        let current = row.get::<i64, _>(0) as i32;
                        if epoch != current {
                            return Err(Error::FencedMemberEpoch {
                                group: group.to_string(),
                                member_id: member_id.to_string(),
                                epoch,
                                current,
                            });
                        }
                    }
                    None => {
                        let live: i64 = sqlx::query_scalar(concat!(
                            "SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND ",
                            $now,
                            " - last_heartbeat_ms <= session_timeout_ms"
                        ))
                        .bind(group)
                        .fetch_one(&mut **tx)
                        .await
                        .map_err(Error::db("checking group members"))?;
                        if live > 0 {
                            return Err(Error::GroupNotEmpty(group.to_string()));
                        }
                    }
                }
                Ok(())
            }

            /// Locks the producer row and checks `producer` is its current
            /// identity.
            async fn lock_producer_epoch(
                tx: &mut sqlx::Transaction<'static, $Db>,
                producer: ProducerIdentity,
            ) -> Result<()> {
                let epoch: Option<i64> = sqlx::query_scalar(
                    "UPDATE producers SET epoch = epoch WHERE producer_id = $1 RETURNING epoch",
                )
                .bind(producer.producer_id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(Error::db("locking producer"))?;
                let current = epoch.ok_or(Error::UnknownProducer(producer.producer_id))? as i16;
                if current != producer.epoch {
                    return Err(Error::ProducerFenced {
                        producer_id: producer.producer_id,
                        epoch: producer.epoch,
                        current_epoch: current,
                    });
                }
                Ok(())
            }

            async fn new_transactional_producer(
                tx: &mut sqlx::Transaction<'static, $Db>,
                transactional_id: &str,
                transaction_timeout_ms: i64,
            ) -> Result<ProducerIdentity> {
                let id: i64 = sqlx::query_scalar(concat!(
                    "INSERT INTO producers (epoch, created_at_ms, transactional_id, \
                     transaction_timeout_ms) VALUES (0, ",
                    $now,
                    ", $1, $2) RETURNING producer_id"
                ))
                .bind(transactional_id)
                .bind(transaction_timeout_ms)
                .fetch_one(&mut **tx)
                .await
                .map_err(Error::db("creating transactional producer"))?;
                Ok(ProducerIdentity { producer_id: id, epoch: 0 })
            }

            /// Stores a group's committed offset of one partition.
            async fn upsert_offset(
                tx: &mut sqlx::Transaction<'static, $Db>,
                group: &str,
                topic_id: TopicId,
                partition: u32,
                offset: i64,
                metadata: Option<&str>,
            ) -> Result<()> {
                sqlx::query(concat!(
                    "INSERT INTO group_offsets (group_id, topic_id, partition_id, \
                     committed_offset, metadata, committed_at_ms) VALUES ($1, $2, $3, $4, $5, ",
                    $now,
                    ") ON CONFLICT (group_id, topic_id, partition_id) DO UPDATE SET \
                     committed_offset = excluded.committed_offset, \
                     metadata = excluded.metadata, committed_at_ms = excluded.committed_at_ms"
                ))
                .bind(group)
                .bind(topic_id)
                .bind(i64::from(partition))
                .bind(offset)
                .bind(metadata)
                .execute(&mut **tx)
                .await
                .map_err(Error::db("committing offset"))?;
                Ok(())
            }

            /// Commits a chunk without producer ids: one statement takes the
            /// offsets and locks the partition row.
            async fn commit_plain_chunk(
                tx: &mut sqlx::Transaction<'static, $Db>,
                chunk: &ChunkCommit,
                segments: &mut Vec<crate::sql::SegmentRow>,
            ) -> Result<Result<Vec<BatchOutcome>, ChunkRejected>> {
                let span: i64 = chunk.batches.iter().map(|b| b.offset_span).sum();
                let next: Option<i64> = sqlx::query_scalar(
                    "UPDATE partitions SET next_offset = next_offset + $1 \
                     WHERE topic_id = $2 AND partition_id = $3 RETURNING next_offset",
                )
                .bind(span)
                .bind(chunk.topic_id)
                .bind(i64::from(chunk.partition))
                .fetch_optional(&mut **tx)
                .await
                .map_err(Error::db("advancing partition offset"))?;
                let Some(next) = next else {
                    return Ok(Err(ChunkRejected::PartitionGone {
                        topic_id: chunk.topic_id,
                        partition: chunk.partition,
                    }));
                };
                let accepted = vec![true; chunk.batches.len()];
                let placed = crate::sql::place_batches(chunk, next - span, &accepted, segments);
                Ok(Ok(placed
                    .into_iter()
                    .map(|base| BatchOutcome::Appended {
                        base_offset: base.expect("every batch accepted"),
                    })
                    .collect()))
            }

            /// Commits a chunk holding batches of idempotent producers: locks
            /// the partition row, checks every batch against the producer's
            /// epoch and last sequences, commits the accepted ones and
            /// records their sequences.
            async fn commit_idempotent_chunk(
                tx: &mut sqlx::Transaction<'static, $Db>,
                chunk: &ChunkCommit,
                epochs: &mut crate::sql::ProducerEpochs,
                segments: &mut Vec<crate::sql::SegmentRow>,
            ) -> Result<Result<Vec<BatchOutcome>, ChunkRejected>> {
                let (topic_id, partition) = (chunk.topic_id, i64::from(chunk.partition));
                let next: Option<i64> = sqlx::query_scalar(
                    "UPDATE partitions SET next_offset = next_offset \
                     WHERE topic_id = $1 AND partition_id = $2 RETURNING next_offset",
                )
                .bind(topic_id)
                .bind(partition)
                .fetch_optional(&mut **tx)
                .await
                .map_err(Error::db("locking partition"))?;
                let Some(next) = next else {
                    return Ok(Err(ChunkRejected::PartitionGone {
                        topic_id,
                        partition: chunk.partition,
                    }));
                };
                // Per producer in this chunk: its last batches, newest first.
                let mut history: HashMap<i64, Vec<crate::sql::SequenceRow>> = HashMap::new();
                let mut verdicts = Vec::with_capacity(chunk.batches.len());
                let mut offset = next;
                for batch in &chunk.batches {
                    let Some(p) = batch.producer else {
                        verdicts.push(crate::sql::Verdict::Accept);
                        offset += batch.offset_span;
                        continue;
                    };
                    if !epochs.0.contains_key(&p.producer_id) {
                        let epoch: Option<i64> =
                            sqlx::query_scalar("SELECT epoch FROM producers WHERE producer_id = $1")
                                .bind(p.producer_id)
                                .fetch_optional(&mut **tx)
                                .await
                                .map_err(Error::db("reading producer epoch"))?;
                        epochs.0.insert(p.producer_id, epoch.map(|e| e as i16));
                    }
                    if !history.contains_key(&p.producer_id) {
                        let rows = sqlx::query(
                            "SELECT producer_epoch, first_sequence, last_sequence, base_offset \
                             FROM producer_batches WHERE producer_id = $1 AND topic_id = $2 \
                             AND partition_id = $3 ORDER BY base_offset DESC LIMIT $4",
                        )
                        .bind(p.producer_id)
                        .bind(topic_id)
                        .bind(partition)
                        .bind(crate::sql::SEQUENCES_KEPT as i64)
                        .fetch_all(&mut **tx)
                        .await
                        .map_err(Error::db("reading producer sequences"))?;
                        let rows = rows
                            .iter()
                            .map(|r| crate::sql::SequenceRow {
                                epoch: r.get::<i64, _>(0) as i16,
                                first_sequence: r.get::<i64, _>(1) as i32,
                                last_sequence: r.get::<i64, _>(2) as i32,
                                base_offset: r.get(3),
                                new: false,
                            })
                            .collect();
                        history.insert(p.producer_id, rows);
                    }
                    let verdict = crate::sql::check_sequence(
                        &p,
                        epochs.0[&p.producer_id],
                        &history[&p.producer_id],
                    );
                    if let crate::sql::Verdict::Accept = verdict {
                        history.get_mut(&p.producer_id).expect("loaded").insert(
                            0,
                            crate::sql::SequenceRow {
                                epoch: p.epoch,
                                first_sequence: p.base_sequence,
                                last_sequence: p.last_sequence(),
                                base_offset: offset,
                                new: true,
                            },
                        );
                        offset += batch.offset_span;
                    }
                    verdicts.push(verdict);
                }
                sqlx::query(
                    "UPDATE partitions SET next_offset = $1 \
                     WHERE topic_id = $2 AND partition_id = $3",
                )
                .bind(offset)
                .bind(topic_id)
                .bind(partition)
                .execute(&mut **tx)
                .await
                .map_err(Error::db("advancing partition offset"))?;
                let accepted: Vec<bool> = verdicts
                    .iter()
                    .map(|v| matches!(v, crate::sql::Verdict::Accept))
                    .collect();
                let placed = crate::sql::place_batches(chunk, next, &accepted, segments);
                // Accepted transactional batches join their producer's open
                // transaction; its first offset here holds the partition's
                // last stable offset.
                for (batch, base) in chunk.batches.iter().zip(&placed) {
                    let (Some(p), Some(base)) = (batch.producer, base) else { continue };
                    if !p.transactional {
                        continue;
                    }
                    sqlx::query(concat!(
                        "INSERT INTO open_transactions (producer_id, producer_epoch, started_at_ms) \
                         VALUES ($1, $2, ",
                        $now,
                        ") ON CONFLICT (producer_id) DO NOTHING"
                    ))
                    .bind(p.producer_id)
                    .bind(i64::from(p.epoch))
                    .execute(&mut **tx)
                    .await
                    .map_err(Error::db("opening transaction"))?;
                    sqlx::query(
                        "INSERT INTO transaction_partitions (producer_id, topic_id, partition_id, \
                         first_offset) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(p.producer_id)
                    .bind(topic_id)
                    .bind(partition)
                    .bind(*base)
                    .execute(&mut **tx)
                    .await
                    .map_err(Error::db("recording transaction partition"))?;
                }
                let outcomes = placed
                    .into_iter()
                    .zip(verdicts)
                    .map(|(base, v)| match (base, v) {
                        (Some(base_offset), _) => BatchOutcome::Appended { base_offset },
                        (None, crate::sql::Verdict::Duplicate(base_offset)) => {
                            BatchOutcome::Duplicate { base_offset }
                        }
                        (None, crate::sql::Verdict::Reject(r)) => BatchOutcome::Rejected(r),
                        (None, crate::sql::Verdict::Accept) => unreachable!("accepted batches are placed"),
                    })
                    .collect();
                for (producer_id, rows) in history {
                    let new: Vec<_> = rows.iter().filter(|r| r.new).collect();
                    if new.is_empty() {
                        continue;
                    }
                    sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO producer_batches (producer_id, topic_id, partition_id, \
                         producer_epoch, first_sequence, last_sequence, base_offset) ",
                    )
                    .push_values(new, |mut b, r| {
                        b.push_bind(producer_id)
                            .push_bind(topic_id)
                            .push_bind(partition)
                            .push_bind(i64::from(r.epoch))
                            .push_bind(i64::from(r.first_sequence))
                            .push_bind(i64::from(r.last_sequence))
                            .push_bind(r.base_offset);
                    })
                    .build()
                    .execute(&mut **tx)
                    .await
                    .map_err(Error::db("recording producer sequences"))?;
                    if let Some(oldest_kept) = rows.get(crate::sql::SEQUENCES_KEPT - 1) {
                        sqlx::query(
                            "DELETE FROM producer_batches WHERE producer_id = $1 \
                             AND topic_id = $2 AND partition_id = $3 AND base_offset < $4",
                        )
                        .bind(producer_id)
                        .bind(topic_id)
                        .bind(partition)
                        .bind(oldest_kept.base_offset)
                        .execute(&mut **tx)
                        .await
                        .map_err(Error::db("trimming producer sequences"))?;
                    }
                }
                Ok(Ok(outcomes))
            }
        }

        #[async_trait]
        impl crate::ProducerStore for $Store {
            async fn init_producer_id(
                &self,
                current: Option<ProducerIdentity>,
            ) -> Result<ProducerIdentity> {
                let mut tx = self.begin_write().await?;
                if let Some(cur) = current {
                    let epoch: Option<i64> = sqlx::query_scalar(
                        "SELECT epoch FROM producers WHERE producer_id = $1",
                    )
                    .bind(cur.producer_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Error::db("reading producer epoch"))?;
                    let epoch = epoch.ok_or(Error::UnknownProducer(cur.producer_id))? as i16;
                    if epoch != cur.epoch {
                        return Err(Error::ProducerFenced {
                            producer_id: cur.producer_id,
                            epoch: cur.epoch,
                            current_epoch: epoch,
                        });
                    }
                    // An exhausted epoch range gets a fresh producer id.
                    if epoch < i16::MAX {
                        sqlx::query("UPDATE producers SET epoch = $1 WHERE producer_id = $2")
                            .bind(i64::from(epoch) + 1)
                            .bind(cur.producer_id)
                            .execute(&mut *tx)
                            .await
                            .map_err(Error::db("bumping producer epoch"))?;
                        tx.commit().await.map_err(Error::db("bumping producer epoch"))?;
                        return Ok(ProducerIdentity {
                            producer_id: cur.producer_id,
                            epoch: epoch + 1,
                        });
                    }
                }
                let id: i64 = sqlx::query_scalar(concat!(
                    "INSERT INTO producers (epoch, created_at_ms) VALUES (0, ",
                    $now,
                    ") RETURNING producer_id"
                ))
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::db("issuing producer id"))?;
                tx.commit().await.map_err(Error::db("issuing producer id"))?;
                Ok(ProducerIdentity {
                    producer_id: id,
                    epoch: 0,
                })
            }
        }

        #[async_trait]
        impl TopicStore for $Store {
            async fn create_topic(&self, config: TopicConfig) -> Result<Topic> {
                config.validate()?;
                let mut tx = self.begin_write().await?;
                let row = sqlx::query(concat!(
                    "INSERT INTO topics (name, partition_count, retention_ms, created_at_ms) \
                     VALUES ($1, $2, $3, ",
                    $now,
                    ") RETURNING topic_id, created_at_ms"
                ))
                .bind(&config.name)
                .bind(i64::from(config.partition_count))
                .bind(config.retention_ms)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_unique_violation() => {
                        Error::TopicAlreadyExists(config.name.clone())
                    }
                    _ => Error::db("creating topic")(e),
                })?;
                let id: i64 = row.get(0);
                let created_at_ms: i64 = row.get(1);
                let entries: Vec<_> = config.config.iter().collect();
                for rows in entries.chunks(INSERT_CHUNK) {
                    sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO topic_configs (topic_id, key, value) ",
                    )
                    .push_values(rows, |mut b, (k, v)| {
                        b.push_bind(id).push_bind(k.as_str()).push_bind(v.as_str());
                    })
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("storing topic config"))?;
                }
                let partitions: Vec<i64> = (0..i64::from(config.partition_count)).collect();
                for rows in partitions.chunks(INSERT_CHUNK) {
                    sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO partitions (topic_id, partition_id) ",
                    )
                    .push_values(rows, |mut b, p| {
                        b.push_bind(id).push_bind(*p);
                    })
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("creating partitions"))?;
                }
                tx.commit().await.map_err(Error::db("committing topic"))?;
                Ok(Topic {
                    id,
                    name: config.name,
                    partition_count: config.partition_count,
                    retention_ms: config.retention_ms,
                    config: config.config,
                    created_at_ms,
                })
            }

            async fn get_topic(&self, name: &str) -> Result<Option<Topic>> {
                let Some(row) = sqlx::query("SELECT * FROM topics WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.read)
                    .await
                    .map_err(Error::db("reading topic"))?
                else {
                    return Ok(None);
                };
                let mut configs = self.topic_configs(Some(row.get("topic_id"))).await?;
                Ok(Some(Self::topic_from_row(&row, &mut configs)))
            }

            async fn list_topics(&self) -> Result<Vec<Topic>> {
                let rows = sqlx::query("SELECT * FROM topics ORDER BY name")
                    .fetch_all(&self.read)
                    .await
                    .map_err(Error::db("listing topics"))?;
                let mut configs = self.topic_configs(None).await?;
                Ok(rows
                    .iter()
                    .map(|row| Self::topic_from_row(row, &mut configs))
                    .collect())
            }

            async fn alter_topic(&self, name: &str, alter: TopicAlter) -> Result<Topic> {
                let current = self
                    .get_topic(name)
                    .await?
                    .ok_or_else(|| Error::TopicNotFound(name.to_string()))?;
                let mut wanted = TopicConfig {
                    name: current.name.clone(),
                    partition_count: alter.partition_count.unwrap_or(current.partition_count),
                    retention_ms: alter.retention_ms.unwrap_or(current.retention_ms),
                    config: current.config.clone(),
                };
                for k in &alter.remove_config {
                    wanted.config.remove(k);
                }
                wanted.config.extend(alter.set_config.clone());
                wanted.validate()?;
                if wanted.partition_count < current.partition_count {
                    return Err(Error::InvalidArgument {
                        field: "partition_count",
                        reason: format!(
                            "topic {name:?} has {} partitions; partitions can only be added",
                            current.partition_count
                        ),
                    });
                }
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE topics SET partition_count = $2, retention_ms = $3 \
                     WHERE topic_id = $1 AND partition_count <= $2",
                )
                .bind(current.id)
                .bind(i64::from(wanted.partition_count))
                .bind(wanted.retention_ms)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("altering topic"))?;
                if done.rows_affected() == 0 {
                    return Err(Error::TopicNotFound(name.to_string()));
                }
                let added: Vec<i64> = (i64::from(current.partition_count)
                    ..i64::from(wanted.partition_count))
                    .collect();
                for rows in added.chunks(INSERT_CHUNK) {
                    sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO partitions (topic_id, partition_id) ",
                    )
                    .push_values(rows, |mut b, p| {
                        b.push_bind(current.id).push_bind(*p);
                    })
                    .push(" ON CONFLICT DO NOTHING")
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("adding partitions"))?;
                }
                sqlx::query("DELETE FROM topic_configs WHERE topic_id = $1")
                    .bind(current.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("altering topic config"))?;
                let entries: Vec<_> = wanted.config.iter().collect();
                for rows in entries.chunks(INSERT_CHUNK) {
                    sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO topic_configs (topic_id, key, value) ",
                    )
                    .push_values(rows, |mut b, (k, v)| {
                        b.push_bind(current.id).push_bind(k.as_str()).push_bind(v.as_str());
                    })
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("altering topic config"))?;
                }
                tx.commit().await.map_err(Error::db("altering topic"))?;
                Ok(Topic {
                    id: current.id,
                    name: current.name,
                    partition_count: wanted.partition_count,
                    retention_ms: wanted.retention_ms,
                    config: wanted.config,
                    created_at_ms: current.created_at_ms,
                })
            }

            async fn delete_topic(&self, name: &str) -> Result<()> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query("DELETE FROM topics WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("deleting topic"))?;
                if done.rows_affected() == 0 {
                    return Err(Error::TopicNotFound(name.to_string()));
                }
                tx.commit().await.map_err(Error::db("committing topic deletion"))
            }
        }

        #[async_trait]
        impl LogStore for $Store {
            async fn commit_object(&self, commit: &ObjectCommit) -> Result<CommitOutcome> {
                let mut tx = self.begin_write().await?;
                let outcome = Self::commit_object_in(&mut tx, commit).await?;
                tx.commit().await.map_err(Error::db("committing object"))?;
                Ok(outcome)
            }

            async fn partition_state(
                &self,
                topic_id: TopicId,
                partition: u32,
            ) -> Result<PartitionState> {
                let row = sqlx::query(
                    "SELECT p.log_start_offset, p.next_offset, \
                            COALESCE((SELECT MIN(t.first_offset) FROM transaction_partitions t \
                                      WHERE t.topic_id = p.topic_id \
                                        AND t.partition_id = p.partition_id), p.next_offset) \
                     FROM partitions p WHERE p.topic_id = $1 AND p.partition_id = $2",
                )
                .bind(topic_id)
                .bind(i64::from(partition))
                .fetch_optional(&self.read)
                .await
                .map_err(Error::db("reading partition"))?
                .ok_or(Error::PartitionIdNotFound {
                    topic_id,
                    partition,
                })?;
                Ok(PartitionState {
                    topic_id,
                    partition,
                    log_start_offset: row.get(0),
                    next_offset: row.get(1),
                    last_stable_offset: row.get(2),
                })
            }

            async fn segments(
                &self,
                topic_id: TopicId,
                partition: u32,
                from_offset: i64,
                limit: u32,
            ) -> Result<Vec<Segment>> {
                // The first segment is the last one starting at or before
                // `from_offset`; the primary key serves both lookups.
                let rows = sqlx::query(concat!(
                    segment_select!(),
                    " WHERE s.topic_id = $1 AND s.partition_id = $2 AND s.base_offset >= \
                        COALESCE((SELECT MAX(base_offset) FROM segments \
                                  WHERE topic_id = $1 AND partition_id = $2 \
                                    AND base_offset <= $3), $3) \
                       AND s.last_offset >= $3 \
                     ORDER BY s.base_offset LIMIT $4"
                ))
                .bind(topic_id)
                .bind(i64::from(partition))
                .bind(from_offset)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("reading segments"))?;
                Ok(rows.iter().map(|row| crate::sql::segment(row, topic_id, partition)).collect())
            }

            async fn segment_for_timestamp(
                &self,
                topic_id: TopicId,
                partition: u32,
                timestamp: i64,
            ) -> Result<Option<Segment>> {
                let row = sqlx::query(concat!(
                    segment_select!(),
                    " WHERE s.topic_id = $1 AND s.partition_id = $2 AND s.max_timestamp >= $3 \
                     ORDER BY s.base_offset LIMIT 1"
                ))
                .bind(topic_id)
                .bind(i64::from(partition))
                .bind(timestamp)
                .fetch_optional(&self.read)
                .await
                .map_err(Error::db("finding segment by timestamp"))?;
                Ok(row.map(|row| crate::sql::segment(&row, topic_id, partition)))
            }
        }

        #[async_trait]
        impl OffsetStore for $Store {
            async fn commit_offset(
                &self,
                group: &str,
                topic: &str,
                partition: u32,
                offset: i64,
                metadata: Option<&str>,
            ) -> Result<()> {
                validate_group_id(group)?;
                if offset < 0 {
                    return Err(Error::InvalidArgument {
                        field: "offset",
                        reason: format!("{offset} is negative"),
                    });
                }
                let mut tx = self.begin_write().await?;
                let topic_id = Self::topic_partition(&mut tx, topic, partition).await?;
                Self::upsert_offset(&mut tx, group, topic_id, partition, offset, metadata).await?;
                tx.commit().await.map_err(Error::db("committing offset"))
            }

            async fn fetch_offset(
                &self,
                group: &str,
                topic: &str,
                partition: u32,
            ) -> Result<Option<CommittedOffset>> {
                Ok(self
                    .fetch_offsets(group)
                    .await?
                    .into_iter()
                    .find(|o| o.topic == topic && o.partition == partition))
            }

            async fn fetch_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>> {
                validate_group_id(group)?;
                let rows = sqlx::query(
                    "SELECT t.name, g.partition_id, g.committed_offset, g.metadata, \
                            g.committed_at_ms \
                     FROM group_offsets g JOIN topics t ON t.topic_id = g.topic_id \
                     WHERE g.group_id = $1 ORDER BY t.name, g.partition_id",
                )
                .bind(group)
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("fetching offsets"))?;
                Ok(rows
                    .into_iter()
                    .map(|row| CommittedOffset {
                        topic: row.get(0),
                        partition: row.get::<i64, _>(1) as u32,
                        offset: row.get(2),
                        metadata: row.get(3),
                        committed_at_ms: row.get(4),
                    })
                    .collect())
            }
        }

        #[async_trait]
        impl crate::GroupStore for $Store {
            async fn group_heartbeat(&self, hb: GroupHeartbeat) -> Result<GroupAssignment> {
                use std::collections::{BTreeMap, BTreeSet};
                use crate::assignment::{assign, decode, encode, MemberInput};
                validate_group_id(&hb.group_id)?;
                if hb.session_timeout_ms <= 0 {
                    return Err(Error::InvalidArgument {
                        field: "session timeout",
                        reason: format!("{} ms is not positive", hb.session_timeout_ms),
                    });
                }
                if hb.member_epoch < LEAVE_GROUP_EPOCH {
                    return Err(Error::InvalidArgument {
                        field: "member epoch",
                        reason: format!("{} is below -1", hb.member_epoch),
                    });
                }
                let group = hb.group_id.as_str();
                let mut tx = self.begin_write().await?;
                sqlx::query(concat!(
                    "INSERT INTO consumer_groups (group_id, group_epoch, assignment_epoch, \
                     created_at_ms) VALUES ($1, 0, 0, ",
                    $now,
                    ") ON CONFLICT (group_id) DO NOTHING"
                ))
                .bind(group)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("creating group"))?;
                // Locks the group row: one heartbeat of a group at a time.
                let row = sqlx::query(concat!(
                    "UPDATE consumer_groups SET group_epoch = group_epoch WHERE group_id = $1 \
                     RETURNING group_epoch, assignment_epoch, ",
                    $now
                ))
                .bind(group)
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::db("locking group"))?;
                let (mut group_epoch, assignment_epoch, now): (i64, i64, i64) =
                    (row.get(0), row.get(1), row.get(2));
                let rows = sqlx::query(
                    "SELECT member_id, member_epoch, client_id, subscription, session_timeout_ms, \
                     last_heartbeat_ms, target, owned FROM group_members WHERE group_id = $1",
                )
                .bind(group)
                .fetch_all(&mut *tx)
                .await
                .map_err(Error::db("reading group members"))?;
                let mut members: BTreeMap<String, crate::sql::MemberRow> = rows
                    .iter()
                    .map(|r| {
                        (
                            r.get::<String, _>(0),
                            crate::sql::MemberRow {
                                member_epoch: r.get::<i64, _>(1),
                                client_id: r.get(2),
                                subscription: r.get(3),
                                session_timeout_ms: r.get(4),
                                last_heartbeat_ms: r.get(5),
                                target: decode(&r.get::<String, _>(6)),
                                owned: decode(&r.get::<String, _>(7)),
                                dirty: false,
                            },
                        )
                    })
                    .collect();
                let mut gone: Vec<String> = members
                    .iter()
                    .filter(|(_, m)| now - m.last_heartbeat_ms > m.session_timeout_ms)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &gone {
                    members.remove(id);
                    group_epoch += 1;
                }
                let subscription = {
                    let mut s = hb.subscription.clone();
                    s.sort();
                    s.dedup();
                    s.join(",")
                };
                let member_id = match hb.member_epoch {
                    LEAVE_GROUP_EPOCH => {
                        if members.remove(&hb.member_id).is_some() {
                            gone.push(hb.member_id.clone());
                            group_epoch += 1;
                        }
                        None
                    }
                    JOIN_GROUP_EPOCH => {
                        group_epoch += 1;
                        let id = if hb.member_id.is_empty() {
                            let client = if hb.client_id.is_empty() { "consumer" } else { hb.client_id.as_str() };
                            format!("{client}-{group_epoch}-{now}")
                        } else {
                            hb.member_id.clone()
                        };
                        members.insert(
                            id.clone(),
                            crate::sql::MemberRow {
                                member_epoch: group_epoch,
                                client_id: hb.client_id.clone(),
                                subscription: subscription.clone(),
                                session_timeout_ms: hb.session_timeout_ms,
                                last_heartbeat_ms: now,
                                target: BTreeSet::new(),
                                owned: hb.owned.iter().cloned().collect(),
                                dirty: true,
                            },
                        );
                        Some(id)
                    }
                    epoch => {
                        let m = members.get_mut(&hb.member_id).ok_or_else(|| Error::UnknownMember {
                            group: group.to_string(),
                            member_id: hb.member_id.clone(),
                        })?;
                        if i64::from(epoch) > m.member_epoch {
                            return Err(Error::FencedMemberEpoch {
                                group: group.to_string(),
                                member_id: hb.member_id.clone(),
                                epoch,
                                current: m.member_epoch as i32,
                            });
                        }
                        if m.subscription != subscription {
                            m.subscription = subscription.clone();
                            group_epoch += 1;
                        }
                        m.owned = hb.owned.iter().cloned().collect();
                        m.session_timeout_ms = hb.session_timeout_ms;
                        m.last_heartbeat_ms = now;
                        m.dirty = true;
                        Some(hb.member_id.clone())
                    }
                };
                let mut new_assignment_epoch = assignment_epoch;
                if group_epoch > assignment_epoch {
                    let topics_wanted: BTreeSet<String> = members
                        .values()
                        .flat_map(|m| m.subscription.split(',').filter(|t| !t.is_empty()).map(str::to_string))
                        .collect();
                    let mut topics = BTreeMap::new();
                    for t in topics_wanted {
                        let count: Option<i64> = sqlx::query_scalar(
                            "SELECT partition_count FROM topics WHERE name = $1",
                        )
                        .bind(&t)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(Error::db("reading subscribed topics"))?;
                        if let Some(c) = count {
                            topics.insert(t, c as u32);
                        }
                    }
                    let inputs: Vec<MemberInput> = members
                        .iter()
                        .map(|(id, m)| MemberInput {
                            member_id: id.clone(),
                            subscription: m.subscription.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
                            previous: m.target.clone(),
                        })
                        .collect();
                    for (id, target) in assign(&inputs, &topics) {
                        let m = members.get_mut(&id).expect("assigned member exists");
                        if m.target != target {
                            m.target = target;
                            m.dirty = true;
                        }
                    }
                    new_assignment_epoch = group_epoch;
                }
                let mut answer = None;
                if let Some(id) = &member_id {
                    let others: BTreeSet<TopicPartition> = members
                        .iter()
                        .filter(|(other, _)| *other != id)
                        .flat_map(|(_, m)| m.owned.iter().cloned())
                        .collect();
                    let m = members.get_mut(id).expect("member is present");
                    let assigned: BTreeSet<TopicPartition> = m.target.difference(&others).cloned().collect();
                    let pending: Vec<TopicPartition> = m.target.intersection(&others).cloned().collect();
                    // A new epoch marks a new assignment for the member; it
                    // commits offsets with the epoch it was last given.
                    if assigned != m.owned && m.member_epoch < group_epoch {
                        m.member_epoch = group_epoch;
                    }
                    // Until its next heartbeat reports what it released, the
                    // member owns what it reported plus what it is given now.
                    m.owned.extend(assigned.iter().cloned());
                    m.dirty = true;
                    answer = Some(GroupAssignment {
                        member_id: id.clone(),
                        member_epoch: m.member_epoch as i32,
                        group_epoch: group_epoch as i32,
                        assigned: assigned.into_iter().collect(),
                        pending,
                    });
                }
                for id in &gone {
                    sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND member_id = $2")
                        .bind(group)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::db("removing group member"))?;
                }
                for (id, m) in members.iter().filter(|(_, m)| m.dirty) {
                    sqlx::query(
                        "INSERT INTO group_members (group_id, member_id, member_epoch, client_id, \
                         subscription, session_timeout_ms, last_heartbeat_ms, target, owned) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (group_id, member_id) DO UPDATE SET \
                         member_epoch = excluded.member_epoch, client_id = excluded.client_id, \
                         subscription = excluded.subscription, \
                         session_timeout_ms = excluded.session_timeout_ms, \
                         last_heartbeat_ms = excluded.last_heartbeat_ms, \
                         target = excluded.target, owned = excluded.owned",
                    )
                    .bind(group)
                    .bind(id)
                    .bind(m.member_epoch)
                    .bind(&m.client_id)
                    .bind(&m.subscription)
                    .bind(m.session_timeout_ms)
                    .bind(m.last_heartbeat_ms)
                    .bind(encode(&m.target))
                    .bind(encode(&m.owned))
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("storing group member"))?;
                }
                sqlx::query(
                    "UPDATE consumer_groups SET group_epoch = $1, assignment_epoch = $2 \
                     WHERE group_id = $3",
                )
                .bind(group_epoch)
                .bind(new_assignment_epoch)
                .bind(group)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("storing group epoch"))?;
                tx.commit().await.map_err(Error::db("committing heartbeat"))?;
                Ok(answer.unwrap_or(GroupAssignment {
                    member_id: hb.member_id,
                    member_epoch: LEAVE_GROUP_EPOCH,
                    group_epoch: group_epoch as i32,
                    assigned: Vec::new(),
                    pending: Vec::new(),
                }))
            }

            async fn list_groups(&self) -> Result<Vec<(String, usize)>> {
                let rows = sqlx::query(concat!(
                    "SELECT g.group_id, (SELECT COUNT(*) FROM group_members m \
                     WHERE m.group_id = g.group_id AND ",
                    $now,
                    " - m.last_heartbeat_ms <= m.session_timeout_ms) FROM \
                     (SELECT group_id FROM consumer_groups UNION \
                      SELECT group_id FROM group_offsets) g ORDER BY g.group_id"
                ))
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("listing groups"))?;
                Ok(rows
                    .iter()
                    .map(|r| (r.get(0), r.get::<i64, _>(1) as usize))
                    .collect())
            }

            async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
                use crate::assignment::decode;
                validate_group_id(group)?;
                let epoch: Option<i64> = sqlx::query_scalar(
                    "SELECT group_epoch FROM consumer_groups WHERE group_id = $1",
                )
                .bind(group)
                .fetch_optional(&self.read)
                .await
                .map_err(Error::db("reading group"))?;
                let offsets = self.fetch_offsets(group).await?;
                if epoch.is_none() && offsets.is_empty() {
                    return Err(Error::GroupNotFound(group.to_string()));
                }
                let rows = sqlx::query(concat!(
                    "SELECT member_id, client_id, member_epoch, subscription, owned, target, ",
                    $now,
                    " - last_heartbeat_ms, session_timeout_ms FROM group_members \
                     WHERE group_id = $1 ORDER BY member_id"
                ))
                .bind(group)
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("reading group members"))?;
                let members = rows
                    .iter()
                    .filter(|r| r.get::<i64, _>(6) <= r.get::<i64, _>(7))
                    .map(|r| GroupMember {
                        member_id: r.get(0),
                        client_id: r.get(1),
                        member_epoch: r.get::<i64, _>(2) as i32,
                        subscription: r
                            .get::<String, _>(3)
                            .split(',')
                            .filter(|t| !t.is_empty())
                            .map(str::to_string)
                            .collect(),
                        owned: decode(&r.get::<String, _>(4)).into_iter().collect(),
                        target: decode(&r.get::<String, _>(5)).into_iter().collect(),
                        heartbeat_age: Duration::from_millis(r.get::<i64, _>(6).max(0) as u64),
                        session_timeout: Duration::from_millis(r.get::<i64, _>(7).max(0) as u64),
                    })
                    .collect();
                Ok(GroupDescription {
                    group_id: group.to_string(),
                    group_epoch: epoch.unwrap_or(0) as i32,
                    members,
                    offsets,
                })
            }

            async fn delete_group(&self, group: &str) -> Result<()> {
                let description = self.describe_group(group).await?;
                if !description.members.is_empty() {
                    return Err(Error::GroupNotEmpty(group.to_string()));
                }
                let mut tx = self.begin_write().await?;
                for sql in [
                    "DELETE FROM group_members WHERE group_id = $1",
                    "DELETE FROM consumer_groups WHERE group_id = $1",
                    "DELETE FROM group_offsets WHERE group_id = $1",
                ] {
                    sqlx::query(sql)
                        .bind(group)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::db("deleting group"))?;
                }
                tx.commit().await.map_err(Error::db("deleting group"))
            }

            async fn commit_group_offsets(
                &self,
                group: &str,
                member: Option<(&str, i32)>,
                offsets: &[OffsetCommit],
            ) -> Result<()> {
                validate_group_id(group)?;
                crate::validate_offsets(offsets)?;
                let mut tx = self.begin_write().await?;
                Self::check_member(&mut tx, group, member).await?;
                for o in offsets {
                    let topic_id = Self::topic_partition(&mut tx, &o.topic, o.partition).await?;
                    Self::upsert_offset(&mut tx, group, topic_id, o.partition, o.offset, o.metadata.as_deref())
                        .await?;
                }
                tx.commit().await.map_err(Error::db("committing offsets"))
            }
        }

        #[async_trait]
        impl crate::TransactionStore for $Store {
            async fn init_transactional_producer(
                &self,
                transactional_id: &str,
                transaction_timeout_ms: i64,
            ) -> Result<ProducerIdentity> {
                if transactional_id.is_empty() || transactional_id.len() > 255 {
                    return Err(Error::InvalidArgument {
                        field: "transactional id",
                        reason: format!("{transactional_id:?} must be 1 to 255 bytes"),
                    });
                }
                if transaction_timeout_ms <= 0 {
                    return Err(Error::InvalidArgument {
                        field: "transaction timeout",
                        reason: format!("{transaction_timeout_ms} ms is not positive"),
                    });
                }
                let mut tx = self.begin_write().await?;
                let row = sqlx::query(
                    "UPDATE producers SET epoch = epoch + 1, transaction_timeout_ms = $2 \
                     WHERE transactional_id = $1 RETURNING producer_id, epoch",
                )
                .bind(transactional_id)
                .bind(transaction_timeout_ms)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::db("bumping transactional producer"))?;
                if let Some(row) = &row {
                    let id: i64 = row.get(0);
                    let open: Option<i64> = sqlx::query_scalar(
                        "SELECT producer_epoch FROM open_transactions WHERE producer_id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Error::db("reading open transaction"))?;
                    if open.is_some() {
                        return Err(Error::InvalidTransactionState {
                            producer_id: id,
                            reason: "a transaction of an earlier instance is still open; end it first"
                                .into(),
                        });
                    }
                    let epoch: i64 = row.get(1);
                    if epoch <= i64::from(i16::MAX) {
                        tx.commit().await.map_err(Error::db("bumping transactional producer"))?;
                        return Ok(ProducerIdentity { producer_id: id, epoch: epoch as i16 });
                    }
                }
                let identity = Self::new_transactional_producer(&mut tx, transactional_id, transaction_timeout_ms).await?;
                tx.commit().await.map_err(Error::db("creating transactional producer"))?;
                Ok(identity)
            }

            async fn transactional_producer_id(&self, transactional_id: &str) -> Result<Option<i64>> {
                sqlx::query_scalar("SELECT producer_id FROM producers WHERE transactional_id = $1")
                    .bind(transactional_id)
                    .fetch_optional(&self.read)
                    .await
                    .map_err(Error::db("reading transactional producer"))
            }

            async fn open_transaction(&self, producer_id: i64) -> Result<Option<OpenTransaction>> {
                let Some(row) = sqlx::query(
                    "SELECT o.producer_epoch, o.started_at_ms, p.transaction_timeout_ms \
                     FROM open_transactions o JOIN producers p ON p.producer_id = o.producer_id \
                     WHERE o.producer_id = $1",
                )
                .bind(producer_id)
                .fetch_optional(&self.read)
                .await
                .map_err(Error::db("reading open transaction"))?
                else {
                    return Ok(None);
                };
                let partitions = sqlx::query(
                    "SELECT topic_id, partition_id, first_offset FROM transaction_partitions \
                     WHERE producer_id = $1 ORDER BY topic_id, partition_id",
                )
                .bind(producer_id)
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("reading transaction partitions"))?;
                Ok(Some(OpenTransaction {
                    producer_id,
                    epoch: row.get::<i64, _>(0) as i16,
                    started_at_ms: row.get(1),
                    timeout_ms: row.get(2),
                    partitions: partitions
                        .iter()
                        .map(|r| (r.get(0), r.get::<i64, _>(1) as u32, r.get(2)))
                        .collect(),
                }))
            }

            async fn expired_transactions(&self) -> Result<Vec<i64>> {
                sqlx::query_scalar(concat!(
                    "SELECT o.producer_id FROM open_transactions o \
                     JOIN producers p ON p.producer_id = o.producer_id WHERE ",
                    $now,
                    " - o.started_at_ms > p.transaction_timeout_ms ORDER BY o.producer_id"
                ))
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("finding expired transactions"))
            }

            async fn add_transaction_offsets(
                &self,
                producer: ProducerIdentity,
                group: &str,
                member: Option<(&str, i32)>,
                offsets: &[OffsetCommit],
            ) -> Result<()> {
                validate_group_id(group)?;
                crate::validate_offsets(offsets)?;
                let mut tx = self.begin_write().await?;
                Self::lock_producer_epoch(&mut tx, producer).await?;
                if member.is_some() {
                    Self::check_member(&mut tx, group, member).await?;
                }
                sqlx::query(concat!(
                    "INSERT INTO open_transactions (producer_id, producer_epoch, started_at_ms) \
                     VALUES ($1, $2, ",
                    $now,
                    ") ON CONFLICT (producer_id) DO NOTHING"
                ))
                .bind(producer.producer_id)
                .bind(i64::from(producer.epoch))
                .execute(&mut *tx)
                .await
                .map_err(Error::db("opening transaction"))?;
                for o in offsets {
                    let topic_id = Self::topic_partition(&mut tx, &o.topic, o.partition).await?;
                    sqlx::query(
                        "INSERT INTO transaction_offsets (producer_id, group_id, topic_id, \
                         partition_id, committed_offset, metadata) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (producer_id, group_id, topic_id, partition_id) DO UPDATE SET \
                         committed_offset = excluded.committed_offset, metadata = excluded.metadata",
                    )
                    .bind(producer.producer_id)
                    .bind(group)
                    .bind(topic_id)
                    .bind(i64::from(o.partition))
                    .bind(o.offset)
                    .bind(&o.metadata)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("adding transaction offsets"))?;
                }
                tx.commit().await.map_err(Error::db("adding transaction offsets"))
            }

            async fn end_transaction(&self, end: &EndTransaction) -> Result<ProducerIdentity> {
                use std::collections::BTreeSet;
                let pid = end.producer_id;
                let mut tx = self.begin_write().await?;
                let row = sqlx::query(
                    "UPDATE producers SET epoch = epoch WHERE producer_id = $1 \
                     RETURNING epoch, last_end_epoch, last_end_committed, transactional_id, \
                     transaction_timeout_ms",
                )
                .bind(pid)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::db("locking producer"))?
                .ok_or(Error::UnknownProducer(pid))?;
                let current = row.get::<i64, _>(0) as i16;
                let identity = ProducerIdentity { producer_id: pid, epoch: current };
                if let Some(epoch) = end.epoch
                    && epoch != current
                {
                    let last_epoch: Option<i64> = row.get(1);
                    let last_committed: Option<i64> = row.get(2);
                    // A retry of an end that already happened.
                    if last_epoch == Some(i64::from(epoch))
                        && last_committed == Some(i64::from(end.commit))
                    {
                        return Ok(identity);
                    }
                    return Err(if epoch < current {
                        Error::ProducerFenced { producer_id: pid, epoch, current_epoch: current }
                    } else {
                        Error::InvalidTransactionState {
                            producer_id: pid,
                            reason: format!("epoch {epoch} is ahead of the current {current}"),
                        }
                    });
                }
                let open: Option<i64> = sqlx::query_scalar(
                    "SELECT producer_epoch FROM open_transactions WHERE producer_id = $1",
                )
                .bind(pid)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::db("reading open transaction"))?;
                if open.is_none() && end.epoch.is_none() {
                    return Ok(identity);
                }
                let partitions = sqlx::query(
                    "SELECT topic_id, partition_id, first_offset FROM transaction_partitions \
                     WHERE producer_id = $1",
                )
                .bind(pid)
                .fetch_all(&mut *tx)
                .await
                .map_err(Error::db("reading transaction partitions"))?;
                let wrote: BTreeSet<(i64, u32)> = partitions
                    .iter()
                    .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1) as u32))
                    .collect();
                let marked: BTreeSet<(i64, u32)> = end
                    .markers
                    .iter()
                    .flat_map(|m| m.chunks.iter().map(|c| (c.topic_id, c.partition)))
                    .collect();
                if wrote != marked {
                    return Err(Error::TransactionPartitionsChanged(pid));
                }
                let mut marker_offsets = std::collections::BTreeMap::new();
                if let Some(markers) = &end.markers {
                    let outcome = Self::commit_object_in(&mut tx, markers).await?;
                    for (chunk, result) in markers.chunks.iter().zip(outcome) {
                        if let Ok(batches) = result
                            && let Some(BatchOutcome::Appended { base_offset }) = batches.first()
                        {
                            marker_offsets.insert((chunk.topic_id, chunk.partition), *base_offset);
                        }
                    }
                }
                if end.commit {
                    let offsets = sqlx::query(
                        "SELECT group_id, topic_id, partition_id, committed_offset, metadata \
                         FROM transaction_offsets WHERE producer_id = $1",
                    )
                    .bind(pid)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(Error::db("reading transaction offsets"))?;
                    for o in &offsets {
                        let (group, metadata): (String, Option<String>) = (o.get(0), o.get(4));
                        Self::upsert_offset(
                            &mut tx,
                            &group,
                            o.get(1),
                            o.get::<i64, _>(2) as u32,
                            o.get(3),
                            metadata.as_deref(),
                        )
                        .await?;
                    }
                } else {
                    for r in &partitions {
                        let key = (r.get::<i64, _>(0), r.get::<i64, _>(1) as u32);
                        let Some(marker) = marker_offsets.get(&key) else { continue };
                        sqlx::query(
                            "INSERT INTO aborted_transactions (topic_id, partition_id, producer_id, \
                             first_offset, last_offset) VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(key.0)
                        .bind(i64::from(key.1))
                        .bind(pid)
                        .bind(r.get::<i64, _>(2))
                        .bind(*marker)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::db("recording aborted transaction"))?;
                    }
                }
                for sql in [
                    "DELETE FROM transaction_partitions WHERE producer_id = $1",
                    "DELETE FROM transaction_offsets WHERE producer_id = $1",
                    "DELETE FROM open_transactions WHERE producer_id = $1",
                ] {
                    sqlx::query(sql)
                        .bind(pid)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::db("closing transaction"))?;
                }
                let ended_epoch = open.unwrap_or(i64::from(current));
                let next = if current < i16::MAX {
                    sqlx::query(
                        "UPDATE producers SET epoch = epoch + 1, last_end_epoch = $2, \
                         last_end_committed = $3 WHERE producer_id = $1",
                    )
                    .bind(pid)
                    .bind(ended_epoch)
                    .bind(i64::from(end.commit))
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("bumping producer epoch"))?;
                    ProducerIdentity { producer_id: pid, epoch: current + 1 }
                } else {
                    // The epochs of this id are used up: a new id takes over
                    // the transactional id.
                    let tid: Option<String> = row.get(3);
                    let timeout: i64 = row.get(4);
                    match tid {
                        Some(tid) => {
                            sqlx::query("UPDATE producers SET transactional_id = NULL WHERE producer_id = $1")
                                .bind(pid)
                                .execute(&mut *tx)
                                .await
                                .map_err(Error::db("retiring producer id"))?;
                            Self::new_transactional_producer(&mut tx, &tid, timeout).await?
                        }
                        None => identity,
                    }
                };
                tx.commit().await.map_err(Error::db("ending transaction"))?;
                Ok(next)
            }

            async fn aborted_transactions(
                &self,
                topic_id: TopicId,
                partition: u32,
                from: i64,
                to: i64,
            ) -> Result<Vec<AbortedTransaction>> {
                let rows = sqlx::query(
                    "SELECT producer_id, first_offset, last_offset FROM aborted_transactions \
                     WHERE topic_id = $1 AND partition_id = $2 AND last_offset >= $3 \
                       AND first_offset < $4 ORDER BY first_offset",
                )
                .bind(topic_id)
                .bind(i64::from(partition))
                .bind(from)
                .bind(to)
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("reading aborted transactions"))?;
                Ok(rows
                    .iter()
                    .map(|r| AbortedTransaction {
                        producer_id: r.get(0),
                        first_offset: r.get(1),
                        last_offset: r.get(2),
                    })
                    .collect())
            }
        }

        #[async_trait]
        impl crate::MaintenanceStore for $Store {
            async fn try_lease(&self, job: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                sqlx::query(concat!(
                    "INSERT INTO job_leases (job, holder, expires_at_ms) VALUES ($1, $2, ",
                    $now,
                    " + $3) ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
                     expires_at_ms = excluded.expires_at_ms \
                     WHERE job_leases.holder = excluded.holder OR job_leases.expires_at_ms < ",
                    $now
                ))
                .bind(job)
                .bind(holder)
                .bind(ttl_ms)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("taking job lease"))?;
                let current: String =
                    sqlx::query_scalar("SELECT holder FROM job_leases WHERE job = $1")
                        .bind(job)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(Error::db("reading job lease"))?;
                tx.commit().await.map_err(Error::db("taking job lease"))?;
                Ok(current == holder)
            }

            async fn lease_holder(&self, job: &str) -> Result<Option<String>> {
                sqlx::query_scalar(concat!(
                    "SELECT holder FROM job_leases WHERE job = $1 AND expires_at_ms >= ",
                    $now
                ))
                .bind(job)
                .fetch_optional(&self.read)
                .await
                .map_err(Error::db("reading job lease"))
            }

            async fn apply_retention(
                &self,
                topic_id: TopicId,
                partition: u32,
                min_timestamp: Option<i64>,
                max_bytes: Option<i64>,
            ) -> Result<(u64, i64)> {
                let p = i64::from(partition);
                let mut tx = self.begin_write().await?;
                let row = sqlx::query(
                    "UPDATE partitions SET log_start_offset = log_start_offset \
                     WHERE topic_id = $1 AND partition_id = $2 \
                     RETURNING log_start_offset, next_offset, \
                       COALESCE((SELECT MIN(t.first_offset) FROM transaction_partitions t \
                                 WHERE t.topic_id = $1 AND t.partition_id = $2), next_offset)",
                )
                .bind(topic_id)
                .bind(p)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::db("locking partition"))?
                .ok_or(Error::PartitionIdNotFound { topic_id, partition })?;
                let (log_start, next, stable): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                let segments = sqlx::query(
                    "SELECT base_offset, last_offset, byte_length, max_timestamp FROM segments \
                     WHERE topic_id = $1 AND partition_id = $2 ORDER BY base_offset",
                )
                .bind(topic_id)
                .bind(p)
                .fetch_all(&mut *tx)
                .await
                .map_err(Error::db("reading segments"))?;
                let segs: Vec<(i64, i64, i64, i64)> = segments
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                    .collect();
                let mut total: i64 = segs.iter().map(|s| s.2).sum();
                let mut drop = 0;
                for s in &segs {
                    if s.1 >= stable {
                        break;
                    }
                    let expired = min_timestamp.is_some_and(|t| s.3 < t);
                    let oversize = max_bytes.is_some_and(|m| total > m);
                    if !(expired || oversize) {
                        break;
                    }
                    total -= s.2;
                    drop += 1;
                }
                if drop == 0 {
                    return Ok((0, log_start));
                }
                let new_start = segs.get(drop).map_or(next, |s| s.0).max(log_start);
                sqlx::query(
                    "DELETE FROM segments WHERE topic_id = $1 AND partition_id = $2 \
                     AND base_offset < $3",
                )
                .bind(topic_id)
                .bind(p)
                .bind(new_start)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("deleting segments"))?;
                sqlx::query(
                    "UPDATE partitions SET log_start_offset = $3 \
                     WHERE topic_id = $1 AND partition_id = $2",
                )
                .bind(topic_id)
                .bind(p)
                .bind(new_start)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("advancing log start"))?;
                sqlx::query(
                    "DELETE FROM aborted_transactions WHERE topic_id = $1 AND partition_id = $2 \
                     AND last_offset < $3",
                )
                .bind(topic_id)
                .bind(p)
                .bind(new_start)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("dropping old aborted ranges"))?;
                tx.commit().await.map_err(Error::db("applying retention"))?;
                Ok((drop as u64, new_start))
            }

            async fn replace_segments(&self, old: &[Segment], new: &Segment) -> Result<bool> {
                let (Some(first), Some(last)) = (old.first(), old.last()) else {
                    return Ok(false);
                };
                let mut tx = self.begin_write().await?;
                // Lock the partition, then check the old rows are all there.
                sqlx::query(
                    "UPDATE partitions SET next_offset = next_offset \
                     WHERE topic_id = $1 AND partition_id = $2",
                )
                .bind(new.topic_id)
                .bind(i64::from(new.partition))
                .execute(&mut *tx)
                .await
                .map_err(Error::db("locking partition"))?;
                let rows = sqlx::query(
                    "SELECT base_offset, last_offset, object_key FROM segments \
                     WHERE topic_id = $1 AND partition_id = $2 \
                       AND base_offset >= $3 AND base_offset <= $4 ORDER BY base_offset",
                )
                .bind(new.topic_id)
                .bind(i64::from(new.partition))
                .bind(first.base_offset)
                .bind(last.base_offset)
                .fetch_all(&mut *tx)
                .await
                .map_err(Error::db("reading segments"))?;
                let present: Vec<(i64, i64, String)> =
                    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
                let expected: Vec<(i64, i64, String)> = old
                    .iter()
                    .map(|s| (s.base_offset, s.last_offset, s.object_key.clone()))
                    .collect();
                if present != expected {
                    return Ok(false);
                }
                sqlx::query(concat!(
                    "INSERT INTO objects (object_key, size_bytes, created_at_ms) VALUES ($1, $2, ",
                    $now,
                    ")"
                ))
                .bind(&new.object_key)
                .bind(new.object_size as i64)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("recording object"))?;
                sqlx::query(
                    "DELETE FROM segments WHERE topic_id = $1 AND partition_id = $2 \
                     AND base_offset >= $3 AND base_offset <= $4",
                )
                .bind(new.topic_id)
                .bind(i64::from(new.partition))
                .bind(first.base_offset)
                .bind(last.base_offset)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("deleting replaced segments"))?;
                sqlx::query(
                    "INSERT INTO segments (topic_id, partition_id, base_offset, last_offset, \
                     record_count, object_key, byte_start, byte_length, min_timestamp, \
                     max_timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(new.topic_id)
                .bind(i64::from(new.partition))
                .bind(new.base_offset)
                .bind(new.last_offset)
                .bind(new.record_count)
                .bind(&new.object_key)
                .bind(new.byte_start as i64)
                .bind(new.byte_length as i64)
                .bind(new.min_timestamp)
                .bind(new.max_timestamp)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("inserting merged segment"))?;
                tx.commit().await.map_err(Error::db("replacing segments"))?;
                Ok(true)
            }

            async fn referenced_objects(&self, keys: &[String]) -> Result<Vec<String>> {
                let mut out = Vec::new();
                for chunk in keys.chunks(INSERT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "SELECT DISTINCT object_key FROM segments WHERE object_key IN (",
                    );
                    let mut list = q.separated(", ");
                    for k in chunk {
                        list.push_bind(k.as_str());
                    }
                    q.push(")");
                    let rows = q
                        .build()
                        .fetch_all(&self.read)
                        .await
                        .map_err(Error::db("checking object references"))?;
                    out.extend(rows.iter().map(|r| r.get::<String, _>(0)));
                }
                Ok(out)
            }

            async fn forget_objects(&self, keys: &[String]) -> Result<()> {
                let mut tx = self.begin_write().await?;
                for chunk in keys.chunks(INSERT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "DELETE FROM objects WHERE object_key NOT IN \
                         (SELECT object_key FROM segments) AND object_key IN (",
                    );
                    let mut list = q.separated(", ");
                    for k in chunk {
                        list.push_bind(k.as_str());
                    }
                    q.push(")");
                    q.build()
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::db("forgetting objects"))?;
                }
                tx.commit().await.map_err(Error::db("forgetting objects"))
            }

            async fn partition_usage(&self, topic_id: TopicId) -> Result<Vec<PartitionUsage>> {
                let rows = sqlx::query(
                    "SELECT partition_id, COUNT(*), CAST(SUM(byte_length) AS BIGINT) FROM segments \
                     WHERE topic_id = $1 GROUP BY partition_id ORDER BY partition_id",
                )
                .bind(topic_id)
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("reading partition usage"))?;
                Ok(rows
                    .iter()
                    .map(|r| PartitionUsage {
                        partition: r.get::<i64, _>(0) as u32,
                        segments: r.get::<i64, _>(1) as u64,
                        bytes: r.get::<Option<i64>, _>(2).unwrap_or(0) as u64,
                    })
                    .collect())
            }
        }

        #[async_trait]
        impl AgentStore for $Store {
            async fn register_agent(&self, agent: AgentRegistration) -> Result<()> {
                for (field, value) in [
                    ("agent id", &agent.agent_id),
                    ("agent group", &agent.group),
                    ("agent address", &agent.address),
                ] {
                    if value.is_empty() {
                        return Err(Error::InvalidArgument {
                            field,
                            reason: "is empty".into(),
                        });
                    }
                }
                let mut tx = self.begin_write().await?;
                sqlx::query(concat!(
                    "INSERT INTO agents (agent_id, agent_group, address, zone, started_at_ms, \
                     heartbeat_at_ms) VALUES ($1, $2, $3, $4, ",
                    $now,
                    ", ",
                    $now,
                    ") ON CONFLICT (agent_id) DO UPDATE SET agent_group = excluded.agent_group, \
                     address = excluded.address, zone = excluded.zone, \
                     started_at_ms = excluded.started_at_ms, \
                     heartbeat_at_ms = excluded.heartbeat_at_ms"
                ))
                .bind(&agent.agent_id)
                .bind(&agent.group)
                .bind(&agent.address)
                .bind(&agent.zone)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("registering agent"))?;
                tx.commit().await.map_err(Error::db("registering agent"))
            }

            async fn heartbeat_agent(&self, agent_id: &str) -> Result<()> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(concat!(
                    "UPDATE agents SET heartbeat_at_ms = ",
                    $now,
                    " WHERE agent_id = $1"
                ))
                .bind(agent_id)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("recording heartbeat"))?;
                if done.rows_affected() == 0 {
                    return Err(Error::AgentNotFound(agent_id.to_string()));
                }
                tx.commit().await.map_err(Error::db("recording heartbeat"))
            }

            async fn deregister_agent(&self, agent_id: &str) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM agents WHERE agent_id = $1")
                    .bind(agent_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("deregistering agent"))?;
                tx.commit().await.map_err(Error::db("deregistering agent"))
            }

            async fn list_agents(&self, group: Option<&str>) -> Result<Vec<AgentInfo>> {
                let rows = sqlx::query(concat!(
                    "SELECT agent_id, agent_group, address, zone, started_at_ms, \
                     heartbeat_at_ms, ",
                    $now,
                    " - heartbeat_at_ms FROM agents WHERE $1 IS NULL OR agent_group = $1 \
                     ORDER BY agent_id"
                ))
                .bind(group)
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("listing agents"))?;
                Ok(rows
                    .into_iter()
                    .map(|row| AgentInfo {
                        agent_id: row.get(0),
                        group: row.get(1),
                        address: row.get(2),
                        zone: row.get(3),
                        started_at_ms: row.get(4),
                        last_heartbeat_ms: row.get(5),
                        heartbeat_age: Duration::from_millis(row.get::<i64, _>(6).max(0) as u64),
                    })
                    .collect())
            }
        }
    };
}

/// Batches of one producer and partition remembered to answer retries.
pub(crate) const SEQUENCES_KEPT: usize = 5;

/// A segment row to insert.
pub(crate) struct SegmentRow {
    pub topic_id: crate::TopicId,
    pub partition: u32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: i64,
    pub byte_start: u64,
    pub byte_length: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

/// A remembered batch of a producer in a partition.
pub(crate) struct SequenceRow {
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    /// Added by this commit (to be inserted).
    pub new: bool,
}

/// Current epochs of the producers seen in one commit (`None`: unknown id).
#[derive(Default)]
pub(crate) struct ProducerEpochs(pub std::collections::HashMap<i64, Option<i16>>);

pub(crate) enum Verdict {
    Accept,
    Duplicate(i64),
    Reject(crate::BatchRejected),
}

/// Checks one idempotent batch against the producer's current epoch and
/// its last batches in the partition (newest first).
pub(crate) fn check_sequence(
    p: &crate::ProducerBatch,
    current_epoch: Option<i16>,
    history: &[SequenceRow],
) -> Verdict {
    use crate::BatchRejected;
    // A retry of a batch already committed is answered with its offset even
    // when its epoch has since been fenced: nothing is written, and the
    // producer learns the batch's fate.
    if let Some(dup) = history.iter().find(|r| {
        r.epoch == p.epoch
            && r.first_sequence == p.base_sequence
            && r.last_sequence == p.last_sequence()
    }) {
        return Verdict::Duplicate(dup.base_offset);
    }
    let Some(current) = current_epoch.filter(|&e| p.epoch <= e) else {
        return Verdict::Reject(BatchRejected::UnknownProducer {
            producer_id: p.producer_id,
            epoch: p.epoch,
        });
    };
    if p.epoch < current {
        return Verdict::Reject(BatchRejected::ProducerFenced {
            producer_id: p.producer_id,
            epoch: p.epoch,
            current_epoch: current,
        });
    }
    let expected = match history.first() {
        Some(last) if last.epoch == p.epoch => crate::add_sequence(last.last_sequence, 1),
        _ => 0,
    };
    if p.base_sequence != expected {
        return Verdict::Reject(BatchRejected::OutOfOrderSequence {
            producer_id: p.producer_id,
            expected,
            received: p.base_sequence,
        });
    }
    Verdict::Accept
}

/// Gives offsets from `base` to the accepted batches of a chunk in order and
/// adds one segment row per run of adjacent accepted batches. Returns each
/// batch's base offset (`None` where not accepted).
pub(crate) fn place_batches(
    chunk: &crate::ChunkCommit,
    base: i64,
    accepted: &[bool],
    segments: &mut Vec<SegmentRow>,
) -> Vec<Option<i64>> {
    let mut outcomes = Vec::with_capacity(chunk.batches.len());
    let mut offset = base;
    let mut byte = chunk.byte_start;
    let mut run: Option<SegmentRow> = None;
    for (batch, &ok) in chunk.batches.iter().zip(accepted) {
        if ok {
            outcomes.push(Some(offset));
            let last = offset + batch.offset_span - 1;
            match &mut run {
                Some(r) => {
                    r.last_offset = last;
                    r.record_count += batch.record_count;
                    r.byte_length += batch.byte_length;
                    r.min_timestamp = r.min_timestamp.min(batch.min_timestamp);
                    r.max_timestamp = r.max_timestamp.max(batch.max_timestamp);
                }
                None => {
                    run = Some(SegmentRow {
                        topic_id: chunk.topic_id,
                        partition: chunk.partition,
                        base_offset: offset,
                        last_offset: last,
                        record_count: batch.record_count,
                        byte_start: byte,
                        byte_length: batch.byte_length,
                        min_timestamp: batch.min_timestamp,
                        max_timestamp: batch.max_timestamp,
                    })
                }
            }
            offset = last + 1;
        } else {
            outcomes.push(None);
            segments.extend(run.take());
        }
        byte += batch.byte_length;
    }
    segments.extend(run.take());
    outcomes
}

/// A group member row during a heartbeat.
pub(crate) struct MemberRow {
    pub member_epoch: i64,
    pub client_id: String,
    pub subscription: String,
    pub session_timeout_ms: i64,
    pub last_heartbeat_ms: i64,
    pub target: std::collections::BTreeSet<crate::TopicPartition>,
    pub owned: std::collections::BTreeSet<crate::TopicPartition>,
    /// Changed by this heartbeat (to be written back).
    pub dirty: bool,
}

/// A segment from a row of `segment_select!()`.
pub(crate) fn segment<R: sqlx::Row>(
    row: &R,
    topic_id: crate::TopicId,
    partition: u32,
) -> crate::Segment
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    crate::Segment {
        topic_id,
        partition,
        base_offset: row.get(0),
        last_offset: row.get(1),
        record_count: row.get(2),
        object_key: row.get(3),
        object_size: row.get::<i64, _>(4) as u64,
        byte_start: row.get::<i64, _>(5) as u64,
        byte_length: row.get::<i64, _>(6) as u64,
        min_timestamp: row.get(7),
        max_timestamp: row.get(8),
    }
}
