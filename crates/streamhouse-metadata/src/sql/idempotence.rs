//! The log commit of a chunk holding batches of idempotent (and
//! transactional) producers.

use std::collections::BTreeSet;
use std::collections::hash_map::Entry;

use sqlx::{ColumnIndex, Decode, Encode, Executor, QueryBuilder, Row, Type};

use super::backend::{Backend, sql};
use super::log::ChunkOutcome;
use super::placement::{SegmentRow, place_batches};
use super::sequences::{
    ProducerEpochs, ProducerRow, SEQUENCES_KEPT, SequenceHistory, SequenceRow, Verdict,
    batch_outcomes, decide_batches,
};
use super::{SqlStore, Tx};
use crate::error::{Error, Result};
use crate::types::{ChunkCommit, ChunkRejected, ObjectCommit, TopicId};

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
    /// Commits a chunk holding batches of idempotent producers: locks the
    /// partition row, checks every batch against the producer's epoch
    /// (read and locked by [`Self::lock_producers`] before any partition)
    /// and last sequences, commits the accepted ones and records their
    /// sequences.
    pub(super) async fn commit_idempotent_chunk(
        tx: &mut Tx<DB>,
        chunk: &ChunkCommit,
        epochs: &ProducerEpochs,
        segments: &mut Vec<SegmentRow>,
    ) -> Result<ChunkOutcome> {
        let (topic_id, partition) = (chunk.topic_id, chunk.partition);
        let next: Option<i64> = sqlx::query_scalar(
            "UPDATE partitions SET next_offset = next_offset \
             WHERE topic_id = $1 AND partition_id = $2 RETURNING next_offset",
        )
        .bind(topic_id)
        .bind(i64::from(partition))
        .fetch_optional(&mut **tx)
        .await
        .map_err(Error::db("locking partition"))?;
        let Some(next) = next else {
            return Ok(Err(ChunkRejected::PartitionGone {
                topic_id,
                partition,
            }));
        };
        let mut history = Self::load_sequences(tx, chunk).await?;
        let (verdicts, offset) = decide_batches(chunk, next, epochs, &mut history);
        sqlx::query(
            "UPDATE partitions SET next_offset = $1 WHERE topic_id = $2 AND partition_id = $3",
        )
        .bind(offset)
        .bind(topic_id)
        .bind(i64::from(partition))
        .execute(&mut **tx)
        .await
        .map_err(Error::db("advancing partition offset"))?;
        let accepted: Vec<bool> = verdicts
            .iter()
            .map(|v| matches!(v, Verdict::Accept))
            .collect();
        let placed = place_batches(chunk, next, &accepted, segments);
        Self::join_transactions(tx, chunk, &placed).await?;
        let outcomes = batch_outcomes(placed, verdicts);
        Self::record_sequences(tx, topic_id, partition, &history).await?;
        Ok(Ok(outcomes))
    }

    /// Reads the current epoch of every producer with a batch in `commit`,
    /// in producer id order, locking each producer row for the rest of the
    /// transaction (`FOR SHARE` on PostgreSQL; SQLite holds the database
    /// write lock). Ending a transaction or bumping an epoch updates that
    /// row, so it waits for this commit (and then sees the partitions this
    /// commit adds to the transaction), or this commit waits for it (and
    /// sees the new epoch). Producers are locked before any partition row,
    /// as ending a transaction does, so the two cannot deadlock.
    pub(super) async fn lock_producers(
        tx: &mut Tx<DB>,
        commit: &ObjectCommit,
    ) -> Result<ProducerEpochs> {
        let ids: BTreeSet<i64> = commit
            .chunks
            .iter()
            .flat_map(|c| c.batches.iter().filter_map(|b| b.producer))
            .map(|p| p.producer_id)
            .collect();
        let mut epochs = ProducerEpochs::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(sql::<DB>(
                "SELECT epoch, transactional_id IS NOT NULL FROM producers \
                 WHERE producer_id = $1{for_share}",
            ))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(Error::db("reading producer epoch"))?;
            epochs.insert(
                id,
                row.map(|r| ProducerRow {
                    epoch: r.get::<i64, _>(0) as i16,
                    transactional: r.get(1),
                }),
            );
        }
        Ok(epochs)
    }

    /// Reads the last batches in the chunk's partition of every producer in
    /// the chunk, newest first.
    async fn load_sequences(tx: &mut Tx<DB>, chunk: &ChunkCommit) -> Result<SequenceHistory> {
        let mut history = SequenceHistory::new();
        for p in chunk.batches.iter().filter_map(|b| b.producer) {
            if let Entry::Vacant(slot) = history.entry(p.producer_id) {
                let rows = sqlx::query(
                    "SELECT producer_epoch, first_sequence, last_sequence, base_offset \
                     FROM producer_batches WHERE producer_id = $1 AND topic_id = $2 \
                     AND partition_id = $3 ORDER BY base_offset DESC LIMIT $4",
                )
                .bind(p.producer_id)
                .bind(chunk.topic_id)
                .bind(i64::from(chunk.partition))
                .bind(SEQUENCES_KEPT as i64)
                .fetch_all(&mut **tx)
                .await
                .map_err(Error::db("reading producer sequences"))?;
                let rows = rows
                    .iter()
                    .map(|r| SequenceRow {
                        epoch: r.get::<i64, _>(0) as i16,
                        first_sequence: r.get::<i64, _>(1) as i32,
                        last_sequence: r.get::<i64, _>(2) as i32,
                        base_offset: r.get(3),
                        new: false,
                    })
                    .collect();
                slot.insert(rows);
            }
        }
        Ok(history)
    }

    /// Accepted transactional batches join their producer's open
    /// transaction (opening it if needed); the first offset of a
    /// transaction in a partition holds the partition's last stable offset.
    /// Only a producer's first batch in the chunk can change anything (the
    /// others would meet the rows it wrote), so it alone is recorded.
    async fn join_transactions(
        tx: &mut Tx<DB>,
        chunk: &ChunkCommit,
        placed: &[Option<i64>],
    ) -> Result<()> {
        let mut joined = std::collections::HashSet::new();
        for (batch, base) in chunk.batches.iter().zip(placed) {
            let (Some(p), Some(base)) = (batch.producer, base) else {
                continue;
            };
            if !p.transactional || !joined.insert(p.producer_id) {
                continue;
            }
            sqlx::query(sql::<DB>(
                "INSERT INTO open_transactions (producer_id, producer_epoch, started_at_ms) \
                 VALUES ($1, $2, {now}) ON CONFLICT (producer_id) DO NOTHING",
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
            .bind(chunk.topic_id)
            .bind(i64::from(chunk.partition))
            .bind(*base)
            .execute(&mut **tx)
            .await
            .map_err(Error::db("recording transaction partition"))?;
        }
        Ok(())
    }

    /// Inserts the batches this commit accepted into each producer's
    /// remembered batches of the partition and forgets all but the last
    /// [`SEQUENCES_KEPT`] (the newest, holding the last committed sequence,
    /// is always kept).
    async fn record_sequences(
        tx: &mut Tx<DB>,
        topic_id: TopicId,
        partition: u32,
        history: &SequenceHistory,
    ) -> Result<()> {
        let partition = i64::from(partition);
        for (&producer_id, rows) in history {
            let new: Vec<_> = rows.iter().filter(|r| r.new).collect();
            if new.is_empty() {
                continue;
            }
            QueryBuilder::<DB>::new(
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
            if let Some(oldest_kept) = rows.get(SEQUENCES_KEPT - 1) {
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
        Ok(())
    }
}
