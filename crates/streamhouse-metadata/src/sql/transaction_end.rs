//! Ending a transaction (see [`crate::TransactionStore::end_transaction`]):
//! check the producer's epoch, check the markers cover the partitions
//! written, commit the markers, apply or drop the offsets, close the
//! transaction and move the producer to its next epoch.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::backend::Backend;
use super::{SqlStore, Tx};
use crate::error::{Error, Result};
use crate::types::{
    BatchOutcome, EndKind, EndTransaction, ObjectCommit, ProducerIdentity, TopicId,
};

/// The producer row as an end of its transaction reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProducerRow {
    epoch: i16,
    /// Epoch and outcome of the last transaction it ended.
    last_end: (Option<i64>, Option<i64>),
    transactional_id: Option<String>,
    transaction_timeout_ms: i64,
}

/// A partition a transaction wrote to, with the first offset it wrote.
type TransactionPartition = (TopicId, u32, i64);

/// What an end request with its epoch means for the producer.
#[derive(Debug, PartialEq, Eq)]
enum EpochCheck {
    /// End the open transaction.
    Proceed,
    /// A retry of an end that already happened: answer the current
    /// identity.
    AlreadyEnded,
}

/// Checks an end request's epoch against the producer's current one.
fn check_end_epoch(
    producer_id: i64,
    end: &EndTransaction,
    row: &ProducerRow,
) -> Result<EpochCheck> {
    let current = row.epoch;
    let Some(epoch) = end.epoch.filter(|&e| e != current) else {
        return Ok(EpochCheck::Proceed);
    };
    if row.last_end == (Some(i64::from(epoch)), Some(i64::from(end.commit))) {
        return Ok(EpochCheck::AlreadyEnded);
    }
    Err(if epoch < current {
        Error::ProducerFenced {
            producer_id,
            epoch,
            current_epoch: current,
        }
    } else {
        Error::InvalidTransactionState {
            producer_id,
            reason: format!("epoch {epoch} is ahead of the current {current}"),
        }
    })
}

/// For an end that keeps the epoch: whether the transaction it names is
/// the one open (`open_started_at`), a retry of the last end, or neither.
fn check_named_transaction(
    producer_id: i64,
    end: &EndTransaction,
    row: &ProducerRow,
    open_started_at: Option<i64>,
) -> Result<EpochCheck> {
    // Only an end that keeps the epoch is named by its transaction's start.
    let EndKind::KeepEpoch { started_at_ms } = end.kind else {
        return Ok(EpochCheck::Proceed);
    };
    if open_started_at.is_some() && open_started_at == started_at_ms {
        return Ok(EpochCheck::Proceed);
    }
    let epoch = end.epoch.unwrap_or(row.epoch);
    if row.last_end == (Some(i64::from(epoch)), Some(i64::from(end.commit))) {
        return Ok(EpochCheck::AlreadyEnded);
    }
    Err(Error::InvalidTransactionState {
        producer_id,
        reason: match open_started_at {
            None => "no transaction is open".into(),
            Some(_) => "the transaction this end was sent for has ended".into(),
        },
    })
}

/// Checks the markers cover exactly the partitions the transaction wrote.
fn check_markers(
    producer_id: i64,
    partitions: &[TransactionPartition],
    markers: Option<&ObjectCommit>,
) -> Result<()> {
    let wrote: BTreeSet<(TopicId, u32)> = partitions.iter().map(|&(t, p, _)| (t, p)).collect();
    let marked: BTreeSet<(TopicId, u32)> = markers
        .iter()
        .flat_map(|m| m.chunks.iter().map(|c| (c.topic_id, c.partition)))
        .collect();
    if wrote != marked {
        return Err(Error::TransactionPartitionsChanged(producer_id));
    }
    Ok(())
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
    /// See [`crate::TransactionStore::end_transaction`].
    pub(super) async fn end(&self, end: &EndTransaction) -> Result<ProducerIdentity> {
        let pid = end.producer_id;
        let mut tx = self.begin_write().await?;
        let producer = Self::lock_producer(&mut tx, pid).await?;
        let identity = ProducerIdentity {
            producer_id: pid,
            epoch: producer.epoch,
        };
        if check_end_epoch(pid, end, &producer)? == EpochCheck::AlreadyEnded {
            return Ok(identity);
        }
        let open = Self::open_transaction_start(&mut tx, pid).await?;
        if check_named_transaction(pid, end, &producer, open.map(|(_, started)| started))?
            == EpochCheck::AlreadyEnded
        {
            return Ok(identity);
        }
        if open.is_none() && end.epoch.is_none() {
            return Ok(identity);
        }
        let partitions = Self::transaction_partitions(&mut tx, pid).await?;
        check_markers(pid, &partitions, end.markers.as_ref())?;
        let marker_offsets = match &end.markers {
            Some(markers) => Self::commit_markers(&mut tx, markers).await?,
            None => BTreeMap::new(),
        };
        if end.commit {
            Self::apply_transaction_offsets(&mut tx, pid).await?;
        } else {
            Self::record_aborted(&mut tx, pid, &partitions, &marker_offsets).await?;
        }
        Self::close_transaction(&mut tx, pid).await?;
        let ended_epoch = open.map_or(i64::from(producer.epoch), |(epoch, _)| epoch);
        let next = match end.kind {
            EndKind::BumpEpoch => {
                Self::next_producer_epoch(&mut tx, pid, &producer, ended_epoch, end.commit).await?
            }
            EndKind::KeepEpoch { .. } => {
                Self::remember_end(&mut tx, pid, ended_epoch, end.commit).await?;
                identity
            }
        };
        tx.commit().await.map_err(Error::db("ending transaction"))?;
        Ok(next)
    }

    /// Locks the producer row and reads it.
    async fn lock_producer(tx: &mut Tx<DB>, pid: i64) -> Result<ProducerRow> {
        let row = sqlx::query(
            "UPDATE producers SET epoch = epoch WHERE producer_id = $1 \
             RETURNING epoch, last_end_epoch, last_end_committed, transactional_id, \
             transaction_timeout_ms",
        )
        .bind(pid)
        .fetch_optional(&mut **tx)
        .await
        .map_err(Error::db("locking producer"))?
        .ok_or(Error::UnknownProducer(pid))?;
        Ok(ProducerRow {
            epoch: row.get::<i64, _>(0) as i16,
            last_end: (row.get(1), row.get(2)),
            transactional_id: row.get(3),
            transaction_timeout_ms: row.get(4),
        })
    }

    /// The partitions the producer's transaction wrote to.
    async fn transaction_partitions(
        tx: &mut Tx<DB>,
        pid: i64,
    ) -> Result<Vec<TransactionPartition>> {
        let rows = sqlx::query(
            "SELECT topic_id, partition_id, first_offset FROM transaction_partitions \
             WHERE producer_id = $1",
        )
        .bind(pid)
        .fetch_all(&mut **tx)
        .await
        .map_err(Error::db("reading transaction partitions"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<i64, _>(1) as u32, r.get(2)))
            .collect())
    }

    /// Commits the markers object; returns the offset of each partition's
    /// marker.
    async fn commit_markers(
        tx: &mut Tx<DB>,
        markers: &ObjectCommit,
    ) -> Result<BTreeMap<(TopicId, u32), i64>> {
        let outcome = Self::commit_object_in(tx, markers).await?;
        let mut offsets = BTreeMap::new();
        for (chunk, result) in markers.chunks.iter().zip(outcome) {
            if let Ok(batches) = result
                && let Some(BatchOutcome::Appended { base_offset }) = batches.first()
            {
                offsets.insert((chunk.topic_id, chunk.partition), *base_offset);
            }
        }
        Ok(offsets)
    }

    /// Applies the offset commits of a committed transaction.
    async fn apply_transaction_offsets(tx: &mut Tx<DB>, pid: i64) -> Result<()> {
        let offsets = sqlx::query(
            "SELECT group_id, topic_id, partition_id, committed_offset, metadata \
             FROM transaction_offsets WHERE producer_id = $1",
        )
        .bind(pid)
        .fetch_all(&mut **tx)
        .await
        .map_err(Error::db("reading transaction offsets"))?;
        for o in &offsets {
            let (group, metadata): (String, Option<String>) = (o.get(0), o.get(4));
            Self::upsert_offset(
                tx,
                &group,
                o.get(1),
                o.get::<i64, _>(2) as u32,
                o.get(3),
                metadata.as_deref(),
            )
            .await?;
        }
        Ok(())
    }

    /// Records the aborted range of each partition that got a marker, from
    /// the transaction's first offset to its marker.
    async fn record_aborted(
        tx: &mut Tx<DB>,
        pid: i64,
        partitions: &[TransactionPartition],
        marker_offsets: &BTreeMap<(TopicId, u32), i64>,
    ) -> Result<()> {
        for &(topic_id, partition, first_offset) in partitions {
            let Some(marker) = marker_offsets.get(&(topic_id, partition)) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO aborted_transactions (topic_id, partition_id, producer_id, \
                 first_offset, last_offset) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(topic_id)
            .bind(i64::from(partition))
            .bind(pid)
            .bind(first_offset)
            .bind(*marker)
            .execute(&mut **tx)
            .await
            .map_err(Error::db("recording aborted transaction"))?;
        }
        Ok(())
    }

    /// Forgets the transaction's partitions and offsets and closes it.
    async fn close_transaction(tx: &mut Tx<DB>, pid: i64) -> Result<()> {
        for statement in [
            "DELETE FROM transaction_partitions WHERE producer_id = $1",
            "DELETE FROM transaction_offsets WHERE producer_id = $1",
            "DELETE FROM open_transactions WHERE producer_id = $1",
        ] {
            sqlx::query(statement)
                .bind(pid)
                .execute(&mut **tx)
                .await
                .map_err(Error::db("closing transaction"))?;
        }
        Ok(())
    }

    /// Remembers the end (so a retry is recognised) without moving the
    /// producer's epoch.
    async fn remember_end(tx: &mut Tx<DB>, pid: i64, ended_epoch: i64, commit: bool) -> Result<()> {
        sqlx::query(
            "UPDATE producers SET last_end_epoch = $2, last_end_committed = $3 \
             WHERE producer_id = $1",
        )
        .bind(pid)
        .bind(ended_epoch)
        .bind(i64::from(commit))
        .execute(&mut **tx)
        .await
        .map_err(Error::db("recording transaction end"))?;
        Ok(())
    }

    /// Bumps the producer's epoch and remembers the end (so a retry is
    /// recognised). When its epochs are used up, a new producer id takes
    /// over its transactional id.
    async fn next_producer_epoch(
        tx: &mut Tx<DB>,
        pid: i64,
        producer: &ProducerRow,
        ended_epoch: i64,
        commit: bool,
    ) -> Result<ProducerIdentity> {
        if producer.epoch < i16::MAX {
            sqlx::query(
                "UPDATE producers SET epoch = epoch + 1, last_end_epoch = $2, \
                 last_end_committed = $3 WHERE producer_id = $1",
            )
            .bind(pid)
            .bind(ended_epoch)
            .bind(i64::from(commit))
            .execute(&mut **tx)
            .await
            .map_err(Error::db("bumping producer epoch"))?;
            return Ok(ProducerIdentity {
                producer_id: pid,
                epoch: producer.epoch + 1,
            });
        }
        let Some(tid) = &producer.transactional_id else {
            return Ok(ProducerIdentity {
                producer_id: pid,
                epoch: producer.epoch,
            });
        };
        sqlx::query("UPDATE producers SET transactional_id = NULL WHERE producer_id = $1")
            .bind(pid)
            .execute(&mut **tx)
            .await
            .map_err(Error::db("retiring producer id"))?;
        Self::new_transactional_producer(tx, tid, producer.transaction_timeout_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChunkCommit;

    fn producer(epoch: i16, last_end: (Option<i64>, Option<i64>)) -> ProducerRow {
        ProducerRow {
            epoch,
            last_end,
            transactional_id: Some("t".into()),
            transaction_timeout_ms: 1_000,
        }
    }

    fn end(epoch: Option<i16>, commit: bool) -> EndTransaction {
        EndTransaction {
            producer_id: 9,
            epoch,
            commit,
            markers: None,
            kind: EndKind::BumpEpoch,
        }
    }

    #[test]
    fn an_end_keeping_the_epoch_ends_only_the_transaction_it_names() {
        let keep = |started_at_ms, commit| EndTransaction {
            kind: EndKind::KeepEpoch { started_at_ms },
            ..end(Some(3), commit)
        };
        // The transaction the request found is still open.
        let row = producer(3, (Some(3), Some(1)));
        assert_eq!(
            check_named_transaction(9, &keep(Some(100), false), &row, Some(100)).unwrap(),
            EpochCheck::Proceed
        );
        // It ended (committed) and another began: a repeat of the commit
        // is answered, an abort is refused; neither touches the new one.
        assert_eq!(
            check_named_transaction(9, &keep(Some(100), true), &row, Some(200)).unwrap(),
            EpochCheck::AlreadyEnded
        );
        assert!(matches!(
            check_named_transaction(9, &keep(Some(100), false), &row, Some(200)),
            Err(Error::InvalidTransactionState { .. })
        ));
        // Nothing open: a retry of the last end, or an invalid state.
        assert_eq!(
            check_named_transaction(9, &keep(None, true), &row, None).unwrap(),
            EpochCheck::AlreadyEnded
        );
        assert!(matches!(
            check_named_transaction(9, &keep(None, true), &producer(3, (None, None)), None),
            Err(Error::InvalidTransactionState { .. })
        ));
        // Ends that bump the epoch are named by it, not by their start.
        assert_eq!(
            check_named_transaction(9, &end(Some(3), true), &row, Some(200)).unwrap(),
            EpochCheck::Proceed
        );
    }

    #[test]
    fn the_current_epoch_or_none_ends_the_open_transaction() {
        let row = producer(3, (None, None));
        assert_eq!(
            check_end_epoch(9, &end(Some(3), true), &row).unwrap(),
            EpochCheck::Proceed
        );
        assert_eq!(
            check_end_epoch(9, &end(None, false), &row).unwrap(),
            EpochCheck::Proceed
        );
    }

    #[test]
    fn a_retried_end_is_answered_and_others_refused() {
        // Epoch 2 was committed; the producer is at 3 now.
        let row = producer(3, (Some(2), Some(1)));
        assert_eq!(
            check_end_epoch(9, &end(Some(2), true), &row).unwrap(),
            EpochCheck::AlreadyEnded
        );
        // The same epoch with the other outcome is a zombie, fenced.
        assert!(matches!(
            check_end_epoch(9, &end(Some(2), false), &row),
            Err(Error::ProducerFenced {
                producer_id: 9,
                epoch: 2,
                current_epoch: 3
            })
        ));
        assert!(matches!(
            check_end_epoch(9, &end(Some(4), true), &row),
            Err(Error::InvalidTransactionState { producer_id: 9, .. })
        ));
    }

    #[test]
    fn markers_must_cover_the_partitions_written() {
        let markers = |parts: &[(TopicId, u32)]| ObjectCommit {
            object_key: "k".into(),
            size_bytes: 0,
            chunks: parts
                .iter()
                .map(|&(topic_id, partition)| ChunkCommit {
                    topic_id,
                    partition,
                    byte_start: 0,
                    batches: Vec::new(),
                })
                .collect(),
        };
        let wrote = [(1, 0, 10), (1, 1, 20)];
        assert!(check_markers(9, &wrote, Some(&markers(&[(1, 1), (1, 0)]))).is_ok());
        assert!(check_markers(9, &[], None).is_ok());
        for bad in [Some(markers(&[(1, 0)])), None] {
            assert!(matches!(
                check_markers(9, &wrote, bad.as_ref()),
                Err(Error::TransactionPartitionsChanged(9))
            ));
        }
    }
}
