//! [`TopicStore`] on SQL, and resolving a topic name inside a transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, QueryBuilder, Row, Type};

use super::backend::{Backend, sql};
use super::{INSERT_CHUNK, SqlStore, Tx};
use crate::TopicStore;
use crate::error::{Error, Result};
use crate::types::{Topic, TopicAlter, TopicConfig, TopicId};

/// Config entries by topic.
type TopicConfigs = HashMap<TopicId, HashMap<String, String>>;

impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'s> &'s str: ColumnIndex<DB::Row> + Type<DB> + Encode<'s, DB>,
    i64: Type<DB> + for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB>,
    bool: Type<DB> + for<'a> Decode<'a, DB>,
    String: Type<DB> + for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB>,
    Option<i64>: for<'a> Encode<'a, DB>,
    Option<String>: for<'a> Encode<'a, DB>,
    for<'s> Option<&'s str>: Encode<'s, DB>,
{
    /// Config entries of one topic, or of all topics with `None`.
    async fn topic_configs(&self, topic_id: Option<TopicId>) -> Result<TopicConfigs> {
        let rows = sqlx::query(
            "SELECT topic_id, key, value FROM topic_configs WHERE $1 IS NULL OR topic_id = $1",
        )
        .bind(topic_id)
        .fetch_all(&self.read)
        .await
        .map_err(Error::db("reading topic configs"))?;
        let mut out = TopicConfigs::new();
        for row in rows {
            out.entry(row.get(0))
                .or_default()
                .insert(row.get(1), row.get(2));
        }
        Ok(out)
    }

    /// A topic from a `SELECT * FROM topics` row, taking its config entries
    /// out of `configs`.
    fn topic_from_row(row: &DB::Row, configs: &mut TopicConfigs) -> Topic {
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

    /// Resolves a topic name to its id inside `tx`, checking the partition
    /// exists.
    pub(super) async fn topic_partition(
        tx: &mut Tx<DB>,
        topic: &str,
        partition: u32,
    ) -> Result<TopicId> {
        let row = sqlx::query("SELECT topic_id, partition_count FROM topics WHERE name = $1")
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

    /// Inserts a topic's config entries.
    async fn insert_topic_configs(
        tx: &mut Tx<DB>,
        topic_id: TopicId,
        config: &HashMap<String, String>,
        op: &'static str,
    ) -> Result<()> {
        let entries: Vec<_> = config.iter().collect();
        for rows in entries.chunks(INSERT_CHUNK) {
            QueryBuilder::<DB>::new("INSERT INTO topic_configs (topic_id, key, value) ")
                .push_values(rows, |mut b, (k, v)| {
                    b.push_bind(topic_id)
                        .push_bind(k.as_str())
                        .push_bind(v.as_str());
                })
                .build()
                .execute(&mut **tx)
                .await
                .map_err(Error::db(op))?;
        }
        Ok(())
    }

    /// Inserts the partitions `from..to` of a topic (skipping existing ones
    /// when `skip_existing`).
    async fn insert_partitions(
        tx: &mut Tx<DB>,
        topic_id: TopicId,
        partitions: std::ops::Range<u32>,
        skip_existing: bool,
        op: &'static str,
    ) -> Result<()> {
        let ids: Vec<i64> = (i64::from(partitions.start)..i64::from(partitions.end)).collect();
        for rows in ids.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<DB>::new("INSERT INTO partitions (topic_id, partition_id) ");
            q.push_values(rows, |mut b, p| {
                b.push_bind(topic_id).push_bind(*p);
            });
            if skip_existing {
                q.push(" ON CONFLICT DO NOTHING");
            }
            q.build().execute(&mut **tx).await.map_err(Error::db(op))?;
        }
        Ok(())
    }
}

#[async_trait]
impl<DB: Backend> TopicStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'s> &'s str: ColumnIndex<DB::Row> + Type<DB> + Encode<'s, DB>,
    i64: Type<DB> + for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB>,
    bool: Type<DB> + for<'a> Decode<'a, DB>,
    String: Type<DB> + for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB>,
    Option<i64>: for<'a> Encode<'a, DB>,
    Option<String>: for<'a> Encode<'a, DB>,
    for<'s> Option<&'s str>: Encode<'s, DB>,
{
    async fn create_topic(&self, config: TopicConfig) -> Result<Topic> {
        config.validate()?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sql::<DB>(
            "INSERT INTO topics (name, partition_count, retention_ms, created_at_ms) \
             VALUES ($1, $2, $3, {now}) RETURNING topic_id, created_at_ms",
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
        Self::insert_topic_configs(&mut tx, id, &config.config, "storing topic config").await?;
        Self::insert_partitions(
            &mut tx,
            id,
            0..config.partition_count,
            false,
            "creating partitions",
        )
        .await?;
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
        if DB::rows_affected(&done) == 0 {
            return Err(Error::TopicNotFound(name.to_string()));
        }
        Self::insert_partitions(
            &mut tx,
            current.id,
            current.partition_count..wanted.partition_count,
            true,
            "adding partitions",
        )
        .await?;
        sqlx::query("DELETE FROM topic_configs WHERE topic_id = $1")
            .bind(current.id)
            .execute(&mut *tx)
            .await
            .map_err(Error::db("altering topic config"))?;
        Self::insert_topic_configs(&mut tx, current.id, &wanted.config, "altering topic config")
            .await?;
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
        if DB::rows_affected(&done) == 0 {
            return Err(Error::TopicNotFound(name.to_string()));
        }
        tx.commit()
            .await
            .map_err(Error::db("committing topic deletion"))
    }
}
