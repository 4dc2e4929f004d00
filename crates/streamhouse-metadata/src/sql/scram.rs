//! [`ScramStore`] on SQL: one `scram_credentials` row per user and
//! mechanism (migration 0012), the mechanism stored as its Kafka type.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};
use streamhouse_core::scram::{Credential, Mechanism};

use super::SqlStore;
use super::backend::Backend;
use crate::ScramStore;
use crate::error::{Error, Result};
use crate::scram::{UserCredential, validate_user_name};

/// A stored row that holds no credential.
fn corrupt(user: &str, reason: String) -> Error {
    Error::InvalidArgument {
        field: "stored scram credential",
        reason: format!("user {user:?}: {reason}"),
    }
}

/// A credential from a row of `mechanism, salt, iterations, stored_key,
/// server_key` (columns 0 to 4).
fn credential_from_row<R: Row>(user: &str, row: &R) -> Result<Credential>
where
    usize: ColumnIndex<R>,
    i64: Type<R::Database> + for<'a> Decode<'a, R::Database>,
    Vec<u8>: Type<R::Database> + for<'a> Decode<'a, R::Database>,
{
    let kind: i64 = row.get(0);
    let mechanism = i8::try_from(kind)
        .ok()
        .and_then(Mechanism::from_kafka_type)
        .ok_or_else(|| corrupt(user, format!("mechanism type {kind} is unknown")))?;
    let iterations: i64 = row.get(2);
    let iterations = u32::try_from(iterations).map_err(|_| {
        corrupt(
            user,
            format!("iteration count {iterations} is out of range"),
        )
    })?;
    Ok(Credential {
        mechanism,
        salt: row.get(1),
        iterations,
        stored_key: row.get(3),
        server_key: row.get(4),
    })
}

#[async_trait]
impl<DB: Backend> ScramStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'s> &'s str: Type<DB> + Encode<'s, DB>,
    for<'s> &'s [u8]: Type<DB> + Encode<'s, DB>,
    i64: Type<DB> + for<'a> Encode<'a, DB> + for<'a> Decode<'a, DB>,
    String: Type<DB> + for<'a> Decode<'a, DB>,
    Vec<u8>: Type<DB> + for<'a> Decode<'a, DB>,
{
    async fn upsert_scram_credential(&self, user: &str, credential: &Credential) -> Result<()> {
        validate_user_name(user)?;
        credential.validate()?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO scram_credentials \
             (user_name, mechanism, salt, iterations, stored_key, server_key) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_name, mechanism) DO UPDATE SET salt = excluded.salt, \
             iterations = excluded.iterations, stored_key = excluded.stored_key, \
             server_key = excluded.server_key",
        )
        .bind(user)
        .bind(i64::from(credential.mechanism.kafka_type()))
        .bind(credential.salt.as_slice())
        .bind(i64::from(credential.iterations))
        .bind(credential.stored_key.as_slice())
        .bind(credential.server_key.as_slice())
        .execute(&mut *tx)
        .await
        .map_err(Error::db("storing scram credential"))?;
        tx.commit()
            .await
            .map_err(Error::db("committing scram credential"))
    }

    async fn delete_scram_credential(&self, user: &str, mechanism: Mechanism) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("DELETE FROM scram_credentials WHERE user_name = $1 AND mechanism = $2")
                .bind(user)
                .bind(i64::from(mechanism.kafka_type()))
                .execute(&mut *tx)
                .await
                .map_err(Error::db("deleting scram credential"))?;
        tx.commit()
            .await
            .map_err(Error::db("committing scram credential deletion"))?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn delete_user(&self, user: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM scram_credentials WHERE user_name = $1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(Error::db("deleting scram user"))?;
        tx.commit()
            .await
            .map_err(Error::db("committing scram user deletion"))?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn scram_credential(
        &self,
        user: &str,
        mechanism: Mechanism,
    ) -> Result<Option<Credential>> {
        let row = sqlx::query(
            "SELECT mechanism, salt, iterations, stored_key, server_key \
             FROM scram_credentials WHERE user_name = $1 AND mechanism = $2",
        )
        .bind(user)
        .bind(i64::from(mechanism.kafka_type()))
        .fetch_optional(&self.read)
        .await
        .map_err(Error::db("reading scram credential"))?;
        row.map(|row| credential_from_row(user, &row)).transpose()
    }

    async fn scram_credentials(&self) -> Result<Vec<UserCredential>> {
        let rows = sqlx::query(
            "SELECT mechanism, salt, iterations, stored_key, server_key, user_name \
             FROM scram_credentials",
        )
        .fetch_all(&self.read)
        .await
        .map_err(Error::db("listing scram credentials"))?;
        let mut out = rows
            .iter()
            .map(|row| {
                let user: String = row.get(5);
                let credential = credential_from_row(&user, row)?;
                Ok(UserCredential { user, credential })
            })
            .collect::<Result<Vec<_>>>()?;
        // Sorted here rather than by ORDER BY, whose text order depends on
        // the database's collation.
        out.sort_unstable_by(|a, b| {
            (a.user.as_bytes(), a.credential.mechanism.kafka_type())
                .cmp(&(b.user.as_bytes(), b.credential.mechanism.kafka_type()))
        });
        Ok(out)
    }
}
