//! Ending transactions: commit or abort markers written as one object, then
//! one metadata transaction; and the job that aborts expired transactions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use streamhouse_core::{NewRecord, RecordBatch};
use streamhouse_metadata::{
    BatchCommit, ChunkCommit, EndKind, EndTransaction, MetadataStore, ObjectCommit,
    ProducerIdentity,
};
use streamhouse_storage::object::ObjectBuilder;

/// Why ending a transaction failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EndError {
    #[error(transparent)]
    Metadata(#[from] streamhouse_metadata::Error),
    #[error(transparent)]
    Storage(#[from] streamhouse_storage::Error),
    #[error("transactional id {transactional_id:?} does not belong to producer {producer_id}")]
    ProducerIdMapping {
        transactional_id: String,
        producer_id: i64,
    },
}

/// A control batch marking the end of a transaction (Kafka's layout: key =
/// version 0 and type 0 abort / 1 commit; value = version 0 and the
/// coordinator epoch).
fn marker(producer_id: i64, epoch: i16, commit: bool, now_ms: i64) -> Bytes {
    let mut batch = RecordBatch::from_records([NewRecord {
        timestamp: now_ms,
        key: Some(Bytes::from_static(if commit {
            &[0, 0, 0, 1]
        } else {
            &[0, 0, 0, 0]
        })),
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        headers: Vec::new(),
    }])
    .with_producer(producer_id, epoch, -1);
    batch.attributes = batch.attributes.with_transactional(true).with_control(true);
    batch.encode().expect("a marker batch always encodes")
}

/// What an end does to the producer's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Native producers (and Kafka clients of KIP-890): the producer moves
    /// to its next epoch.
    BumpEpoch,
    /// Kafka clients before KIP-890 keep their epoch; the end names the
    /// transaction open when it arrived (see [`EndKind::KeepEpoch`]).
    KeepEpoch,
}

/// Ends the producer's transaction at `epoch` (`None`: whatever is open) by
/// writing a marker into every partition it wrote to, then committing the
/// markers, offsets and end in one metadata transaction. Retries when the
/// transaction gained a partition meanwhile.
pub(crate) async fn end_transaction(
    metadata: &Arc<dyn MetadataStore>,
    store: &Arc<dyn ObjectStore>,
    producer_id: i64,
    epoch: Option<i16>,
    commit: bool,
    ending: Ending,
) -> Result<ProducerIdentity, EndError> {
    let mut attempt = 0;
    // The transaction a keep-epoch end names: the one open when it
    // arrived, whatever happens while it is retried.
    let mut named: Option<Option<i64>> = None;
    loop {
        attempt += 1;
        let open = metadata.open_transaction(producer_id).await?;
        let kind = match ending {
            Ending::BumpEpoch => EndKind::BumpEpoch,
            Ending::KeepEpoch => EndKind::KeepEpoch {
                started_at_ms: *named.get_or_insert(open.as_ref().map(|t| t.started_at_ms)),
            },
        };
        let ends_open = match kind {
            EndKind::BumpEpoch => true,
            EndKind::KeepEpoch { started_at_ms } => {
                started_at_ms.is_some() && open.as_ref().map(|t| t.started_at_ms) == started_at_ms
            }
        };
        let markers = match &open {
            Some(t)
                if ends_open && !t.partitions.is_empty() && epoch.is_none_or(|e| e == t.epoch) =>
            {
                Some(write_markers(store, producer_id, t, commit).await?)
            }
            _ => None,
        };
        let end = EndTransaction {
            producer_id,
            epoch,
            commit,
            markers,
            kind,
        };
        match metadata.end_transaction(&end).await {
            Err(streamhouse_metadata::Error::TransactionPartitionsChanged(_)) if attempt < 5 => {
                continue;
            }
            r => return Ok(r?),
        }
    }
}

/// Uploads one object with a marker for every partition `open` wrote to;
/// its commit.
async fn write_markers(
    store: &Arc<dyn ObjectStore>,
    producer_id: i64,
    open: &streamhouse_metadata::OpenTransaction,
    commit: bool,
) -> Result<ObjectCommit, EndError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let batch = marker(producer_id, open.epoch, commit, now);
    let mut builder = ObjectBuilder::with_capacity(batch.len() * open.partitions.len());
    let mut chunks = Vec::with_capacity(open.partitions.len());
    for &(topic_id, partition, _) in &open.partitions {
        let at = builder.push_batch(topic_id, partition, &batch, 1, now, now);
        chunks.push(ChunkCommit {
            topic_id,
            partition,
            byte_start: at,
            batches: vec![BatchCommit {
                byte_length: batch.len() as u64,
                offset_span: 1,
                record_count: 1,
                min_timestamp: now,
                max_timestamp: now,
                producer: None,
            }],
        });
    }
    let (object, _) = builder.finish();
    let size = object.len() as u64;
    let key = streamhouse_storage::upload_object(store.clone(), object).await?;
    Ok(ObjectCommit {
        object_key: key,
        size_bytes: size,
        chunks,
    })
}

/// Initializes the producer of `transactional_id` for a new instance:
/// aborts the transaction an earlier instance left open, then bumps the
/// epoch, fencing that instance for good. With `current` (a Kafka client
/// bumping its own epoch, KIP-360) that identity must be the producer's
/// current one, or the caller is fenced.
pub(crate) async fn init_transactional(
    metadata: &Arc<dyn MetadataStore>,
    store: &Arc<dyn ObjectStore>,
    transactional_id: &str,
    timeout_ms: i64,
    current: Option<ProducerIdentity>,
) -> Result<ProducerIdentity, EndError> {
    if let Some(current) = current {
        let ids = [transactional_id.to_string()];
        let known = metadata.transactions(Some(&ids)).await?;
        match known.first() {
            Some(t) if t.producer_id == current.producer_id && t.epoch == current.epoch => {}
            Some(t) if t.producer_id == current.producer_id => {
                return Err(streamhouse_metadata::Error::ProducerFenced {
                    producer_id: current.producer_id,
                    epoch: current.epoch,
                    current_epoch: t.epoch,
                }
                .into());
            }
            _ => {
                return Err(EndError::ProducerIdMapping {
                    transactional_id: transactional_id.to_string(),
                    producer_id: current.producer_id,
                });
            }
        }
    }
    if let Some(pid) = metadata.transactional_producer_id(transactional_id).await?
        && metadata.open_transaction(pid).await?.is_some()
    {
        end_transaction(metadata, store, pid, None, false, Ending::BumpEpoch).await?;
    }
    Ok(metadata
        .init_transactional_producer(transactional_id, timeout_ms)
        .await?)
}

/// Aborts transactions that stayed open past their timeout, every `every`.
pub(crate) async fn abort_expired(
    metadata: Arc<dyn MetadataStore>,
    store: Arc<dyn ObjectStore>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let expired = match metadata.expired_transactions().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "finding expired transactions failed");
                continue;
            }
        };
        for producer_id in expired {
            match end_transaction(
                &metadata,
                &store,
                producer_id,
                None,
                false,
                Ending::BumpEpoch,
            )
            .await
            {
                Ok(next) => tracing::info!(
                    producer_id,
                    epoch = next.epoch,
                    "aborted a transaction past its timeout"
                ),
                Err(e) => {
                    tracing::warn!(producer_id, error = %e, "aborting expired transaction failed")
                }
            }
        }
    }
}
