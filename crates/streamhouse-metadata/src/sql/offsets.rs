//! [`OffsetStore`] on SQL: committed consumer group offsets.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::backend::{Backend, sql};
use super::{SqlStore, Tx};
use crate::error::{Error, Result};
use crate::types::{CommittedOffset, TopicId};
use crate::{OffsetStore, validate_group_id};

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
    /// Stores a group's committed offset of one partition.
    pub(super) async fn upsert_offset(
        tx: &mut Tx<DB>,
        group: &str,
        topic_id: TopicId,
        partition: u32,
        offset: i64,
        metadata: Option<&str>,
    ) -> Result<()> {
        sqlx::query(sql::<DB>(
            "INSERT INTO group_offsets (group_id, topic_id, partition_id, committed_offset, \
             metadata, committed_at_ms) VALUES ($1, $2, $3, $4, $5, {now}) \
             ON CONFLICT (group_id, topic_id, partition_id) DO UPDATE SET \
             committed_offset = excluded.committed_offset, \
             metadata = excluded.metadata, committed_at_ms = excluded.committed_at_ms",
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
}

#[async_trait]
impl<DB: Backend> OffsetStore for SqlStore<DB>
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
            "SELECT t.name, g.partition_id, g.committed_offset, g.metadata, g.committed_at_ms \
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
