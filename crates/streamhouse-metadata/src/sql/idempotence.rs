//! What the log commit reads and writes for batches of idempotent (and
//! transactional) producers: their epochs, their last sequences per
//! partition, and the open transactions they join; each in a statement
//! or two for the whole commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::{ColumnIndex, Decode, Encode, Executor, QueryBuilder, Row, Type};

use super::backend::Backend;
use super::log::{KEYS_PER_STATEMENT, PartitionKey, push_any, push_partition};
use super::sequences::{ProducerEpochs, ProducerRow, SEQUENCES_KEPT, SequenceHistory, SequenceRow};
use super::{INSERT_CHUNK, SqlStore, Tx};
use crate::error::{Error, Result};
use crate::types::{ChunkCommit, ObjectCommit, TopicId};

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
        let ids: Vec<i64> = ids.into_iter().collect();
        let mut epochs: ProducerEpochs = ids.iter().map(|&id| (id, None)).collect();
        for group in ids.chunks(KEYS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT producer_id, epoch, transactional_id IS NOT NULL FROM producers \
                 WHERE producer_id IN (",
            );
            let mut list = q.separated(", ");
            for &id in group {
                list.push_bind(id);
            }
            q.push(") ORDER BY producer_id");
            q.push(DB::FOR_SHARE);
            let rows = q
                .build()
                .fetch_all(&mut **tx)
                .await
                .map_err(Error::db("reading producer epochs"))?;
            for r in rows {
                epochs.insert(
                    r.get(0),
                    Some(ProducerRow {
                        epoch: r.get::<i64, _>(1) as i16,
                        transactional: r.get(2),
                    }),
                );
            }
        }
        Ok(epochs)
    }

    /// Reads, in one statement per [`KEYS_PER_STATEMENT`] pairs, the last
    /// [`SEQUENCES_KEPT`] batches (newest first) of every producer in every
    /// partition it has batches for in `commit`. Every such pair gets a
    /// history, empty when the producer never wrote there.
    pub(super) async fn load_sequences(
        tx: &mut Tx<DB>,
        commit: &ObjectCommit,
    ) -> Result<HashMap<PartitionKey, SequenceHistory>> {
        let pairs: BTreeSet<(i64, TopicId, u32)> = commit
            .chunks
            .iter()
            .flat_map(|c| {
                c.batches
                    .iter()
                    .filter_map(|b| b.producer)
                    .map(|p| (p.producer_id, c.topic_id, c.partition))
            })
            .collect();
        let pairs: Vec<_> = pairs.into_iter().collect();
        let mut histories: HashMap<PartitionKey, SequenceHistory> = HashMap::new();
        for &(producer_id, topic_id, partition) in &pairs {
            histories
                .entry((topic_id, partition))
                .or_default()
                .insert(producer_id, Vec::new());
        }
        for group in pairs.chunks(KEYS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT producer_id, topic_id, partition_id, producer_epoch, first_sequence, \
                 last_sequence, base_offset FROM producer_batches WHERE ",
            );
            push_any(&mut q, group, |q, (producer_id, topic_id, partition)| {
                q.push("producer_id = ")
                    .push_bind(producer_id)
                    .push(" AND ");
                push_partition(q, (topic_id, partition));
            });
            q.push(" ORDER BY producer_id, topic_id, partition_id, base_offset DESC");
            let rows = q
                .build()
                .fetch_all(&mut **tx)
                .await
                .map_err(Error::db("reading producer sequences"))?;
            for r in rows {
                let key = (r.get::<i64, _>(1), r.get::<i64, _>(2) as u32);
                let producer_id: i64 = r.get(0);
                let Some(rows) = histories
                    .get_mut(&key)
                    .and_then(|h| h.get_mut(&producer_id))
                else {
                    continue;
                };
                if rows.len() < SEQUENCES_KEPT {
                    rows.push(SequenceRow {
                        epoch: r.get::<i64, _>(3) as i16,
                        first_sequence: r.get::<i64, _>(4) as i32,
                        last_sequence: r.get::<i64, _>(5) as i32,
                        base_offset: r.get(6),
                        new: false,
                    });
                }
            }
        }
        Ok(histories)
    }

    /// Accepted transactional batches join their producer's open
    /// transaction (opening it if needed); the first offset of a
    /// transaction in a partition holds the partition's last stable offset.
    /// One statement per table (per [`INSERT_CHUNK`] rows), in key order.
    pub(super) async fn join_transactions(tx: &mut Tx<DB>, joins: &TransactionJoins) -> Result<()> {
        let opens: Vec<_> = joins.opens.iter().collect();
        for rows in opens.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO open_transactions (producer_id, producer_epoch, started_at_ms) ",
            );
            q.push_values(rows, |mut b, &(&producer_id, &epoch)| {
                b.push_bind(producer_id)
                    .push_bind(i64::from(epoch))
                    .push(DB::NOW);
            });
            q.push(" ON CONFLICT (producer_id) DO NOTHING");
            q.build()
                .execute(&mut **tx)
                .await
                .map_err(Error::db("opening transactions"))?;
        }
        let partitions: Vec<_> = joins.partitions.iter().collect();
        for rows in partitions.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO transaction_partitions (producer_id, topic_id, partition_id, \
                 first_offset) ",
            );
            q.push_values(
                rows,
                |mut b, &(&(producer_id, topic_id, partition), &first)| {
                    b.push_bind(producer_id)
                        .push_bind(topic_id)
                        .push_bind(i64::from(partition))
                        .push_bind(first);
                },
            );
            q.push(" ON CONFLICT DO NOTHING");
            q.build()
                .execute(&mut **tx)
                .await
                .map_err(Error::db("recording transaction partitions"))?;
        }
        Ok(())
    }

    /// Inserts the batches this commit accepted into each producer's
    /// remembered batches of their partition and forgets all but the last
    /// [`SEQUENCES_KEPT`] (the newest, holding the last committed sequence,
    /// is always kept): one insert and one delete for the whole commit
    /// (per [`INSERT_CHUNK`] rows).
    pub(super) async fn record_sequences(
        tx: &mut Tx<DB>,
        histories: &HashMap<PartitionKey, SequenceHistory>,
    ) -> Result<()> {
        let mut new = Vec::new();
        let mut trims = Vec::new();
        for (&(topic_id, partition), history) in histories {
            for (&producer_id, rows) in history {
                let before = new.len();
                new.extend(
                    rows.iter()
                        .filter(|r| r.new)
                        .map(|r| (producer_id, topic_id, partition, r)),
                );
                if new.len() > before
                    && let Some(oldest_kept) = rows.get(SEQUENCES_KEPT - 1)
                {
                    trims.push((producer_id, topic_id, partition, oldest_kept.base_offset));
                }
            }
        }
        for rows in new.chunks(INSERT_CHUNK) {
            QueryBuilder::<DB>::new(
                "INSERT INTO producer_batches (producer_id, topic_id, partition_id, \
                 producer_epoch, first_sequence, last_sequence, base_offset) ",
            )
            .push_values(rows, |mut b, &(producer_id, topic_id, partition, r)| {
                b.push_bind(producer_id)
                    .push_bind(topic_id)
                    .push_bind(i64::from(partition))
                    .push_bind(i64::from(r.epoch))
                    .push_bind(i64::from(r.first_sequence))
                    .push_bind(i64::from(r.last_sequence))
                    .push_bind(r.base_offset);
            })
            .build()
            .execute(&mut **tx)
            .await
            .map_err(Error::db("recording producer sequences"))?;
        }
        for group in trims.chunks(KEYS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new("DELETE FROM producer_batches WHERE ");
            push_any(
                &mut q,
                group,
                |q, (producer_id, topic_id, partition, oldest_kept)| {
                    q.push("producer_id = ")
                        .push_bind(producer_id)
                        .push(" AND ");
                    push_partition(q, (topic_id, partition));
                    q.push(" AND base_offset < ").push_bind(oldest_kept);
                },
            );
            q.build()
                .execute(&mut **tx)
                .await
                .map_err(Error::db("trimming producer sequences"))?;
        }
        Ok(())
    }
}

/// What the accepted transactional batches of one commit add to their
/// producers' open transactions.
#[derive(Debug, Default)]
pub(super) struct TransactionJoins {
    /// Producer id to the epoch of its first accepted transactional batch.
    opens: BTreeMap<i64, i16>,
    /// (producer id, topic, partition) to the base offset of the producer's
    /// first accepted transactional batch there.
    partitions: BTreeMap<(i64, TopicId, u32), i64>,
}

impl TransactionJoins {
    /// Notes the transactional batches of `chunk` that were placed (at
    /// `placed`); the first of each producer and partition counts, as the
    /// rows it leads to are only inserted when missing.
    pub(super) fn add(&mut self, chunk: &ChunkCommit, placed: &[Option<i64>]) {
        for (batch, base) in chunk.batches.iter().zip(placed) {
            let (Some(p), Some(base)) = (batch.producer, base) else {
                continue;
            };
            if !p.transactional {
                continue;
            }
            self.opens.entry(p.producer_id).or_insert(p.epoch);
            self.partitions
                .entry((p.producer_id, chunk.topic_id, chunk.partition))
                .or_insert(*base);
        }
    }
}
