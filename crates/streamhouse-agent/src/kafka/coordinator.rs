//! FindCoordinator: every agent coordinates every group and transactional
//! id (the state is in the metadata store), so a key's coordinator is a
//! broker chosen deterministically from the key, spreading groups and
//! transactional ids over the agents.
//! Both the single key (to v3) and the batched keys (v4+) are answered.

use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use super::brokers::{self, KafkaBroker};

/// FindCoordinator versions served (share groups of v6 have no
/// coordinator here).
pub(super) const VERSIONS: RangeInclusive<i16> = 0..=6;

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

/// Where `key` of `key_type` is coordinated, or the error.
fn locate<'a>(
    brokers: &'a [KafkaBroker],
    key: &str,
    key_type: i8,
) -> Result<&'a KafkaBroker, (i16, String)> {
    match key_type {
        GROUP | TRANSACTION => {}
        other => {
            return Err((
                ResponseError::InvalidRequest.code(),
                format!("key type {other} has no coordinator here"),
            ));
        }
    }
    let node = brokers::leader(brokers, key, 0).ok_or_else(|| {
        (
            ResponseError::CoordinatorNotAvailable.code(),
            "no live agent with a Kafka listener".to_string(),
        )
    })?;
    brokers
        .iter()
        .find(|b| b.node_id == node)
        .ok_or_else(|| (ResponseError::CoordinatorNotAvailable.code(), String::new()))
}

pub(super) async fn handle(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let brokers = match brokers::live(broker).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "listing brokers for FindCoordinator failed");
            Vec::new()
        }
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let entry = Coordinator::default().with_key(key.clone());
                match locate(&brokers, key, request.key_type) {
                    Ok(b) => entry
                        .with_node_id(BrokerId(b.node_id))
                        .with_host(StrBytes::from_string(b.host.clone()))
                        .with_port(b.port),
                    Err((code, message)) => entry
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(Some(StrBytes::from_string(message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match locate(&brokers, &request.key, request.key_type) {
        Ok(b) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(b.node_id))
            .with_host(StrBytes::from_string(b.host.clone()))
            .with_port(b.port),
        Err((code, message)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message))),
    }
}
