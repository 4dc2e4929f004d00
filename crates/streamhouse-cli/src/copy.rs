//! `streamhouse copy`: copies a topic into another exactly once.

use std::time::{Duration, Instant};

use streamhouse_client::{AutoOffsetReset, Consumer, IsolationLevel, Producer, ProducerRecord};

use crate::BoxError;
use crate::signals::Shutdown;

/// Copy records from one topic to another exactly once: read committed
/// records as a member of --group, and write them, with the consumed
/// offsets, in one transaction per poll. Restarted after a crash, it goes
/// on from the last committed transaction.
#[derive(clap::Args)]
pub struct CopyArgs {
    /// Topic to read.
    source: String,
    /// Topic to write.
    destination: String,
    /// Consumer group whose offsets record the progress.
    #[arg(long, short)]
    group: String,
    /// Transactional id; a new copier with the same id fences older ones.
    #[arg(long)]
    transactional_id: String,
    /// Stop after this long without new records [default: never].
    #[arg(long)]
    idle_exit_ms: Option<u64>,
    /// Group session timeout, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// Most records per transaction.
    #[arg(long, default_value_t = 500)]
    max_records_per_transaction: usize,
}

/// Runs until `--idle-exit-ms` passes without records, or until SIGINT or
/// SIGTERM: then it finishes the transaction in progress, leaves the group
/// and exits 0 (a second signal exits at once).
pub async fn copy(target: &crate::target::Target, args: CopyArgs) -> Result<(), BoxError> {
    let mut shutdown = Shutdown::install()?;
    let consumer = Consumer::builder()
        .bootstrap(&target.agent)
        .security(target.security.clone())
        .agent_group(crate::group_of(target).await?)
        .group_id(args.group.clone())
        .subscribe([args.source.clone()])
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted)
        .session_timeout(Duration::from_millis(args.session_timeout_ms))
        .max_poll_records(args.max_records_per_transaction)
        .fetch_max_wait(Duration::from_millis(100))
        .build()
        .await?;
    let producer = Producer::builder()
        .bootstrap(&target.agent)
        .security(target.security.clone())
        .agent_group(crate::group_of(target).await?)
        .transactional_id(args.transactional_id.clone())
        .batch_timeout(Duration::from_millis(1))
        .build()
        .await?;
    producer.init_transactions().await?;
    let mut copied = 0u64;
    let mut last_record = Instant::now();
    loop {
        let records = tokio::select! {
            polled = consumer.poll(Duration::from_millis(200)) => polled?,
            _ = shutdown.requested() => break,
        };
        if records.is_empty() {
            if args
                .idle_exit_ms
                .is_some_and(|ms| last_record.elapsed() >= Duration::from_millis(ms))
            {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        producer.begin_transaction()?;
        let attempt = async {
            for r in &records {
                let record = ProducerRecord {
                    topic: args.destination.clone(),
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                    timestamp: Some(r.timestamp),
                    partition: None,
                };
                // Delivery is checked by commit_transaction.
                drop(producer.send_record(record).await?);
            }
            let group = consumer
                .group_metadata()
                .ok_or("the consumer has no group")?;
            producer
                .send_offsets_to_transaction(&consumer.positions(), &group)
                .await?;
            producer.commit_transaction().await?;
            Ok::<_, BoxError>(())
        };
        match attempt.await {
            Ok(()) => copied += records.len() as u64,
            Err(e) => {
                eprintln!(
                    "transaction failed ({e}); aborting and reading again from the last commit"
                );
                producer.abort_transaction().await?;
                consumer.rewind_to_committed().await?;
            }
        }
    }
    producer.close().await?;
    consumer.close().await?;
    eprintln!(
        "copied {copied} records from {} to {}",
        args.source, args.destination
    );
    Ok(())
}
