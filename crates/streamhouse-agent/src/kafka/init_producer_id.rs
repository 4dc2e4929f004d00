//! InitProducerId: for idempotent producers a new producer id at epoch 0,
//! or, given the current id and epoch, the next epoch of that id; for a
//! transactional id, the producer of that id at its next epoch, after the
//! transaction an earlier instance left open is aborted (the same ids,
//! epochs, sequence checks and transactions as gRPC producers).

use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use streamhouse_metadata::ProducerIdentity;

use super::Broker;
use super::errors::metadata_code;
use super::transactions::coordinator_code;
use crate::transactions::EndError;

/// The longest transaction timeout a producer may ask for (Kafka's
/// `transaction.max.timeout.ms` default, 15 minutes).
pub(super) const MAX_TRANSACTION_TIMEOUT_MS: i64 = 900_000;

/// InitProducerId versions served (v3 passes the current id and epoch;
/// v5 is for transactions of KIP-890).
pub(super) const VERSIONS: RangeInclusive<i16> = 0..=4;

pub(super) fn refuse(code: i16) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub(super) async fn handle(
    broker: &Broker,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let current =
        (request.producer_id.0 >= 0 && request.producer_epoch >= 0).then_some(ProducerIdentity {
            producer_id: request.producer_id.0,
            epoch: request.producer_epoch,
        });
    if let Some(transactional_id) = request
        .transactional_id
        .as_deref()
        .filter(|t| !t.is_empty())
    {
        let timeout = i64::from(request.transaction_timeout_ms);
        if !(1..=MAX_TRANSACTION_TIMEOUT_MS).contains(&timeout) {
            return refuse(ResponseError::InvalidTransactionTimeout.code());
        }
        return match crate::transactions::init_transactional(
            &broker.metadata,
            &broker.store,
            transactional_id,
            timeout,
            current,
        )
        .await
        {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id.producer_id))
                .with_producer_epoch(id.epoch),
            Err(e) => {
                tracing::info!(error = %e, "Kafka InitProducerId failed");
                let code = match &e {
                    // An earlier instance's transaction is being ended
                    // concurrently: the client retries.
                    EndError::Metadata(streamhouse_metadata::Error::InvalidTransactionState {
                        ..
                    }) => ResponseError::ConcurrentTransactions.code(),
                    other => coordinator_code(other),
                };
                refuse(code)
            }
        };
    }
    match broker.metadata.init_producer_id(current).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id.producer_id))
            .with_producer_epoch(id.epoch),
        Err(e) => {
            tracing::info!(error = %e, "Kafka InitProducerId failed");
            refuse(metadata_code(&e))
        }
    }
}
