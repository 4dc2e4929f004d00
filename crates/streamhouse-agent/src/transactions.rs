//! Ending transactions: commit or abort markers written as one object, then
//! one metadata transaction; and the job that aborts expired transactions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use streamhouse_core::{NewRecord, RecordBatch};
use streamhouse_metadata::{
    BatchCommit, ChunkCommit, EndTransaction, MetadataStore, ObjectCommit, ProducerIdentity,
};
use streamhouse_storage::object::ObjectBuilder;

/// Why ending a transaction failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EndError {
    #[error(transparent)]
    Metadata(#[from] streamhouse_metadata::Error),
    #[error(transparent)]
    Storage(#[from] streamhouse_storage::Error),
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

/// Ends the producer's transaction at `epoch` (`None`: whatever is open) by
/// writing a marker into every partition it wrote to, then committing the
/// markers, offsets and epoch bump in one metadata transaction. Retries when
/// the transaction gained a partition meanwhile.
pub(crate) async fn end_transaction(
    metadata: &Arc<dyn MetadataStore>,
    store: &Arc<dyn ObjectStore>,
    producer_id: i64,
    epoch: Option<i16>,
    commit: bool,
) -> Result<ProducerIdentity, EndError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let open = metadata.open_transaction(producer_id).await?;
        let markers = match &open {
            Some(t) if !t.partitions.is_empty() && epoch.is_none_or(|e| e == t.epoch) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let batch = marker(producer_id, t.epoch, commit, now);
                let mut builder = ObjectBuilder::with_capacity(batch.len() * t.partitions.len());
                let mut chunks = Vec::with_capacity(t.partitions.len());
                for &(topic_id, partition, _) in &t.partitions {
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
                Some(ObjectCommit {
                    object_key: key,
                    size_bytes: size,
                    chunks,
                })
            }
            _ => None,
        };
        let end = EndTransaction {
            producer_id,
            epoch,
            commit,
            markers,
        };
        match metadata.end_transaction(&end).await {
            Err(streamhouse_metadata::Error::TransactionPartitionsChanged(_)) if attempt < 5 => {
                continue;
            }
            r => return Ok(r?),
        }
    }
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
            match end_transaction(&metadata, &store, producer_id, None, false).await {
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
