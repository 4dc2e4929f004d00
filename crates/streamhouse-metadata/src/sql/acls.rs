//! [`AclStore`] on SQL: one `acls` row per binding, keyed by all of its
//! fields (migration 0012), enum fields stored by name.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, QueryBuilder, Row, Type};

use super::backend::Backend;
use super::{INSERT_CHUNK, SqlStore};
use crate::AclStore;
use crate::acl::{AclBinding, AclFilter, AclOperation, AclPermission, PatternType, ResourceType};
use crate::error::{Error, Result};

/// The columns of `acls`, in the order they are selected.
const COLUMNS: &str =
    "resource_type, resource_name, pattern_type, principal, host, operation, permission";

/// A stored enum field that no longer names a value.
fn corrupt(column: &str, value: &str) -> Error {
    Error::InvalidArgument {
        field: "stored acl",
        reason: format!("column {column} holds {value:?}, which names no value"),
    }
}

/// Parses a stored enum name.
fn parse<T>(column: &str, value: String, from: impl Fn(&str) -> Option<T>) -> Result<T> {
    from(&value).ok_or_else(|| corrupt(column, &value))
}

impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    String: Type<DB> + for<'a> Decode<'a, DB>,
{
    /// Every binding in [`AclBinding`]'s order, read with `executor`.
    async fn read_acls<'e, E>(executor: E) -> Result<Vec<AclBinding>>
    where
        E: Executor<'e, Database = DB>,
    {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM acls")))
            .fetch_all(executor)
            .await
            .map_err(Error::db("reading acls"))?;
        let mut acls = rows
            .iter()
            .map(|row| {
                Ok(AclBinding {
                    resource_type: parse(
                        "resource_type",
                        row.get(0),
                        ResourceType::from_exact_name,
                    )?,
                    resource_name: row.get(1),
                    pattern_type: parse("pattern_type", row.get(2), PatternType::from_exact_name)?,
                    principal: row.get(3),
                    host: row.get(4),
                    operation: parse("operation", row.get(5), AclOperation::from_exact_name)?,
                    permission: parse("permission", row.get(6), AclPermission::from_exact_name)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Sorted here rather than by ORDER BY, whose text order depends on
        // the database's collation.
        acls.sort_unstable();
        Ok(acls)
    }
}

#[async_trait]
impl<DB: Backend> AclStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'s> &'s str: Type<DB> + Encode<'s, DB>,
    String: Type<DB> + for<'a> Decode<'a, DB>,
{
    async fn create_acls(&self, acls: &[AclBinding]) -> Result<()> {
        for acl in acls {
            acl.validate()?;
        }
        if acls.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for rows in acls.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<DB>::new(format!("INSERT INTO acls ({COLUMNS}) "));
            q.push_values(rows, |mut b, acl| {
                b.push_bind(acl.resource_type.name())
                    .push_bind(acl.resource_name.as_str())
                    .push_bind(acl.pattern_type.name())
                    .push_bind(acl.principal.as_str())
                    .push_bind(acl.host.as_str())
                    .push_bind(acl.operation.name())
                    .push_bind(acl.permission.name());
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build()
                .execute(&mut *tx)
                .await
                .map_err(Error::db("creating acls"))?;
        }
        tx.commit().await.map_err(Error::db("committing acls"))
    }

    async fn delete_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>> {
        let mut tx = self.begin_write().await?;
        let mut deleted = Vec::new();
        for acl in Self::read_acls(&mut *tx).await? {
            if !filter.matches(&acl) {
                continue;
            }
            let done = sqlx::query(
                "DELETE FROM acls WHERE resource_type = $1 AND resource_name = $2 \
                 AND pattern_type = $3 AND principal = $4 AND host = $5 \
                 AND operation = $6 AND permission = $7",
            )
            .bind(acl.resource_type.name())
            .bind(acl.resource_name.as_str())
            .bind(acl.pattern_type.name())
            .bind(acl.principal.as_str())
            .bind(acl.host.as_str())
            .bind(acl.operation.name())
            .bind(acl.permission.name())
            .execute(&mut *tx)
            .await
            .map_err(Error::db("deleting acls"))?;
            // A concurrent delete (PostgreSQL) may have taken it first.
            if DB::rows_affected(&done) > 0 {
                deleted.push(acl);
            }
        }
        tx.commit()
            .await
            .map_err(Error::db("committing acl deletion"))?;
        Ok(deleted)
    }

    async fn acls(&self) -> Result<Vec<AclBinding>> {
        Self::read_acls(&self.read).await
    }
}
