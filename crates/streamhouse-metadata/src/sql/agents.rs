//! [`AgentStore`] on SQL: the agent registry. Each agent id gets a stable
//! node id (its Kafka broker id) on first registration, in `agent_nodes`,
//! which deregistration keeps.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::SqlStore;
use super::backend::{Backend, sql};
use crate::AgentStore;
use crate::error::{Error, Result};
use crate::types::{AgentInfo, AgentRegistration};

#[async_trait]
impl<DB: Backend> AgentStore for SqlStore<DB>
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
    async fn register_agent(&self, agent: AgentRegistration) -> Result<()> {
        for (field, value) in [
            ("agent id", &agent.agent_id),
            ("agent group", &agent.group),
            ("agent address", &agent.address),
        ] {
            if value.is_empty() {
                return Err(Error::InvalidArgument {
                    field,
                    reason: "is empty".into(),
                });
            }
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(sql::<DB>(
            "INSERT INTO agents (agent_id, agent_group, address, zone, kafka_address, \
             started_at_ms, heartbeat_at_ms) VALUES ($1, $2, $3, $4, $5, {now}, {now}) \
             ON CONFLICT (agent_id) DO UPDATE SET agent_group = excluded.agent_group, \
             address = excluded.address, zone = excluded.zone, \
             kafka_address = excluded.kafka_address, \
             started_at_ms = excluded.started_at_ms, \
             heartbeat_at_ms = excluded.heartbeat_at_ms",
        ))
        .bind(&agent.agent_id)
        .bind(&agent.group)
        .bind(&agent.address)
        .bind(&agent.zone)
        .bind(&agent.kafka_address)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("registering agent"))?;
        sqlx::query(
            "INSERT INTO agent_nodes (agent_id) VALUES ($1) ON CONFLICT (agent_id) DO NOTHING",
        )
        .bind(&agent.agent_id)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("assigning the agent's node id"))?;
        tx.commit().await.map_err(Error::db("registering agent"))
    }

    async fn heartbeat_agent(&self, agent_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(sql::<DB>(
            "UPDATE agents SET heartbeat_at_ms = {now} WHERE agent_id = $1",
        ))
        .bind(agent_id)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("recording heartbeat"))?;
        if DB::rows_affected(&done) == 0 {
            return Err(Error::AgentNotFound(agent_id.to_string()));
        }
        tx.commit().await.map_err(Error::db("recording heartbeat"))
    }

    async fn deregister_agent(&self, agent_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM agents WHERE agent_id = $1")
            .bind(agent_id)
            .execute(&mut *tx)
            .await
            .map_err(Error::db("deregistering agent"))?;
        tx.commit().await.map_err(Error::db("deregistering agent"))
    }

    async fn list_agents(&self, group: Option<&str>) -> Result<Vec<AgentInfo>> {
        let rows = sqlx::query(sql::<DB>(
            "SELECT a.agent_id, a.agent_group, a.address, a.zone, a.started_at_ms, \
             a.heartbeat_at_ms, {now} - a.heartbeat_at_ms, n.node_id, a.kafka_address \
             FROM agents a JOIN agent_nodes n ON n.agent_id = a.agent_id \
             WHERE $1 IS NULL OR a.agent_group = $1 ORDER BY a.agent_id",
        ))
        .bind(group)
        .fetch_all(&self.read)
        .await
        .map_err(Error::db("listing agents"))?;
        rows.into_iter()
            .map(|row| {
                let node_id: i64 = row.get(7);
                Ok(AgentInfo {
                    agent_id: row.get(0),
                    group: row.get(1),
                    address: row.get(2),
                    zone: row.get(3),
                    started_at_ms: row.get(4),
                    last_heartbeat_ms: row.get(5),
                    heartbeat_age: Duration::from_millis(row.get::<i64, _>(6).max(0) as u64),
                    node_id: i32::try_from(node_id).map_err(|_| Error::InvalidArgument {
                        field: "agent node id",
                        reason: format!("{node_id} does not fit in 32 bits"),
                    })?,
                    kafka_address: row.get(8),
                })
            })
            .collect()
    }
}
