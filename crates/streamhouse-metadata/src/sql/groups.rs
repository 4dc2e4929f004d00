//! [`GroupStore`] on SQL: listing, describing and deleting consumer groups,
//! and offset commits fenced by the member's epoch and its partitions. The
//! heartbeat is in `heartbeat.rs`.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::backend::{Backend, sql};
use super::membership::split_subscription;
use super::{SqlStore, Tx};
use crate::assignment::decode;
use crate::error::{Error, Result};
use crate::types::{
    GroupAssignment, GroupDescription, GroupHeartbeat, GroupMember, OffsetCommit, TopicPartition,
};
use crate::{GroupStore, OffsetStore, validate_group_id, validate_offsets};

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
    /// With a member: it must be live, at `epoch`, and own every partition
    /// of `offsets` (as the coordinator last recorded: what it reported plus
    /// what it was given since). Without: the group must have no live
    /// members.
    pub(super) async fn check_member(
        tx: &mut Tx<DB>,
        group: &str,
        member: Option<(&str, i32)>,
        offsets: &[OffsetCommit],
    ) -> Result<()> {
        // A classic group with live members fences by generation.
        let classic = Self::read_classic(tx, group)
            .await?
            .filter(|g| !g.members.is_empty());
        let Some((member_id, epoch)) = member else {
            if classic.is_some() {
                return Err(Error::GroupNotEmpty(group.to_string()));
            }
            let live: i64 = sqlx::query_scalar(sql::<DB>(
                "SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND \
                 {now} - last_heartbeat_ms <= session_timeout_ms",
            ))
            .bind(group)
            .fetch_one(&mut **tx)
            .await
            .map_err(Error::db("checking group members"))?;
            if live > 0 {
                return Err(Error::GroupNotEmpty(group.to_string()));
            }
            return Ok(());
        };
        if let Some(g) = classic {
            return g.check_commit(member_id, epoch);
        }
        let row = sqlx::query(sql::<DB>(
            "SELECT member_epoch, {now} - last_heartbeat_ms <= session_timeout_ms, owned \
             FROM group_members WHERE group_id = $1 AND member_id = $2",
        ))
        .bind(group)
        .bind(member_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(Error::db("checking group member"))?;
        let unknown = || Error::UnknownMember {
            group: group.to_string(),
            member_id: member_id.to_string(),
        };
        let row = row.ok_or_else(unknown)?;
        if !row.get::<bool, _>(1) {
            return Err(unknown());
        }
        let current = row.get::<i64, _>(0) as i32;
        if epoch != current {
            return Err(Error::FencedMemberEpoch {
                group: group.to_string(),
                member_id: member_id.to_string(),
                epoch,
                current,
            });
        }
        let owned = decode(&row.get::<String, _>(2));
        if let Some(o) = offsets
            .iter()
            .find(|o| !owned.contains(&TopicPartition::new(&o.topic, o.partition)))
        {
            return Err(Error::NotPartitionOwner {
                group: group.to_string(),
                member_id: member_id.to_string(),
                topic: o.topic.clone(),
                partition: o.partition,
            });
        }
        Ok(())
    }

    /// Locks the group's row until the transaction ends, creating it if
    /// missing (so a heartbeat joining meanwhile waits for the transaction
    /// instead of slipping in), and tells whether the group existed: its
    /// row or committed offsets.
    async fn lock_existing_group(tx: &mut Tx<DB>, group: &str) -> Result<bool> {
        let created: Option<String> = sqlx::query_scalar(sql::<DB>(
            "INSERT INTO consumer_groups (group_id, group_epoch, assignment_epoch, \
             created_at_ms) VALUES ($1, 0, 0, {now}) ON CONFLICT (group_id) DO NOTHING \
             RETURNING group_id",
        ))
        .bind(group)
        .fetch_optional(&mut **tx)
        .await
        .map_err(Error::db("locking group"))?;
        sqlx::query("UPDATE consumer_groups SET group_epoch = group_epoch WHERE group_id = $1")
            .bind(group)
            .execute(&mut **tx)
            .await
            .map_err(Error::db("locking group"))?;
        if created.is_none() {
            return Ok(true);
        }
        let offsets: Option<String> =
            sqlx::query_scalar("SELECT group_id FROM group_offsets WHERE group_id = $1 LIMIT 1")
                .bind(group)
                .fetch_optional(&mut **tx)
                .await
                .map_err(Error::db("reading group offsets"))?;
        Ok(offsets.is_some())
    }
}

#[async_trait]
impl<DB: Backend> GroupStore for SqlStore<DB>
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
    async fn group_heartbeat(&self, heartbeat: GroupHeartbeat) -> Result<GroupAssignment> {
        self.heartbeat(heartbeat).await
    }

    async fn list_groups(&self) -> Result<Vec<(String, usize)>> {
        let rows = sqlx::query(sql::<DB>(
            "SELECT g.group_id, (SELECT COUNT(*) FROM group_members m \
             WHERE m.group_id = g.group_id AND \
             {now} - m.last_heartbeat_ms <= m.session_timeout_ms) FROM \
             (SELECT group_id FROM consumer_groups UNION \
              SELECT group_id FROM group_offsets) g ORDER BY g.group_id",
        ))
        .fetch_all(&self.read)
        .await
        .map_err(Error::db("listing groups"))?;
        let mut groups: std::collections::BTreeMap<String, usize> = rows
            .iter()
            .map(|r| (r.get(0), r.get::<i64, _>(1) as usize))
            .collect();
        for g in self.classic_groups().await? {
            *groups.entry(g.group_id.clone()).or_default() += g.members.len();
        }
        Ok(groups.into_iter().collect())
    }

    async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        validate_group_id(group)?;
        let epoch: Option<i64> =
            sqlx::query_scalar("SELECT group_epoch FROM consumer_groups WHERE group_id = $1")
                .bind(group)
                .fetch_optional(&self.read)
                .await
                .map_err(Error::db("reading group"))?;
        let offsets = self.fetch_offsets(group).await?;
        let classic = self.classic_group(group).await?;
        if epoch.is_none() && offsets.is_empty() && classic.is_none() {
            return Err(Error::GroupNotFound(group.to_string()));
        }
        let rows = sqlx::query(sql::<DB>(
            "SELECT member_id, client_id, member_epoch, subscription, owned, target, \
             {now} - last_heartbeat_ms, session_timeout_ms, assignor FROM group_members \
             WHERE group_id = $1 ORDER BY member_id",
        ))
        .bind(group)
        .fetch_all(&self.read)
        .await
        .map_err(Error::db("reading group members"))?;
        let mut members: Vec<GroupMember> = rows
            .iter()
            .filter(|r| r.get::<i64, _>(6) <= r.get::<i64, _>(7))
            .map(|r| GroupMember {
                member_id: r.get(0),
                client_id: r.get(1),
                member_epoch: r.get::<i64, _>(2) as i32,
                subscription: split_subscription(&r.get::<String, _>(3)).collect(),
                owned: decode(&r.get::<String, _>(4)).into_iter().collect(),
                target: decode(&r.get::<String, _>(5)).into_iter().collect(),
                heartbeat_age: Duration::from_millis(r.get::<i64, _>(6).max(0) as u64),
                session_timeout: Duration::from_millis(r.get::<i64, _>(7).max(0) as u64),
                assignor: r.get(8),
            })
            .collect();
        let mut group_epoch = epoch.unwrap_or(0) as i32;
        if let Some(g) = classic.filter(|g| !g.members.is_empty()) {
            group_epoch = g.generation;
            members.extend(g.members.iter().map(|(id, m)| GroupMember {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                member_epoch: g.generation,
                subscription: g.member_topics(m),
                owned: Vec::new(),
                target: Vec::new(),
                heartbeat_age: Duration::from_millis((g.now - m.last_seen_ms).max(0) as u64),
                session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                assignor: g.protocol.clone(),
            }));
        }
        Ok(GroupDescription {
            group_id: group.to_string(),
            group_epoch,
            members,
            offsets,
        })
    }

    async fn delete_group(&self, group: &str) -> Result<()> {
        validate_group_id(group)?;
        // The check and the deletes in one transaction, under the group
        // row's lock: no member joins between them.
        let mut tx = self.begin_write().await?;
        let classic = Self::lock_classic(&mut tx, group).await?;
        let classic_existed = classic.generation > 0 || !classic.members.is_empty();
        if !Self::lock_existing_group(&mut tx, group).await? && !classic_existed {
            return Err(Error::GroupNotFound(group.to_string()));
        }
        Self::check_member(&mut tx, group, None, &[]).await?;
        if !classic.members.is_empty() {
            return Err(Error::GroupNotEmpty(group.to_string()));
        }
        for statement in [
            "DELETE FROM classic_groups WHERE group_id = $1",
            "DELETE FROM group_members WHERE group_id = $1",
            "DELETE FROM consumer_groups WHERE group_id = $1",
            "DELETE FROM group_offsets WHERE group_id = $1",
        ] {
            sqlx::query(statement)
                .bind(group)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("deleting group"))?;
        }
        tx.commit().await.map_err(Error::db("deleting group"))
    }

    async fn commit_group_offsets(
        &self,
        group: &str,
        member: Option<(&str, i32)>,
        offsets: &[OffsetCommit],
    ) -> Result<()> {
        validate_group_id(group)?;
        validate_offsets(offsets)?;
        let mut tx = self.begin_write().await?;
        Self::check_member(&mut tx, group, member, offsets).await?;
        for o in offsets {
            let topic_id = Self::topic_partition(&mut tx, &o.topic, o.partition).await?;
            Self::upsert_offset(
                &mut tx,
                group,
                topic_id,
                o.partition,
                o.offset,
                o.metadata.as_deref(),
            )
            .await?;
        }
        tx.commit().await.map_err(Error::db("committing offsets"))
    }
}
