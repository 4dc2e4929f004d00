//! [`LogStore`] on SQL: the log commit that assigns offsets, partition
//! state and segment lookups.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, QueryBuilder, Row, Type};

use std::collections::{BTreeSet, HashMap};

use super::backend::{Backend, sql};
use super::idempotence::TransactionJoins;
use super::placement::{SegmentRow, place_batches};
use super::sequences::{Verdict, batch_outcomes, decide_batches};
use super::{GC_CLAIMED_UNCOMMITTED, INSERT_CHUNK, SqlStore, Tx};
use crate::LogStore;
use crate::error::{Error, Result};
use crate::types::{ChunkRejected, CommitOutcome, ObjectCommit, PartitionState, Segment, TopicId};

/// A partition as the commit addresses it: (topic id, partition).
pub(super) type PartitionKey = (TopicId, u32);

/// Keys (partitions, producers, producer-partition pairs) one statement of
/// the log commit names at most, keeping its text and bind count bounded.
pub(super) const KEYS_PER_STATEMENT: usize = 256;

/// The columns [`segment_at`] reads, in its order, from `segments s`
/// joined with `objects o`.
macro_rules! segment_columns {
    () => {
        "s.base_offset, s.last_offset, s.record_count, s.object_key, o.size_bytes, \
         s.byte_start, s.byte_length, s.min_timestamp, s.max_timestamp \
         FROM segments s JOIN objects o ON o.object_key = s.object_key"
    };
}

/// `SELECT` of the columns [`segment`] reads.
macro_rules! segment_select {
    () => {
        concat!("SELECT ", segment_columns!())
    };
}

/// How a failed `COMMIT` of an object commit is reported: a database error
/// answering it means the transaction rolled back; any other failure (the
/// connection lost after `COMMIT` was sent) leaves its outcome unknown.
fn commit_error(source: sqlx::Error) -> Error {
    let op = "committing object";
    match source {
        sqlx::Error::Database(_) => Error::Database { op, source },
        source => Error::CommitOutcomeUnknown { op, source },
    }
}

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
    /// The log commit of one object inside `tx` (see
    /// [`LogStore::commit_object`]).
    ///
    /// Every row the commit decides on is locked and read before anything
    /// is written: producer rows first, then partition rows, each in one
    /// global order, so that concurrent commits and transaction ends cannot
    /// deadlock. Each step is one statement for the whole object (per
    /// [`KEYS_PER_STATEMENT`] keys), not one per partition: on PostgreSQL
    /// each statement is a round trip, on SQLite a hand-off to its thread.
    pub(super) async fn commit_object_in(
        tx: &mut Tx<DB>,
        commit: &ObjectCommit,
    ) -> Result<CommitOutcome> {
        Self::record_object(tx, &commit.object_key, commit.size_bytes).await?;
        let producers = Self::lock_producers(tx, commit).await?;
        let locked = Self::lock_partitions(tx, commit).await?;
        let mut histories = Self::load_sequences(tx, commit).await?;
        let mut next = locked.clone();
        let mut order: Vec<usize> = (0..commit.chunks.len()).collect();
        order.sort_by_key(|&i| (commit.chunks[i].topic_id, commit.chunks[i].partition));
        let mut outcome: CommitOutcome = vec![Ok(Vec::new()); commit.chunks.len()];
        let mut segments = Vec::with_capacity(commit.chunks.len());
        let mut joins = TransactionJoins::default();
        for i in order {
            let chunk = &commit.chunks[i];
            let key = (chunk.topic_id, chunk.partition);
            let Some(first) = next.get_mut(&key) else {
                outcome[i] = Err(ChunkRejected::PartitionGone {
                    topic_id: chunk.topic_id,
                    partition: chunk.partition,
                });
                continue;
            };
            let history = histories.entry(key).or_default();
            let (verdicts, end) = decide_batches(chunk, *first, &producers, history);
            let accepted: Vec<bool> = verdicts
                .iter()
                .map(|v| matches!(v, Verdict::Accept))
                .collect();
            let placed = place_batches(chunk, *first, &accepted, &mut segments);
            joins.add(chunk, &placed);
            *first = end;
            outcome[i] = Ok(batch_outcomes(placed, verdicts));
        }
        let mut advanced: Vec<(PartitionKey, i64)> = next
            .into_iter()
            .filter(|(key, end)| locked.get(key) != Some(end))
            .collect();
        advanced.sort_unstable();
        Self::advance_partitions(tx, &advanced).await?;
        Self::join_transactions(tx, &joins).await?;
        Self::record_sequences(tx, &histories).await?;
        Self::insert_segments(tx, &commit.object_key, &segments).await?;
        Ok(outcome)
    }

    /// Reads the next offset of every partition `commit` writes to, in
    /// (topic, partition) order, locking each row for the rest of the
    /// transaction (`FOR UPDATE` on PostgreSQL; SQLite holds the database
    /// write lock). A partition without a row (its topic was deleted) is
    /// missing from the answer.
    async fn lock_partitions(
        tx: &mut Tx<DB>,
        commit: &ObjectCommit,
    ) -> Result<HashMap<PartitionKey, i64>> {
        let keys: BTreeSet<PartitionKey> = commit
            .chunks
            .iter()
            .map(|c| (c.topic_id, c.partition))
            .collect();
        let keys: Vec<PartitionKey> = keys.into_iter().collect();
        let mut next = HashMap::with_capacity(keys.len());
        for group in keys.chunks(KEYS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT topic_id, partition_id, next_offset FROM partitions WHERE ",
            );
            push_any(&mut q, group, push_partition);
            q.push(" ORDER BY topic_id, partition_id");
            q.push(DB::FOR_UPDATE);
            let rows = q
                .build()
                .fetch_all(&mut **tx)
                .await
                .map_err(Error::db("locking partitions"))?;
            for r in rows {
                next.insert((r.get(0), r.get::<i64, _>(1) as u32), r.get(2));
            }
        }
        Ok(next)
    }

    /// Sets the next offset of each partition in `advanced` (locked by
    /// [`Self::lock_partitions`]) in one statement per
    /// [`KEYS_PER_STATEMENT`] partitions.
    async fn advance_partitions(tx: &mut Tx<DB>, advanced: &[(PartitionKey, i64)]) -> Result<()> {
        for group in advanced.chunks(KEYS_PER_STATEMENT) {
            let mut q =
                QueryBuilder::<DB>::new("UPDATE partitions SET next_offset = v.column3 FROM (");
            q.push_values(group, |mut b, &((topic_id, partition), next)| {
                b.push_bind(topic_id)
                    .push_bind(i64::from(partition))
                    .push_bind(next);
            });
            q.push(
                ") AS v WHERE partitions.topic_id = v.column1 \
                 AND partitions.partition_id = v.column2",
            );
            q.build()
                .execute(&mut **tx)
                .await
                .map_err(Error::db("advancing partition offsets"))?;
        }
        Ok(())
    }

    /// Records a new object.
    pub(super) async fn record_object(
        tx: &mut Tx<DB>,
        object_key: &str,
        size_bytes: u64,
    ) -> Result<()> {
        sqlx::query(sql::<DB>(
            "INSERT INTO objects (object_key, size_bytes, created_at_ms) VALUES ($1, $2, {now})",
        ))
        .bind(object_key)
        .bind(size_bytes as i64)
        .execute(&mut **tx)
        .await
        .map_err(Error::db("recording object"))?;
        Ok(())
    }

    /// Inserts the segment rows of one object.
    async fn insert_segments(
        tx: &mut Tx<DB>,
        object_key: &str,
        segments: &[SegmentRow],
    ) -> Result<()> {
        for rows in segments.chunks(INSERT_CHUNK) {
            QueryBuilder::<DB>::new(
                "INSERT INTO segments (topic_id, partition_id, base_offset, last_offset, \
                 record_count, object_key, byte_start, byte_length, min_timestamp, \
                 max_timestamp) ",
            )
            .push_values(rows, |mut b, s| {
                b.push_bind(s.topic_id)
                    .push_bind(i64::from(s.partition))
                    .push_bind(s.base_offset)
                    .push_bind(s.last_offset)
                    .push_bind(s.record_count)
                    .push_bind(object_key)
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
        Ok(())
    }
}

/// Appends `(term) OR (term) …` to `q`, one term per key, written by
/// `term`.
pub(super) fn push_any<DB: Backend, K: Copy>(
    q: &mut QueryBuilder<DB>,
    keys: &[K],
    mut term: impl FnMut(&mut QueryBuilder<DB>, K),
) {
    for (i, &key) in keys.iter().enumerate() {
        q.push(if i == 0 { "(" } else { " OR (" });
        term(q, key);
        q.push(")");
    }
}

/// Appends the condition that a row is of partition `key`.
pub(super) fn push_partition<DB: Backend>(
    q: &mut QueryBuilder<DB>,
    (topic_id, partition): PartitionKey,
) where
    i64: Type<DB> + for<'a> Encode<'a, DB>,
{
    q.push("topic_id = ")
        .push_bind(topic_id)
        .push(" AND partition_id = ")
        .push_bind(i64::from(partition));
}

/// A segment from a row of `segment_select!()`.
fn segment<R: Row>(row: &R, topic_id: TopicId, partition: u32) -> Segment
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    segment_at(row, 0, topic_id, partition)
}

/// A segment from the `segment_columns!()` of a row, starting at column
/// `first`.
fn segment_at<R: Row>(row: &R, first: usize, topic_id: TopicId, partition: u32) -> Segment
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    Segment {
        topic_id,
        partition,
        base_offset: row.get(first),
        last_offset: row.get(first + 1),
        record_count: row.get(first + 2),
        object_key: row.get(first + 3),
        object_size: row.get::<i64, _>(first + 4) as u64,
        byte_start: row.get::<i64, _>(first + 5) as u64,
        byte_length: row.get::<i64, _>(first + 6) as u64,
        min_timestamp: row.get(first + 7),
        max_timestamp: row.get(first + 8),
    }
}

#[async_trait]
impl<DB: Backend> LogStore for SqlStore<DB>
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
    async fn commit_object(&self, commit: &ObjectCommit) -> Result<CommitOutcome> {
        let mut tx = self.begin_write().await?;
        let outcome = Self::commit_object_in(&mut tx, commit).await?;
        tx.commit().await.map_err(commit_error)?;
        Ok(outcome)
    }

    async fn settle_object(&self, object_key: &str) -> Result<Option<Vec<Segment>>> {
        // Inserting the key waits for any transaction still holding it
        // uncommitted (the commit in doubt) to end, then conflicts if it
        // committed. The insert is rolled back either way.
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(sql::<DB>(
            "INSERT INTO objects (object_key, size_bytes, created_at_ms) VALUES ($1, 0, {now}) \
             ON CONFLICT (object_key) DO NOTHING",
        ))
        .bind(object_key)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("settling object commit"))?;
        // A row the GC inserted to claim a never-committed key (gc_state 2)
        // is not a commit: that commit can no longer happen.
        let committed = DB::rows_affected(&inserted) == 0
            && sqlx::query_scalar::<_, i64>(
                "SELECT CAST(gc_state AS BIGINT) FROM objects WHERE object_key = $1",
            )
            .bind(object_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(Error::db("settling object commit"))?
                != Some(GC_CLAIMED_UNCOMMITTED);
        tx.rollback()
            .await
            .map_err(Error::db("settling object commit"))?;
        if !committed {
            return Ok(None);
        }
        let rows = sqlx::query(concat!(
            "SELECT s.topic_id, s.partition_id, ",
            segment_columns!(),
            " WHERE s.object_key = $1 ORDER BY s.topic_id, s.partition_id, s.base_offset"
        ))
        .bind(object_key)
        .fetch_all(&self.read)
        .await
        .map_err(Error::db("reading object segments"))?;
        Ok(Some(
            rows.iter()
                .map(|row| {
                    let topic_id: TopicId = row.get(0);
                    let partition = row.get::<i64, _>(1) as u32;
                    segment_at(row, 2, topic_id, partition)
                })
                .collect(),
        ))
    }

    async fn partition_state(&self, topic_id: TopicId, partition: u32) -> Result<PartitionState> {
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
        Ok(rows
            .iter()
            .map(|row| segment(row, topic_id, partition))
            .collect())
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
        Ok(row.map(|row| segment(&row, topic_id, partition)))
    }
}
