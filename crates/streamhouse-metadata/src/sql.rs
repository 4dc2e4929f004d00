//! The SQL of every metadata operation, written once for both backends.
//!
//! SQLite and PostgreSQL run the same `$1…$n` statements; what differs is
//! given by the backend: its sqlx database type, how it begins a write
//! transaction (`begin_write`), and its clock expression (`$now`, epoch
//! milliseconds, so leases and heartbeats use the database's clock rather
//! than each machine's). The macro expands the trait implementations for a
//! backend struct that has `write` and `read` pools.

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
                sqlx::query(concat!(
                    "INSERT INTO objects (object_key, size_bytes, created_at_ms) VALUES ($1, $2, ",
                    $now,
                    ")"
                ))
                .bind(&commit.object_key)
                .bind(commit.size_bytes as i64)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("recording object"))?;

                // Lock partition rows in one global order so that concurrent
                // commits cannot deadlock.
                let mut order: Vec<usize> = (0..commit.chunks.len()).collect();
                order.sort_by_key(|&i| (commit.chunks[i].topic_id, commit.chunks[i].partition));
                let mut outcome: CommitOutcome = vec![Ok(Vec::new()); commit.chunks.len()];
                let mut segments = Vec::with_capacity(commit.chunks.len());
                for i in order {
                    let chunk = &commit.chunks[i];
                    let span: i64 = chunk.batches.iter().map(|b| b.offset_span).sum();
                    let next: Option<i64> = sqlx::query_scalar(
                        "UPDATE partitions SET next_offset = next_offset + $1 \
                         WHERE topic_id = $2 AND partition_id = $3 RETURNING next_offset",
                    )
                    .bind(span)
                    .bind(chunk.topic_id)
                    .bind(i64::from(chunk.partition))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Error::db("advancing partition offset"))?;
                    let Some(next) = next else {
                        outcome[i] = Err(ChunkRejected::PartitionGone {
                            topic_id: chunk.topic_id,
                            partition: chunk.partition,
                        });
                        continue;
                    };
                    let base = next - span;
                    let mut offset = base;
                    let bases = chunk
                        .batches
                        .iter()
                        .map(|b| {
                            let this = offset;
                            offset += b.offset_span;
                            this
                        })
                        .collect();
                    outcome[i] = Ok(bases);
                    if span > 0 {
                        segments.push((chunk, base, next - 1));
                    }
                }
                for rows in segments.chunks(INSERT_CHUNK) {
                    sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO segments (topic_id, partition_id, base_offset, last_offset, \
                         record_count, object_key, byte_start, byte_length, min_timestamp, \
                         max_timestamp) ",
                    )
                    .push_values(rows, |mut b, (chunk, base, last)| {
                        let bytes: u64 = chunk.batches.iter().map(|b| b.byte_length).sum();
                        let records: i64 = chunk.batches.iter().map(|b| b.record_count).sum();
                        let min_ts = chunk.batches.iter().map(|b| b.min_timestamp).min();
                        let max_ts = chunk.batches.iter().map(|b| b.max_timestamp).max();
                        b.push_bind(chunk.topic_id)
                            .push_bind(i64::from(chunk.partition))
                            .push_bind(*base)
                            .push_bind(*last)
                            .push_bind(records)
                            .push_bind(commit.object_key.as_str())
                            .push_bind(chunk.byte_start as i64)
                            .push_bind(bytes as i64)
                            .push_bind(min_ts.unwrap_or(-1))
                            .push_bind(max_ts.unwrap_or(-1));
                    })
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("inserting segments"))?;
                }
                tx.commit().await.map_err(Error::db("committing object"))?;
                Ok(outcome)
            }

            async fn partition_state(
                &self,
                topic_id: TopicId,
                partition: u32,
            ) -> Result<PartitionState> {
                let row = sqlx::query(
                    "SELECT log_start_offset, next_offset FROM partitions \
                     WHERE topic_id = $1 AND partition_id = $2",
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
                let rows = sqlx::query(
                    "SELECT s.base_offset, s.last_offset, s.record_count, s.object_key, \
                            o.size_bytes, s.byte_start, s.byte_length, s.min_timestamp, \
                            s.max_timestamp \
                     FROM segments s JOIN objects o ON o.object_key = s.object_key \
                     WHERE s.topic_id = $1 AND s.partition_id = $2 AND s.base_offset >= \
                        COALESCE((SELECT MAX(base_offset) FROM segments \
                                  WHERE topic_id = $1 AND partition_id = $2 \
                                    AND base_offset <= $3), $3) \
                       AND s.last_offset >= $3 \
                     ORDER BY s.base_offset LIMIT $4",
                )
                .bind(topic_id)
                .bind(i64::from(partition))
                .bind(from_offset)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await
                .map_err(Error::db("reading segments"))?;
                Ok(rows
                    .into_iter()
                    .map(|row| Segment {
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
                    })
                    .collect())
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
                .execute(&mut *tx)
                .await
                .map_err(Error::db("committing offset"))?;
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
