//! [`ProducerStore`] on SQL: producer ids and epochs.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};

use super::SqlStore;
use super::backend::{Backend, sql};
use crate::ProducerStore;
use crate::error::{Error, Result};
use crate::types::ProducerIdentity;

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
            let epoch: Option<i64> =
                sqlx::query_scalar("SELECT epoch FROM producers WHERE producer_id = $1")
                    .bind(cur.producer_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Error::db("reading producer epoch"))?;
            let epoch = epoch.ok_or(Error::UnknownProducer(cur.producer_id))? as i16;
            if epoch != cur.epoch {
                return Err(Error::ProducerFenced {
                    producer_id: cur.producer_id,
                    epoch: cur.epoch,
                    current_epoch: epoch,
                });
            }
            // An exhausted epoch range gets a fresh producer id.
            if epoch < i16::MAX {
                sqlx::query("UPDATE producers SET epoch = $1 WHERE producer_id = $2")
                    .bind(i64::from(epoch) + 1)
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
