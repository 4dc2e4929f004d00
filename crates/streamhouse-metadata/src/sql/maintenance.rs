//! [`MaintenanceStore`] on SQL: job leases, retention and log start
//! advances (DeleteRecords), segment replacement,
//! and the object references the object GC checks and its claims: an
//! object is deleted only after a committed claim on its key, which every
//! later commit of that key runs into (`objects.object_key` is unique and
//! commits insert it with a plain INSERT).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, QueryBuilder, Row, Type};

use super::backend::{Backend, sql};
use super::{INSERT_CHUNK, SqlStore, Tx};
use crate::MaintenanceStore;
use crate::error::{Error, Result};
use crate::types::{PartitionUsage, Segment, TopicId};

/// What retention needs to know of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RetainedSegment {
    base_offset: i64,
    last_offset: i64,
    byte_length: i64,
    max_timestamp: i64,
}

/// How many of a partition's oldest segments (in offset order) retention
/// drops: while all their records are older than `min_timestamp`, then
/// while the partition's bytes exceed `max_bytes`, and never one reaching
/// the last stable offset `stable`.
fn segments_to_drop(
    segments: &[RetainedSegment],
    stable: i64,
    min_timestamp: Option<i64>,
    max_bytes: Option<i64>,
) -> usize {
    let mut total: i64 = segments.iter().map(|s| s.byte_length).sum();
    let mut drop = 0;
    for s in segments {
        if s.last_offset >= stable {
            break;
        }
        let expired = min_timestamp.is_some_and(|t| s.max_timestamp < t);
        let oversize = max_bytes.is_some_and(|m| total > m);
        if !(expired || oversize) {
            break;
        }
        total -= s.byte_length;
        drop += 1;
    }
    drop
}

/// Appends the keys of `objects` as a bound list and the closing `)`.
fn push_keys<'a, DB: Backend>(q: &mut QueryBuilder<DB>, objects: &'a [(String, u64)])
where
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut list = q.separated(", ");
    for (key, _) in objects {
        list.push_bind(key.as_str());
    }
    q.push(")");
}

impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB>,
{
    /// Locks a partition's row for a log start change and reads its log
    /// start, next offset and last stable offset (the first offset of its
    /// oldest open transaction, else the next offset).
    async fn lock_for_log_start(
        tx: &mut Tx<DB>,
        topic_id: TopicId,
        partition: u32,
    ) -> Result<(i64, i64, i64)> {
        let row = sqlx::query(
            "UPDATE partitions SET log_start_offset = log_start_offset \
             WHERE topic_id = $1 AND partition_id = $2 \
             RETURNING log_start_offset, next_offset, \
               COALESCE((SELECT MIN(t.first_offset) FROM transaction_partitions t \
                         WHERE t.topic_id = $1 AND t.partition_id = $2), next_offset)",
        )
        .bind(topic_id)
        .bind(i64::from(partition))
        .fetch_optional(&mut **tx)
        .await
        .map_err(Error::db("locking partition"))?
        .ok_or(Error::PartitionIdNotFound {
            topic_id,
            partition,
        })?;
        Ok((row.get(0), row.get(1), row.get(2)))
    }

    /// Moves a locked partition's log start up to `new_start`: drops the
    /// segments and aborted ranges wholly below it.
    async fn set_log_start(
        tx: &mut Tx<DB>,
        topic_id: TopicId,
        partition: u32,
        new_start: i64,
    ) -> Result<()> {
        for (statement, op) in [
            (
                "DELETE FROM segments WHERE topic_id = $1 AND partition_id = $2 \
                 AND last_offset < $3",
                "deleting segments",
            ),
            (
                "UPDATE partitions SET log_start_offset = $3 \
                 WHERE topic_id = $1 AND partition_id = $2 AND log_start_offset < $3",
                "advancing log start",
            ),
            (
                "DELETE FROM aborted_transactions WHERE topic_id = $1 AND partition_id = $2 \
                 AND last_offset < $3",
                "dropping old aborted ranges",
            ),
        ] {
            sqlx::query(statement)
                .bind(topic_id)
                .bind(i64::from(partition))
                .bind(new_start)
                .execute(&mut **tx)
                .await
                .map_err(Error::db(op))?;
        }
        Ok(())
    }
}

#[async_trait]
impl<DB: Backend> MaintenanceStore for SqlStore<DB>
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
    async fn try_lease(&self, job: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query(sql::<DB>(
            "INSERT INTO job_leases (job, holder, expires_at_ms) VALUES ($1, $2, {now} + $3) \
             ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
             expires_at_ms = excluded.expires_at_ms \
             WHERE job_leases.holder = excluded.holder OR job_leases.expires_at_ms < {now}",
        ))
        .bind(job)
        .bind(holder)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("taking job lease"))?;
        let current: String = sqlx::query_scalar("SELECT holder FROM job_leases WHERE job = $1")
            .bind(job)
            .fetch_one(&mut *tx)
            .await
            .map_err(Error::db("reading job lease"))?;
        tx.commit().await.map_err(Error::db("taking job lease"))?;
        Ok(current == holder)
    }

    async fn lease_holder(&self, job: &str) -> Result<Option<String>> {
        sqlx::query_scalar(sql::<DB>(
            "SELECT holder FROM job_leases WHERE job = $1 AND expires_at_ms >= {now}",
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
        let (log_start, next, stable) =
            Self::lock_for_log_start(&mut tx, topic_id, partition).await?;
        let rows = sqlx::query(
            "SELECT base_offset, last_offset, byte_length, max_timestamp FROM segments \
             WHERE topic_id = $1 AND partition_id = $2 ORDER BY base_offset",
        )
        .bind(topic_id)
        .bind(p)
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::db("reading segments"))?;
        let segments: Vec<RetainedSegment> = rows
            .iter()
            .map(|r| RetainedSegment {
                base_offset: r.get(0),
                last_offset: r.get(1),
                byte_length: r.get(2),
                max_timestamp: r.get(3),
            })
            .collect();
        let drop = segments_to_drop(&segments, stable, min_timestamp, max_bytes);
        if drop == 0 {
            return Ok((0, log_start));
        }
        let new_start = segments
            .get(drop)
            .map_or(next, |s| s.base_offset)
            .max(log_start);
        Self::set_log_start(&mut tx, topic_id, partition, new_start).await?;
        tx.commit().await.map_err(Error::db("applying retention"))?;
        Ok((drop as u64, new_start))
    }

    async fn advance_log_start(
        &self,
        topic_id: TopicId,
        partition: u32,
        offset: Option<i64>,
    ) -> Result<i64> {
        if let Some(o) = offset.filter(|o| *o < 0) {
            return Err(Error::InvalidArgument {
                field: "offset",
                reason: format!("{o} is negative"),
            });
        }
        let mut tx = self.begin_write().await?;
        let (log_start, next, stable) =
            Self::lock_for_log_start(&mut tx, topic_id, partition).await?;
        let target = offset.unwrap_or(stable);
        if target > stable {
            return Err(Error::LogStartOutOfRange {
                topic_id,
                partition,
                offset: target,
                last_stable_offset: stable,
                high_watermark: next,
            });
        }
        if target <= log_start {
            return Ok(log_start);
        }
        Self::set_log_start(&mut tx, topic_id, partition, target).await?;
        tx.commit()
            .await
            .map_err(Error::db("advancing log start"))?;
        Ok(target)
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
        let present: Vec<(i64, i64, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let expected: Vec<(i64, i64, String)> = old
            .iter()
            .map(|s| (s.base_offset, s.last_offset, s.object_key.clone()))
            .collect();
        if present != expected {
            return Ok(false);
        }
        Self::record_object(&mut tx, &new.object_key, new.object_size).await?;
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
            let mut q = QueryBuilder::<DB>::new(
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

    async fn claim_objects(&self, objects: &[(String, u64)]) -> Result<Vec<String>> {
        let mut objects = objects.to_vec();
        // One key order for every claimer, so two never deadlock.
        objects.sort();
        objects.dedup_by(|a, b| a.0 == b.0);
        let mut claimed = Vec::new();
        for chunk in objects.chunks(INSERT_CHUNK) {
            let mut tx = self.begin_write().await?;
            // Keys no commit recorded get a claim that any later commit of
            // the key runs into. On PostgreSQL a commit recording one of
            // these keys right now makes this wait for it, then skip it.
            let mut insert = QueryBuilder::<DB>::new(
                "INSERT INTO objects (object_key, size_bytes, created_at_ms, gc_state) ",
            );
            insert.push_values(chunk, |mut b, (key, size)| {
                b.push_bind(key.as_str())
                    .push_bind(*size as i64)
                    .push(DB::NOW)
                    .push("2");
            });
            insert.push(" ON CONFLICT (object_key) DO NOTHING");
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(Error::db("claiming unrecorded objects"))?;
            // Committed objects are claimed once no segment references them.
            let mut update = QueryBuilder::<DB>::new(
                "UPDATE objects SET gc_state = 1 WHERE gc_state = 0 AND NOT EXISTS \
                 (SELECT 1 FROM segments s WHERE s.object_key = objects.object_key) \
                 AND object_key IN (",
            );
            push_keys(&mut update, chunk);
            update
                .build()
                .execute(&mut *tx)
                .await
                .map_err(Error::db("claiming unreferenced objects"))?;
            let mut select = QueryBuilder::<DB>::new(
                "SELECT object_key FROM objects WHERE gc_state <> 0 AND object_key IN (",
            );
            push_keys(&mut select, chunk);
            let rows = select
                .build()
                .fetch_all(&mut *tx)
                .await
                .map_err(Error::db("reading claimed objects"))?;
            tx.commit().await.map_err(Error::db("claiming objects"))?;
            claimed.extend(rows.iter().map(|r| r.get::<String, _>(0)));
        }
        Ok(claimed)
    }

    async fn forget_objects(&self, keys: &[String]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for chunk in keys.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<DB>::new(
                "DELETE FROM objects WHERE gc_state <> 2 AND NOT EXISTS \
                 (SELECT 1 FROM segments s WHERE s.object_key = objects.object_key) \
                 AND object_key IN (",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Segments of 10 offsets and 100 bytes each, the n-th with records up
    /// to timestamp n.
    fn segments(n: i64) -> Vec<RetainedSegment> {
        (0..n)
            .map(|i| RetainedSegment {
                base_offset: i * 10,
                last_offset: i * 10 + 9,
                byte_length: 100,
                max_timestamp: i,
            })
            .collect()
    }

    #[test]
    fn old_segments_are_dropped_by_time() {
        let s = segments(5);
        assert_eq!(segments_to_drop(&s, 50, Some(3), None), 3);
        assert_eq!(segments_to_drop(&s, 50, Some(0), None), 0);
        assert_eq!(segments_to_drop(&s, 50, None, None), 0);
    }

    #[test]
    fn segments_are_dropped_down_to_the_byte_limit() {
        let s = segments(5);
        assert_eq!(segments_to_drop(&s, 50, None, Some(250)), 3);
        assert_eq!(segments_to_drop(&s, 50, None, Some(500)), 0);
        // Time first, then size: either reason drops the oldest segment.
        assert_eq!(segments_to_drop(&s, 50, Some(1), Some(400)), 1);
        assert_eq!(segments_to_drop(&s, 50, Some(2), Some(100)), 4);
    }

    #[test]
    fn nothing_at_or_past_the_last_stable_offset_is_dropped() {
        let s = segments(5);
        // An open transaction from offset 25 holds segment 2 and later.
        assert_eq!(segments_to_drop(&s, 25, Some(10), Some(0)), 2);
        assert_eq!(segments_to_drop(&s, 0, Some(10), Some(0)), 0);
    }
}
