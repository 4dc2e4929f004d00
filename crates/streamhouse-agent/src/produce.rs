//! The produce path shared by every front door: split each partition's
//! bytes into batches, validate them all (in parallel, off the async
//! reactor when the work is heavy), then submit the valid ones to the
//! pipeline in order and wait for their commits.
//!
//! ```text
//! request ─▶ per partition: split ─▶ validate (blocking pool if compressed/large)
//!         ─▶ submit in request order (all join the same flush) ─▶ await commits
//! ```
//!
//! A partition whose bytes hold any invalid batch is refused whole, alone:
//! other partitions of the request still commit.

use std::sync::Arc;

use bytes::Bytes;
use streamhouse_core::{Compression, batches};
use streamhouse_proto::ErrorCode;
use streamhouse_storage::{Appended, Appending, BatchValidator, ValidBatch, WritePipeline};

use crate::error::{describe, error_code};

/// Partition entries at least this large are validated on the blocking
/// pool even when uncompressed.
const BLOCKING_VALIDATION_BYTES: usize = 256 << 10;

/// The bytes a client sent for one partition.
pub(crate) struct PartitionInput<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub records: &'a Bytes,
}

/// What became of one partition's bytes.
pub(crate) enum PartitionOutcome {
    /// Nothing of the partition was written: its bytes are not valid.
    Refused { code: ErrorCode, message: String },
    /// Each batch's commit, in order.
    Batches(Vec<Result<Appended, BatchFailure>>),
}

/// Why one batch was not appended.
pub(crate) struct BatchFailure {
    pub code: ErrorCode,
    pub message: String,
}

impl From<streamhouse_storage::Error> for BatchFailure {
    fn from(e: streamhouse_storage::Error) -> Self {
        BatchFailure {
            code: error_code(&e),
            message: describe(&e),
        }
    }
}

/// Validates and appends every partition of a request; see the module docs.
pub(crate) async fn produce(
    pipeline: &Arc<WritePipeline>,
    inputs: &[PartitionInput<'_>],
) -> Vec<PartitionOutcome> {
    submit(pipeline, inputs).await.committed().await
}

/// A request's batches handed to the pipeline (or refused), in request
/// order, their commits not yet awaited.
pub(crate) struct Submitted(
    Vec<Result<Vec<streamhouse_storage::Result<Appending>>, PartitionOutcome>>,
);

/// Validates every partition of a request and submits the valid batches to
/// the pipeline in request order; [`Submitted::committed`] awaits their
/// commits. Requests submitted one after the other keep their order in the
/// pipeline, whenever their commits are awaited.
pub(crate) async fn submit(
    pipeline: &Arc<WritePipeline>,
    inputs: &[PartitionInput<'_>],
) -> Submitted {
    // Start every partition's validation before waiting for any.
    let mut checks = Vec::with_capacity(inputs.len());
    for input in inputs {
        checks.push(start_validation(pipeline, input).await);
    }
    let mut validated = Vec::with_capacity(inputs.len());
    for check in checks {
        validated.push(match check {
            Validation::Done(r) => r,
            Validation::Running(task) => task.await.unwrap_or_else(|e| {
                Err(refusal(
                    ErrorCode::Internal,
                    format!("batch validation failed: {e}"),
                ))
            }),
        });
    }
    // Submit every partition's batches together, so they join one flush.
    let mut counts = Vec::with_capacity(validated.len());
    let mut all = Vec::new();
    let mut submitted = Vec::with_capacity(validated.len());
    for valid in validated {
        match valid {
            Err(refused) => submitted.push(Err(refused)),
            Ok(batches) => {
                counts.push(batches.len());
                all.extend(batches);
                submitted.push(Ok(Vec::new()));
            }
        }
    }
    let mut appends = pipeline.submit_all(all).await.into_iter();
    let mut counts = counts.into_iter();
    for entry in submitted.iter_mut().flatten() {
        let n = counts.next().expect("a count per valid partition");
        entry.extend(appends.by_ref().take(n));
    }
    Submitted(submitted)
}

impl Submitted {
    /// Waits for every submitted batch's commit: one outcome per partition,
    /// in request order.
    pub(crate) async fn committed(self) -> Vec<PartitionOutcome> {
        let mut out = Vec::with_capacity(self.0.len());
        for entry in self.0 {
            out.push(match entry {
                Err(refused) => refused,
                Ok(appends) => {
                    let mut results = Vec::with_capacity(appends.len());
                    for submitted in appends {
                        results.push(match submitted {
                            Ok(appending) => appending.await.map_err(BatchFailure::from),
                            Err(e) => Err(e.into()),
                        });
                    }
                    PartitionOutcome::Batches(results)
                }
            });
        }
        out
    }
}

/// The partition's valid batches, or what to answer instead.
type Validated = Result<Vec<ValidBatch>, PartitionOutcome>;

enum Validation {
    Done(Validated),
    Running(tokio::task::JoinHandle<Validated>),
}

fn refusal(code: ErrorCode, message: String) -> PartitionOutcome {
    PartitionOutcome::Refused { code, message }
}

async fn start_validation(pipeline: &WritePipeline, input: &PartitionInput<'_>) -> Validation {
    let validator = match pipeline.validator(input.topic, input.partition).await {
        Ok(v) => v,
        Err(e) => return Validation::Done(Err(unresolved(input, e))),
    };
    let records = input.records.clone();
    let heavy = records.len() >= BLOCKING_VALIDATION_BYTES
        || batches(&records).any(|b| {
            b.is_ok_and(|(h, _)| h.attributes.compression().ok() != Some(Compression::None))
        });
    if heavy {
        Validation::Running(tokio::task::spawn_blocking(move || {
            validate_all(&validator, &records)
        }))
    } else {
        Validation::Done(validate_all(&validator, &records))
    }
}

/// The answer for a partition whose topic or partition could not be
/// resolved: malformed bytes are refused as such; otherwise each batch
/// fails with the resolution error (a client refreshes its metadata).
fn unresolved(input: &PartitionInput<'_>, e: streamhouse_storage::Error) -> PartitionOutcome {
    let mut framed = 0;
    for item in batches(input.records) {
        let framing = item.and_then(|(h, raw)| {
            streamhouse_core::BatchHeader::validate(raw, usize::MAX).map(|_| h)
        });
        if let Err(source) = framing {
            let e = streamhouse_storage::Error::InvalidBatch {
                topic: input.topic.to_string(),
                partition: input.partition,
                source,
            };
            return refusal(error_code(&e), describe(&e));
        }
        framed += 1;
    }
    let failure = BatchFailure::from(e);
    PartitionOutcome::Batches(
        (0..framed.max(1))
            .map(|_| {
                Err(BatchFailure {
                    code: failure.code,
                    message: failure.message.clone(),
                })
            })
            .collect(),
    )
}

/// Splits `records` into batches and validates each; the first invalid one
/// refuses the whole partition.
fn validate_all(validator: &BatchValidator, records: &Bytes) -> Validated {
    let mut valid = Vec::new();
    for item in batches(records) {
        let checked = item
            .map_err(|source| streamhouse_storage::Error::InvalidBatch {
                topic: validator.topic().to_string(),
                partition: validator.partition(),
                source,
            })
            .and_then(|(_, raw)| validator.validate(records.slice_ref(raw)));
        match checked {
            Ok(v) => valid.push(v),
            Err(e) => return Err(refusal(error_code(&e), describe(&e))),
        }
    }
    if valid.is_empty() {
        let e = streamhouse_storage::Error::InvalidBatch {
            topic: validator.topic().to_string(),
            partition: validator.partition(),
            source: streamhouse_core::Error::InvalidField {
                field: "records",
                reason: "no record batch".into(),
            },
        };
        return Err(refusal(error_code(&e), describe(&e)));
    }
    Ok(valid)
}
