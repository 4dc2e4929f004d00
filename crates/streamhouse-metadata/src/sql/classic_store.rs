//! [`ClassicGroupStore`] on SQL: every operation is one write transaction
//! that locks the group's `classic_groups` row, reads the database clock,
//! loads the state, expires timed-out sessions, applies the transition of
//! `classic_state.rs` and stores the state back.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::backend::{Backend, sql};
use super::classic_codec::{decode, encode};
use super::classic_state::{Group, validate_join, validate_sync};
use super::membership::split_subscription;
use super::{SqlStore, Tx};
use crate::classic::{
    ClassicGroupDescription, ClassicJoin, ClassicPhase, ClassicSync, GroupListing, JoinProgress,
    MAX_GROUP_BYTES, SyncProgress,
};
use crate::error::{Error, Result};
use crate::{ClassicGroupStore, validate_group_id};

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
    /// Creates the group's row if missing, locks it until the transaction
    /// ends and loads the group at the database time, with expired
    /// sessions removed.
    pub(super) async fn lock_classic(tx: &mut Tx<DB>, group: &str) -> Result<Group> {
        sqlx::query(
            "INSERT INTO classic_groups (group_id, state, member_count, live_until_ms) \
             VALUES ($1, '', 0, 0) ON CONFLICT (group_id) DO NOTHING",
        )
        .bind(group)
        .execute(&mut **tx)
        .await
        .map_err(Error::db("creating classic group"))?;
        let row = sqlx::query(sql::<DB>(
            "UPDATE classic_groups SET member_count = member_count WHERE group_id = $1 \
             RETURNING state, {now}",
        ))
        .bind(group)
        .fetch_one(&mut **tx)
        .await
        .map_err(Error::db("locking classic group"))?;
        let mut g = Self::group_of(group, row.get(1), &row.get::<String, _>(0))?;
        g.expire();
        Ok(g)
    }

    /// Every classic group, read outside a transaction, with expired
    /// sessions removed (not stored).
    pub(super) async fn classic_groups(&self) -> Result<Vec<Group>> {
        let rows = sqlx::query(sql::<DB>(
            "SELECT group_id, state, {now} FROM classic_groups ORDER BY group_id",
        ))
        .fetch_all(&self.read)
        .await
        .map_err(Error::db("listing classic groups"))?;
        rows.iter()
            .map(|r| {
                let id: String = r.get(0);
                let mut g = Self::group_of(&id, r.get(2), &r.get::<String, _>(1))?;
                g.expire();
                Ok(g)
            })
            .collect()
    }

    /// The classic group of this id, read outside a transaction, with
    /// expired sessions removed (not stored).
    pub(super) async fn classic_group(&self, group: &str) -> Result<Option<Group>> {
        let row = sqlx::query(sql::<DB>(
            "SELECT state, {now} FROM classic_groups WHERE group_id = $1",
        ))
        .bind(group)
        .fetch_optional(&self.read)
        .await
        .map_err(Error::db("reading classic group"))?;
        let Some(row) = row else { return Ok(None) };
        let mut g = Self::group_of(group, row.get(1), &row.get::<String, _>(0))?;
        g.expire();
        Ok(Some(g))
    }

    fn group_of(group: &str, now: i64, state: &str) -> Result<Group> {
        if state.is_empty() {
            return Ok(Group::empty(group, now));
        }
        decode(group, now, state)
    }

    /// Writes the group back; a group that never had a generation and has
    /// no members (a request for a group that does not exist) leaves no
    /// row. A group over [`MAX_GROUP_BYTES`] is not written (the
    /// transaction fails).
    async fn store_classic(tx: &mut Tx<DB>, g: &Group) -> Result<()> {
        let bytes = g.state_bytes();
        if bytes > MAX_GROUP_BYTES {
            return Err(Error::GroupMaxSizeReached {
                group: g.group_id.clone(),
                bytes,
                max: MAX_GROUP_BYTES,
            });
        }
        if g.generation == 0 && g.members.is_empty() {
            sqlx::query("DELETE FROM classic_groups WHERE group_id = $1")
                .bind(g.group_id.as_str())
                .execute(&mut **tx)
                .await
                .map_err(Error::db("storing classic group"))?;
            return Ok(());
        }
        sqlx::query(
            "UPDATE classic_groups SET state = $1, member_count = $2, live_until_ms = $3 \
             WHERE group_id = $4",
        )
        .bind(encode(g))
        .bind(g.members.len() as i64)
        .bind(g.live_until_ms())
        .bind(g.group_id.as_str())
        .execute(&mut **tx)
        .await
        .map_err(Error::db("storing classic group"))?;
        Ok(())
    }

    /// The classic group, if it has a row, read in the transaction (shared
    /// lock) with expired sessions removed (not stored).
    pub(super) async fn read_classic(tx: &mut Tx<DB>, group: &str) -> Result<Option<Group>> {
        let row = sqlx::query(sql::<DB>(
            "SELECT state, {now} FROM classic_groups WHERE group_id = $1{for_share}",
        ))
        .bind(group)
        .fetch_optional(&mut **tx)
        .await
        .map_err(Error::db("reading classic group"))?;
        let Some(row) = row else { return Ok(None) };
        let mut g = Self::group_of(group, row.get(1), &row.get::<String, _>(0))?;
        g.expire();
        Ok(Some(g))
    }

    /// Fails with [`Error::InconsistentGroupProtocol`] when the group id
    /// is a classic group with live members (for the server-side
    /// protocol's heartbeat).
    pub(super) async fn refuse_live_classic(tx: &mut Tx<DB>, group: &str) -> Result<()> {
        let live: Option<bool> = sqlx::query_scalar(sql::<DB>(
            "SELECT member_count > 0 AND live_until_ms >= {now} FROM classic_groups \
             WHERE group_id = $1",
        ))
        .bind(group)
        .fetch_optional(&mut **tx)
        .await
        .map_err(Error::db("reading classic group"))?;
        if live == Some(true) {
            return Err(Error::InconsistentGroupProtocol {
                group: group.to_string(),
                reason: "it is a classic (JoinGroup) group with live members".into(),
            });
        }
        Ok(())
    }

    /// Live members of the server-side protocol's group of this id.
    async fn consumer_members(tx: &mut Tx<DB>, group: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(sql::<DB>(
            "SELECT subscription FROM group_members WHERE group_id = $1 AND \
             {now} - last_heartbeat_ms <= session_timeout_ms",
        ))
        .bind(group)
        .fetch_all(&mut **tx)
        .await
        .map_err(Error::db("checking group members"))
    }

    /// Runs one transition on the locked group and stores the result
    /// (also when the transition fails: sessions may have expired).
    async fn classic_op<T>(
        &self,
        group: &str,
        op: impl FnOnce(&mut Group) -> Result<T> + Send,
    ) -> Result<T> {
        validate_group_id(group)?;
        let mut tx = self.begin_write().await?;
        let mut g = Self::lock_classic(&mut tx, group).await?;
        let out = op(&mut g);
        Self::store_classic(&mut tx, &g).await?;
        tx.commit()
            .await
            .map_err(Error::db("committing classic group"))?;
        out
    }
}

#[async_trait]
impl<DB: Backend> ClassicGroupStore for SqlStore<DB>
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
    async fn classic_join(&self, join: ClassicJoin) -> Result<JoinProgress> {
        validate_join(&join)?;
        let mut tx = self.begin_write().await?;
        let mut g = Self::lock_classic(&mut tx, &join.group_id).await?;
        if !Self::consumer_members(&mut tx, &join.group_id)
            .await?
            .is_empty()
        {
            return Err(Error::InconsistentGroupProtocol {
                group: join.group_id.clone(),
                reason: "it is a consumer group of the server-side protocol with live members"
                    .into(),
            });
        }
        let out = g.join(&join);
        Self::store_classic(&mut tx, &g).await?;
        tx.commit()
            .await
            .map_err(Error::db("committing classic group"))?;
        out
    }

    async fn classic_sync(&self, sync: ClassicSync) -> Result<SyncProgress> {
        validate_sync(&sync)?;
        let group = sync.group_id.clone();
        self.classic_op(&group, move |g| g.sync(&sync)).await
    }

    async fn classic_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<()> {
        self.classic_op(group, |g| g.heartbeat(member_id, instance_id, generation))
            .await
    }

    async fn classic_leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<()>>> {
        self.classic_op(group, |g| Ok(g.leave(members))).await
    }

    async fn describe_classic_group(&self, group: &str) -> Result<Option<ClassicGroupDescription>> {
        validate_group_id(group)?;
        Ok(self.classic_group(group).await?.map(|g| g.describe()))
    }

    async fn list_group_states(&self) -> Result<Vec<GroupListing>> {
        let rows = sqlx::query(sql::<DB>(
            "SELECT c.group_id, c.state, {now}, (SELECT COUNT(*) FROM group_members m \
             WHERE m.group_id = c.group_id AND \
             {now} - m.last_heartbeat_ms <= m.session_timeout_ms) \
             FROM classic_groups c ORDER BY c.group_id",
        ))
        .fetch_all(&self.read)
        .await
        .map_err(Error::db("listing classic groups"))?;
        let mut out = Vec::new();
        for r in &rows {
            let id: String = r.get(0);
            let mut g = Self::group_of(&id, r.get(2), &r.get::<String, _>(1))?;
            g.expire();
            if g.phase == ClassicPhase::Empty && r.get::<i64, _>(3) > 0 {
                // Taken over by the server-side protocol: listed below.
                continue;
            }
            out.push(GroupListing {
                group_id: id,
                protocol_type: g.protocol_type.clone(),
                state: g.phase.name().to_string(),
                group_type: "classic".into(),
            });
        }
        for (id, live) in crate::GroupStore::list_groups(self).await? {
            if out.iter().any(|l| l.group_id == id) {
                continue;
            }
            out.push(GroupListing {
                group_id: id,
                protocol_type: "consumer".into(),
                state: if live > 0 { "Stable" } else { "Empty" }.into(),
                group_type: "consumer".into(),
            });
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: &[(String, u32)],
    ) -> Result<Vec<Result<()>>> {
        validate_group_id(group)?;
        let mut tx = self.begin_write().await?;
        let classic = Self::read_classic(&mut tx, group).await?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT group_id FROM consumer_groups WHERE group_id = $1 UNION \
             SELECT group_id FROM group_offsets WHERE group_id = $1",
        )
        .bind(group)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::db("reading group"))?;
        if classic.is_none() && exists.is_none() {
            return Err(Error::GroupNotFound(group.to_string()));
        }
        // The topics live members consume: `None` when some member's
        // subscription cannot be read (then every topic counts).
        let mut subscribed: Option<Vec<String>> = match &classic {
            Some(g) => g.subscribed_topics(),
            None => Some(Vec::new()),
        };
        let consumer = Self::consumer_members(&mut tx, group).await?;
        if let Some(topics) = subscribed.as_mut() {
            for s in &consumer {
                topics.extend(split_subscription(s));
            }
        }
        let mut answers = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let busy = subscribed
                .as_ref()
                .is_none_or(|topics| topics.iter().any(|t| t == topic));
            if busy {
                answers.push(Err(Error::GroupSubscribedToTopic {
                    group: group.to_string(),
                    topic: topic.clone(),
                }));
                continue;
            }
            let topic_id = match Self::topic_partition(&mut tx, topic, *partition).await {
                Ok(id) => id,
                Err(e) => {
                    answers.push(Err(e));
                    continue;
                }
            };
            sqlx::query(
                "DELETE FROM group_offsets WHERE group_id = $1 AND topic_id = $2 \
                 AND partition_id = $3",
            )
            .bind(group)
            .bind(topic_id)
            .bind(i64::from(*partition))
            .execute(&mut *tx)
            .await
            .map_err(Error::db("deleting group offsets"))?;
            answers.push(Ok(()));
        }
        tx.commit()
            .await
            .map_err(Error::db("deleting group offsets"))?;
        Ok(answers)
    }
}
