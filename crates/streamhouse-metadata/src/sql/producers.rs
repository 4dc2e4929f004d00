//! [`ProducerStore`] on SQL: producer ids and epochs.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::SqlStore;
use super::backend::{Backend, sql};
use crate::ProducerStore;
use crate::error::{Error, Result};
use crate::types::ProducerIdentity;

/// What an epoch bump request (the producer's identity as it sent it) means
/// given the producer's current epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BumpDecision {
    /// The epoch is current: bump it.
    Bump,
    /// The epoch is the one the last bump started from, and that bump made
    /// the current epoch: the same request again, whose answer was lost.
    /// Answer it with the current identity (KIP-360).
    Retried,
    /// An older epoch: another instance took over.
    Fenced,
}

fn bump_decision(sent: i16, current: i16, last_bumped_from: Option<i64>) -> BumpDecision {
    if sent == current {
        BumpDecision::Bump
    } else if last_bumped_from == Some(i64::from(sent)) && i64::from(current) == i64::from(sent) + 1
    {
        BumpDecision::Retried
    } else {
        BumpDecision::Fenced
    }
}

#[async_trait]
impl<DB: Backend> ProducerStore for SqlStore<DB>
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
    async fn init_producer_id(
        &self,
        current: Option<ProducerIdentity>,
    ) -> Result<ProducerIdentity> {
        let mut tx = self.begin_write().await?;
        if let Some(cur) = current {
            // The row lock orders concurrent bumps of one producer.
            let row = sqlx::query(
                "UPDATE producers SET epoch = epoch WHERE producer_id = $1 \
                 RETURNING epoch, last_bumped_from_epoch",
            )
            .bind(cur.producer_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(Error::db("reading producer epoch"))?;
            let row = row.ok_or(Error::UnknownProducer(cur.producer_id))?;
            let epoch = row.get::<i64, _>(0) as i16;
            let bumped_from: Option<i64> = row.get(1);
            match bump_decision(cur.epoch, epoch, bumped_from) {
                BumpDecision::Retried => {
                    // Nothing to write; end the transaction that holds the lock.
                    tx.rollback()
                        .await
                        .map_err(Error::db("reading producer epoch"))?;
                    return Ok(ProducerIdentity {
                        producer_id: cur.producer_id,
                        epoch,
                    });
                }
                BumpDecision::Fenced => {
                    return Err(Error::ProducerFenced {
                        producer_id: cur.producer_id,
                        epoch: cur.epoch,
                        current_epoch: epoch,
                    });
                }
                BumpDecision::Bump if epoch < i16::MAX => {
                    sqlx::query(
                        "UPDATE producers SET epoch = $1, last_bumped_from_epoch = $2 \
                         WHERE producer_id = $3",
                    )
                    .bind(i64::from(epoch) + 1)
                    .bind(i64::from(epoch))
                    .bind(cur.producer_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db("bumping producer epoch"))?;
                    tx.commit()
                        .await
                        .map_err(Error::db("bumping producer epoch"))?;
                    return Ok(ProducerIdentity {
                        producer_id: cur.producer_id,
                        epoch: epoch + 1,
                    });
                }
                // An exhausted epoch range gets a fresh producer id.
                BumpDecision::Bump => {}
            }
        }
        let id: i64 = sqlx::query_scalar(sql::<DB>(
            "INSERT INTO producers (epoch, created_at_ms) VALUES (0, {now}) \
             RETURNING producer_id",
        ))
        .fetch_one(&mut *tx)
        .await
        .map_err(Error::db("issuing producer id"))?;
        tx.commit()
            .await
            .map_err(Error::db("issuing producer id"))?;
        Ok(ProducerIdentity {
            producer_id: id,
            epoch: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bump_that_made_the_current_epoch_is_answered_again() {
        assert_eq!(bump_decision(3, 3, Some(2)), BumpDecision::Bump);
        assert_eq!(bump_decision(3, 3, None), BumpDecision::Bump);
        // The retried request of the bump from 2 to 3.
        assert_eq!(bump_decision(2, 3, Some(2)), BumpDecision::Retried);
        // Epoch 3 came from elsewhere (a transaction end), not from 2's bump.
        assert_eq!(bump_decision(2, 3, None), BumpDecision::Fenced);
        // A bump from 2 happened, but the epoch moved on since.
        assert_eq!(bump_decision(2, 4, Some(2)), BumpDecision::Fenced);
        assert_eq!(bump_decision(1, 3, Some(2)), BumpDecision::Fenced);
        // A sent epoch ahead of the current one is never a retry.
        assert_eq!(bump_decision(4, 3, Some(2)), BumpDecision::Fenced);
    }
}
