//! Positions and offsets: commits (manual and automatic), committed
//! offsets, seeks, lag, and the starting position of new partitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use streamhouse_metadata::TopicPartition;
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;
use tokio::time::Instant;

use super::fetcher::isolation;
use super::{AutoOffsetReset, Consumer, Inner, PartitionState};
use crate::error::{Error, Result};

impl Consumer {
    pub(super) async fn maybe_auto_commit(&self) {
        if !self.inner.config.enable_auto_commit || self.inner.config.group_id.is_none() {
            return;
        }
        {
            let mut last = self.last_auto_commit.lock().expect("auto commit clock");
            if last.elapsed() < self.inner.config.auto_commit_interval {
                return;
            }
            *last = Instant::now();
        }
        if let Err(e) = self.commit().await {
            tracing::warn!(error = %e, "automatic offset commit failed");
        }
    }

    pub(super) fn positions_of(
        &self,
        partitions: &[TopicPartition],
    ) -> HashMap<TopicPartition, i64> {
        let state = self.inner.state.lock().expect("consumer state");
        partitions
            .iter()
            .filter_map(|tp| Some((tp.clone(), state.partitions.get(tp)?.position?)))
            .collect()
    }

    /// Commits the position of every assigned partition (what `poll` has
    /// returned) and waits for the commit.
    pub async fn commit(&self) -> Result<()> {
        let all: Vec<TopicPartition> = self.assignment();
        let positions = self.positions_of(&all);
        self.commit_offsets(positions).await
    }

    /// Commits the current positions in the background; failures are
    /// logged.
    pub fn commit_async(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.commit().await {
                tracing::warn!(error = %e, "asynchronous commit failed");
            }
        });
    }

    /// Commits explicit offsets (the next offset to read, per partition).
    pub async fn commit_offsets(&self, offsets: HashMap<TopicPartition, i64>) -> Result<()> {
        let Some(group) = self.inner.config.group_id.clone() else {
            return Err(Error::Config("committing offsets needs a group_id".into()));
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let member = self
            .inner
            .state
            .lock()
            .expect("consumer state")
            .member
            .clone();
        let request = pb::CommitOffsetsRequest {
            group_id: group,
            member_id: member.as_ref().map(|m| m.id.clone()),
            member_epoch: member.map_or(0, |m| m.epoch),
            offsets: offsets
                .into_iter()
                .map(|(tp, offset)| pb::OffsetToCommit {
                    topic: tp.topic,
                    partition: tp.partition,
                    offset,
                    metadata: None,
                })
                .collect(),
        };
        let r = self
            .inner
            .cluster
            .call(|mut c| {
                let r = request.clone();
                async move { c.commit_offsets(r).await }
            })
            .await?;
        if r.error != ErrorCode::None as i32 {
            let code = ErrorCode::try_from(r.error).unwrap_or(ErrorCode::Internal);
            return Err(Error::Group {
                code,
                message: r.message,
            });
        }
        Ok(())
    }

    /// The group's committed offset of a partition.
    pub async fn committed(&self, tp: &TopicPartition) -> Result<Option<i64>> {
        Ok(self.inner.committed().await?.get(tp).copied())
    }

    /// Moves a partition's position; the next poll returns records from
    /// `offset` (an offset out of range is reset per `auto_offset_reset`).
    pub fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<()> {
        let mut state = self.inner.state.lock().expect("consumer state");
        let s = &mut *state;
        let p = s
            .partitions
            .get_mut(tp)
            .ok_or_else(|| Error::NotAssigned(tp.clone()))?;
        s.buffered_bytes -= p.buffered_bytes;
        p.buffered_bytes = 0;
        p.buffer.clear();
        p.position = Some(offset);
        p.fetch_offset = offset;
        p.generation += 1;
        p.stopped_at_corrupt = false;
        drop(state);
        self.inner.fetch_wake.notify_one();
        Ok(())
    }

    /// Seeks to the first stored offset.
    pub async fn seek_to_beginning(&self, tp: &TopicPartition) -> Result<()> {
        let offset = self.inner.list_offset(tp, -2).await?;
        self.seek(tp, offset)
    }

    /// Seeks to the end (only records written from now on).
    pub async fn seek_to_end(&self, tp: &TopicPartition) -> Result<()> {
        let offset = self.inner.list_offset(tp, -1).await?;
        self.seek(tp, offset)
    }

    /// Seeks to the first record at or after `timestamp` (ms).
    pub async fn seek_to_timestamp(&self, tp: &TopicPartition, timestamp: i64) -> Result<()> {
        let offset = self.inner.list_offset(tp, timestamp).await?;
        self.seek(tp, offset)
    }

    /// The next offset `poll` returns for a partition.
    pub fn position(&self, tp: &TopicPartition) -> Result<i64> {
        let state = self.inner.state.lock().expect("consumer state");
        state
            .partitions
            .get(tp)
            .ok_or_else(|| Error::NotAssigned(tp.clone()))?
            .position
            .ok_or_else(|| Error::NoOffset(tp.clone()))
    }

    /// The positions of every assigned partition (what `poll` returned).
    pub fn positions(&self) -> HashMap<TopicPartition, i64> {
        self.positions_of(&self.assignment())
    }

    /// Moves every assigned partition back to the group's committed offset
    /// (or the reset policy): for reprocessing after an aborted transaction.
    pub async fn rewind_to_committed(&self) -> Result<()> {
        let committed = self.inner.committed().await?;
        for tp in self.assignment() {
            let offset = self.inner.initial_position(&tp, &committed).await?;
            self.seek(&tp, offset)?;
        }
        Ok(())
    }

    /// Records between the position and the end of each assigned partition.
    pub async fn lag(&self) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut out = BTreeMap::new();
        for tp in self.assignment() {
            let end = self.inner.list_offset(&tp, -1).await?;
            if let Ok(position) = self.position(&tp) {
                out.insert(tp, (end - position).max(0));
            }
        }
        Ok(out)
    }
}

impl Inner {
    pub(super) async fn committed(&self) -> Result<HashMap<TopicPartition, i64>> {
        let Some(group) = self.config.group_id.clone() else {
            return Ok(HashMap::new());
        };
        let r = self
            .cluster
            .call(|mut c| {
                let group_id = group.clone();
                async move { c.fetch_offsets(pb::FetchOffsetsRequest { group_id }).await }
            })
            .await?;
        Ok(r.offsets
            .into_iter()
            .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
            .collect())
    }

    /// One ListOffsets answer: -2 earliest, -1 latest, else a timestamp.
    pub(super) async fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<i64> {
        let request = pb::ListOffsetsRequest {
            partitions: vec![pb::ListOffsetsPartition {
                topic: tp.topic.clone(),
                partition: tp.partition,
                timestamp,
            }],
            isolation_level: isolation(self.config.isolation_level) as i32,
        };
        let r = self
            .cluster
            .call(|mut c| {
                let r = request.clone();
                async move { c.list_offsets(r).await }
            })
            .await?;
        let p = r
            .partitions
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config("empty list offsets answer".into()))?;
        if p.error != ErrorCode::None as i32 {
            let code = ErrorCode::try_from(p.error).unwrap_or(ErrorCode::Internal);
            return Err(match code {
                ErrorCode::UnknownTopic => Error::UnknownTopic(tp.topic.clone()),
                _ => Error::Rejected {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    code,
                    message: p.message,
                },
            });
        }
        Ok(p.offset)
    }

    /// The starting position of a partition: committed, else the reset
    /// policy.
    pub(super) async fn initial_position(
        &self,
        tp: &TopicPartition,
        committed: &HashMap<TopicPartition, i64>,
    ) -> Result<i64> {
        if let Some(&o) = committed.get(tp) {
            return Ok(o);
        }
        match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => self.list_offset(tp, -2).await,
            AutoOffsetReset::Latest => self.list_offset(tp, -1).await,
            AutoOffsetReset::None => Err(Error::NoOffset(tp.clone())),
        }
    }

    pub(super) async fn add_partitions(&self, added: &[TopicPartition]) -> Result<()> {
        let committed = self.committed().await?;
        for tp in added {
            let position = self.initial_position(tp, &committed).await?;
            let mut state = self.state.lock().expect("consumer state");
            state.partitions.insert(
                tp.clone(),
                PartitionState {
                    position: Some(position),
                    fetch_offset: position,
                    ..Default::default()
                },
            );
        }
        Ok(())
    }
}
