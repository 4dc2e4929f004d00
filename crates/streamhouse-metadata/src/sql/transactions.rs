//! [`TransactionStore`] on SQL: transactional producers, their open
//! transactions and aborted ranges. Ending a transaction is in
//! `transaction_end.rs`.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::backend::{Backend, sql};
use super::{SqlStore, Tx};
use crate::error::{Error, Result};
use crate::types::{
    AbortedTransaction, EndTransaction, OffsetCommit, OpenTransaction, PartitionProducer,
    ProducerIdentity, TopicId, TransactionListing,
};
use crate::{TransactionStore, validate_group_id, validate_offsets};

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
    /// Locks the producer row and checks `producer` is its current
    /// identity.
    pub(super) async fn lock_producer_epoch(
        tx: &mut Tx<DB>,
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

    /// Issues a new producer id at epoch 0 for `transactional_id`.
    pub(super) async fn new_transactional_producer(
        tx: &mut Tx<DB>,
        transactional_id: &str,
        transaction_timeout_ms: i64,
    ) -> Result<ProducerIdentity> {
        let id: i64 = sqlx::query_scalar(sql::<DB>(
            "INSERT INTO producers (epoch, created_at_ms, transactional_id, \
             transaction_timeout_ms) VALUES (0, {now}, $1, $2) RETURNING producer_id",
        ))
        .bind(transactional_id)
        .bind(transaction_timeout_ms)
        .fetch_one(&mut **tx)
        .await
        .map_err(Error::db("creating transactional producer"))?;
        Ok(ProducerIdentity {
            producer_id: id,
            epoch: 0,
        })
    }

    /// The epoch and start (ms, database clock) of the producer's open
    /// transaction, if any.
    pub(super) async fn open_transaction_start(
        tx: &mut Tx<DB>,
        producer_id: i64,
    ) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query(
            "SELECT producer_epoch, started_at_ms FROM open_transactions WHERE producer_id = $1",
        )
        .bind(producer_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(Error::db("reading open transaction"))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// The epoch of the producer's open transaction, if any.
    pub(super) async fn open_transaction_epoch(
        tx: &mut Tx<DB>,
        producer_id: i64,
    ) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT producer_epoch FROM open_transactions WHERE producer_id = $1")
            .bind(producer_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(Error::db("reading open transaction"))
    }
}

/// Checks a transactional id and timeout.
fn validate_transactional(transactional_id: &str, transaction_timeout_ms: i64) -> Result<()> {
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
    Ok(())
}

#[async_trait]
impl<DB: Backend> TransactionStore for SqlStore<DB>
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
    async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        transaction_timeout_ms: i64,
    ) -> Result<ProducerIdentity> {
        validate_transactional(transactional_id, transaction_timeout_ms)?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE producers SET epoch = epoch + 1, transaction_timeout_ms = $2, \
             last_end_epoch = NULL, last_end_committed = NULL \
             WHERE transactional_id = $1 RETURNING producer_id, epoch",
        )
        .bind(transactional_id)
        .bind(transaction_timeout_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::db("bumping transactional producer"))?;
        if let Some(row) = &row {
            let id: i64 = row.get(0);
            if Self::open_transaction_epoch(&mut tx, id).await?.is_some() {
                return Err(Error::InvalidTransactionState {
                    producer_id: id,
                    reason: "a transaction of an earlier instance is still open; end it first"
                        .into(),
                });
            }
            let epoch: i64 = row.get(1);
            if epoch <= i64::from(i16::MAX) {
                tx.commit()
                    .await
                    .map_err(Error::db("bumping transactional producer"))?;
                return Ok(ProducerIdentity {
                    producer_id: id,
                    epoch: epoch as i16,
                });
            }
        }
        let identity =
            Self::new_transactional_producer(&mut tx, transactional_id, transaction_timeout_ms)
                .await?;
        tx.commit()
            .await
            .map_err(Error::db("creating transactional producer"))?;
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
        sqlx::query_scalar(sql::<DB>(
            "SELECT o.producer_id FROM open_transactions o \
             JOIN producers p ON p.producer_id = o.producer_id \
             WHERE {now} - o.started_at_ms > p.transaction_timeout_ms ORDER BY o.producer_id",
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
        validate_offsets(offsets)?;
        let mut tx = self.begin_write().await?;
        Self::lock_producer_epoch(&mut tx, producer).await?;
        if member.is_some() {
            Self::check_member(&mut tx, group, member, offsets).await?;
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
        tx.commit()
            .await
            .map_err(Error::db("adding transaction offsets"))
    }

    async fn end_transaction(&self, end: &EndTransaction) -> Result<ProducerIdentity> {
        self.end(end).await
    }

    async fn begin_transaction(&self, producer: ProducerIdentity) -> Result<()> {
        self.begin(producer).await
    }

    async fn transactions(&self, ids: Option<&[String]>) -> Result<Vec<TransactionListing>> {
        self.list_transactions(ids).await
    }

    async fn partition_producers(
        &self,
        topic_id: TopicId,
        partition: u32,
    ) -> Result<Vec<PartitionProducer>> {
        self.producers_of_partition(topic_id, partition).await
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
