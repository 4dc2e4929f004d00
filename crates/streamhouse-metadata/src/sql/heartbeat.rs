//! The SQL of a consumer group heartbeat: lock the group, load its members,
//! apply the heartbeat (see `membership.rs`), read the partition counts of
//! the subscribed topics, store what changed.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::backend::{Backend, sql};
use super::membership::{GroupState, MemberRow, validate_heartbeat};
use super::{SqlStore, Tx};
use crate::assignment::{decode, decode_counts, encode, encode_counts};
use crate::error::{Error, Result};
use crate::types::{GroupAssignment, GroupHeartbeat};

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
    /// See [`crate::GroupStore::group_heartbeat`].
    pub(super) async fn heartbeat(&self, hb: GroupHeartbeat) -> Result<GroupAssignment> {
        validate_heartbeat(&hb)?;
        let mut tx = self.begin_write().await?;
        if hb.member_epoch != crate::types::LEAVE_GROUP_EPOCH {
            Self::refuse_live_classic(&mut tx, &hb.group_id).await?;
        }
        let mut group = Self::lock_group(&mut tx, &hb.group_id).await?;
        group.expire_members();
        let member_id = group.apply_heartbeat(&hb)?;
        let topics = Self::partition_counts(&mut tx, group.subscribed_topics()).await?;
        group.note_topics(&topics);
        if group.needs_assignment() {
            group.reassign(&topics);
        }
        let answer = match &member_id {
            Some(id) => group.answer(id),
            None => group.left(hb.member_id),
        };
        Self::store_group(&mut tx, &group).await?;
        tx.commit()
            .await
            .map_err(Error::db("committing heartbeat"))?;
        Ok(answer)
    }

    /// Creates the group if needed, locks its row (one heartbeat of a group
    /// at a time) and reads its epochs, the topics its assignment was
    /// computed from, its members and the database clock.
    async fn lock_group(tx: &mut Tx<DB>, group: &str) -> Result<GroupState> {
        sqlx::query(sql::<DB>(
            "INSERT INTO consumer_groups (group_id, group_epoch, assignment_epoch, \
             created_at_ms) VALUES ($1, 0, 0, {now}) ON CONFLICT (group_id) DO NOTHING",
        ))
        .bind(group)
        .execute(&mut **tx)
        .await
        .map_err(Error::db("creating group"))?;
        let row = sqlx::query(sql::<DB>(
            "UPDATE consumer_groups SET group_epoch = group_epoch WHERE group_id = $1 \
             RETURNING group_epoch, assignment_epoch, {now}, assignment_topics",
        ))
        .bind(group)
        .fetch_one(&mut **tx)
        .await
        .map_err(Error::db("locking group"))?;
        let rows = sqlx::query(
            "SELECT member_id, member_epoch, client_id, subscription, session_timeout_ms, \
             last_heartbeat_ms, target, owned, assignor FROM group_members WHERE group_id = $1",
        )
        .bind(group)
        .fetch_all(&mut **tx)
        .await
        .map_err(Error::db("reading group members"))?;
        let members = rows
            .iter()
            .map(|r| {
                let member = MemberRow {
                    member_epoch: r.get(1),
                    client_id: r.get(2),
                    subscription: r.get(3),
                    session_timeout_ms: r.get(4),
                    last_heartbeat_ms: r.get(5),
                    target: decode(&r.get::<String, _>(6)),
                    owned: decode(&r.get::<String, _>(7)),
                    assignor: r.get(8),
                    dirty: false,
                };
                (r.get::<String, _>(0), member)
            })
            .collect();
        Ok(GroupState {
            group_id: group.to_string(),
            now: row.get(2),
            group_epoch: row.get(0),
            assignment_epoch: row.get(1),
            assignment_topics: decode_counts(&row.get::<String, _>(3)),
            members,
            gone: Vec::new(),
        })
    }

    /// The partition counts of the topics among `topics` that exist.
    async fn partition_counts(
        tx: &mut Tx<DB>,
        topics: BTreeSet<String>,
    ) -> Result<BTreeMap<String, u32>> {
        let mut counts = BTreeMap::new();
        for t in topics {
            let count: Option<i64> =
                sqlx::query_scalar("SELECT partition_count FROM topics WHERE name = $1")
                    .bind(&t)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(Error::db("reading subscribed topics"))?;
            if let Some(c) = count {
                counts.insert(t, c as u32);
            }
        }
        Ok(counts)
    }

    /// Deletes the members that are gone, writes back the changed ones, the
    /// group's epochs and the topics its assignment was computed from.
    async fn store_group(tx: &mut Tx<DB>, group: &GroupState) -> Result<()> {
        let group_id = group.group_id.as_str();
        for id in &group.gone {
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND member_id = $2")
                .bind(group_id)
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(Error::db("removing group member"))?;
        }
        for (id, m) in group.members.iter().filter(|(_, m)| m.dirty) {
            sqlx::query(
                "INSERT INTO group_members (group_id, member_id, member_epoch, client_id, \
                 subscription, session_timeout_ms, last_heartbeat_ms, target, owned, assignor) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (group_id, member_id) DO UPDATE SET \
                 member_epoch = excluded.member_epoch, client_id = excluded.client_id, \
                 subscription = excluded.subscription, \
                 session_timeout_ms = excluded.session_timeout_ms, \
                 last_heartbeat_ms = excluded.last_heartbeat_ms, \
                 target = excluded.target, owned = excluded.owned, \
                 assignor = excluded.assignor",
            )
            .bind(group_id)
            .bind(id)
            .bind(m.member_epoch)
            .bind(&m.client_id)
            .bind(&m.subscription)
            .bind(m.session_timeout_ms)
            .bind(m.last_heartbeat_ms)
            .bind(encode(&m.target))
            .bind(encode(&m.owned))
            .bind(&m.assignor)
            .execute(&mut **tx)
            .await
            .map_err(Error::db("storing group member"))?;
        }
        sqlx::query(
            "UPDATE consumer_groups SET group_epoch = $1, assignment_epoch = $2, \
             assignment_topics = $3 WHERE group_id = $4",
        )
        .bind(group.group_epoch)
        .bind(group.assignment_epoch)
        .bind(encode_counts(&group.assignment_topics))
        .bind(group_id)
        .execute(&mut **tx)
        .await
        .map_err(Error::db("storing group epoch"))?;
        Ok(())
    }
}
