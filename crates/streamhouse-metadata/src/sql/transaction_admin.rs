//! Opening a transaction before it writes (Kafka's AddPartitionsToTxn and
//! AddOffsetsToTxn), and what Kafka's ListTransactions,
//! DescribeTransactions and DescribeProducers report.

use std::collections::BTreeMap;

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::SqlStore;
use super::backend::{Backend, sql};
use crate::error::{Error, Result};
use crate::types::{
    PartitionProducer, ProducerIdentity, TopicId, TopicPartition, TransactionListing,
    TransactionState,
};

/// The state of a transactional id from its open transaction and the
/// outcome of the last one it ended (`last_end_committed`).
fn state(open: bool, last_end_committed: Option<i64>) -> TransactionState {
    match (open, last_end_committed) {
        (true, _) => TransactionState::Ongoing,
        (false, Some(0)) => TransactionState::CompleteAbort,
        (false, Some(_)) => TransactionState::CompleteCommit,
        (false, None) => TransactionState::Empty,
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
    /// See [`crate::TransactionStore::begin_transaction`].
    pub(super) async fn begin(&self, producer: ProducerIdentity) -> Result<()> {
        let mut tx = self.begin_write().await?;
        Self::lock_producer_epoch(&mut tx, producer).await?;
        let transactional: Option<String> =
            sqlx::query_scalar("SELECT transactional_id FROM producers WHERE producer_id = $1")
                .bind(producer.producer_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::db("reading producer"))?;
        if transactional.is_none() {
            return Err(Error::InvalidTransactionState {
                producer_id: producer.producer_id,
                reason: "it has no transactional id".into(),
            });
        }
        sqlx::query(sql::<DB>(
            "INSERT INTO open_transactions (producer_id, producer_epoch, started_at_ms) \
             VALUES ($1, $2, {now}) ON CONFLICT (producer_id) DO NOTHING",
        ))
        .bind(producer.producer_id)
        .bind(i64::from(producer.epoch))
        .execute(&mut *tx)
        .await
        .map_err(Error::db("opening transaction"))?;
        tx.commit().await.map_err(Error::db("opening transaction"))
    }

    /// See [`crate::TransactionStore::transactions`]: every transactional
    /// id in one pass, or only the named ones, each looked up by its key.
    pub(super) async fn list_transactions(
        &self,
        ids: Option<&[String]>,
    ) -> Result<Vec<TransactionListing>> {
        // The statements differ only in their filter; `concat!` keeps them
        // literal SQL.
        macro_rules! listing {
            ($filter:literal) => {
                concat!(
                    "SELECT p.transactional_id, p.producer_id, p.epoch, ",
                    "p.transaction_timeout_ms, p.last_end_committed, o.started_at_ms ",
                    "FROM producers p LEFT JOIN open_transactions o ",
                    "ON o.producer_id = p.producer_id WHERE p.transactional_id IS NOT NULL ",
                    $filter
                )
            };
        }
        macro_rules! partitions {
            ($filter:literal) => {
                concat!(
                    "SELECT t.producer_id, k.name, t.partition_id FROM transaction_partitions t ",
                    "JOIN topics k ON k.topic_id = t.topic_id ",
                    $filter,
                    " ORDER BY k.name, t.partition_id"
                )
            };
        }
        let (rows, partitions) = match ids {
            None => (
                sqlx::query(listing!("ORDER BY p.transactional_id"))
                    .fetch_all(&self.read)
                    .await,
                sqlx::query(partitions!("")).fetch_all(&self.read).await,
            ),
            Some(ids) => {
                let mut ids: Vec<&String> = ids.iter().collect();
                ids.sort();
                ids.dedup();
                let mut rows = Vec::new();
                let mut partitions = Vec::new();
                for id in ids {
                    let Some(row) = sqlx::query(listing!("AND p.transactional_id = $1"))
                        .bind(id.as_str())
                        .fetch_optional(&self.read)
                        .await
                        .map_err(Error::db("listing transactions"))?
                    else {
                        continue;
                    };
                    partitions.extend(
                        sqlx::query(partitions!("WHERE t.producer_id = $1"))
                            .bind(row.get::<i64, _>(1))
                            .fetch_all(&self.read)
                            .await
                            .map_err(Error::db("listing transaction partitions"))?,
                    );
                    rows.push(row);
                }
                (Ok(rows), Ok(partitions))
            }
        };
        let rows = rows.map_err(Error::db("listing transactions"))?;
        let partitions = partitions.map_err(Error::db("listing transaction partitions"))?;
        let mut written: BTreeMap<i64, Vec<TopicPartition>> = BTreeMap::new();
        for r in &partitions {
            written
                .entry(r.get(0))
                .or_default()
                .push(TopicPartition::new(
                    r.get::<String, _>(1),
                    r.get::<i64, _>(2) as u32,
                ));
        }
        Ok(rows
            .iter()
            .map(|r| {
                let producer_id: i64 = r.get(1);
                let started_at_ms: Option<i64> = r.get(5);
                TransactionListing {
                    transactional_id: r.get(0),
                    producer_id,
                    epoch: r.get::<i64, _>(2) as i16,
                    timeout_ms: r.get(3),
                    state: state(started_at_ms.is_some(), r.get(4)),
                    started_at_ms,
                    partitions: written.remove(&producer_id).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// See [`crate::TransactionStore::partition_producers`].
    pub(super) async fn producers_of_partition(
        &self,
        topic_id: TopicId,
        partition: u32,
    ) -> Result<Vec<PartitionProducer>> {
        let rows = sqlx::query(
            "SELECT b.producer_id, b.producer_epoch, b.last_sequence, t.first_offset \
             FROM producer_batches b LEFT JOIN transaction_partitions t \
               ON t.producer_id = b.producer_id AND t.topic_id = b.topic_id \
              AND t.partition_id = b.partition_id \
             WHERE b.topic_id = $1 AND b.partition_id = $2 \
               AND b.base_offset = (SELECT MAX(n.base_offset) FROM producer_batches n \
                   WHERE n.producer_id = b.producer_id AND n.topic_id = b.topic_id \
                     AND n.partition_id = b.partition_id) \
             ORDER BY b.producer_id",
        )
        .bind(topic_id)
        .bind(i64::from(partition))
        .fetch_all(&self.read)
        .await
        .map_err(Error::db("reading partition producers"))?;
        Ok(rows
            .iter()
            .map(|r| PartitionProducer {
                producer_id: r.get(0),
                epoch: r.get::<i64, _>(1) as i16,
                last_sequence: r.get::<i64, _>(2) as i32,
                transaction_start_offset: r.get(3),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_open_transaction_then_the_last_end() {
        assert_eq!(state(true, Some(0)), TransactionState::Ongoing);
        assert_eq!(state(false, Some(0)), TransactionState::CompleteAbort);
        assert_eq!(state(false, Some(1)), TransactionState::CompleteCommit);
        assert_eq!(state(false, None), TransactionState::Empty);
    }
}
