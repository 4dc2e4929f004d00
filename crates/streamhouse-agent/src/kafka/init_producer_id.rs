//! InitProducerId for idempotent producers: a new producer id at epoch 0,
//! or, given the current id and epoch, the next epoch of that id (the same
//! ids, epochs and sequence checks as gRPC producers).

use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use streamhouse_metadata::ProducerIdentity;

use super::Broker;
use super::errors::metadata_code;

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
    if request.transactional_id.is_some() {
        // Transactional producers need the transaction coordinator APIs,
        // which this listener does not serve.
        return refuse(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    let current =
        (request.producer_id.0 >= 0 && request.producer_epoch >= 0).then_some(ProducerIdentity {
            producer_id: request.producer_id.0,
            epoch: request.producer_epoch,
        });
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
