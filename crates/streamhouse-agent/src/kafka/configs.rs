//! Topic configs over Kafka: DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs, and the translation between Kafka config names
//! and a topic's settings (`retention.ms` is the topic's retention; the
//! keys of `TOPIC_CONFIG_KEYS` are its config map; a few read-only values
//! describe what the agent enforces).

use std::collections::HashMap;
use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{TOPIC_CONFIG_KEYS, TopicAlter};

use super::Broker;
use super::errors::metadata_code;

pub(super) const DESCRIBE_VERSIONS: RangeInclusive<i16> = 1..=4;
pub(super) const ALTER_VERSIONS: RangeInclusive<i16> = 0..=2;
pub(super) const INCREMENTAL_VERSIONS: RangeInclusive<i16> = 0..=1;

/// Kafka's resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// `retention.ms`, the topic's retention (`-1`: forever).
pub(super) const RETENTION_MS: &str = "retention.ms";

/// Kafka's config sources and types.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;
const STRING: i8 = 2;
const INT: i8 = 3;
const LONG: i8 = 5;
const LIST: i8 = 7;

/// A change to a topic, from Kafka config entries.
#[derive(Default)]
pub(super) struct Settings {
    pub retention_ms: Option<Option<i64>>,
    pub set: HashMap<String, String>,
    pub remove: Vec<String>,
}

/// Kafka's error for a config the topic does not take.
pub(super) fn invalid_config(message: String) -> (i16, String) {
    (ResponseError::InvalidConfig.code(), message)
}

impl Settings {
    /// Adds `name` = `value` (`None`: back to the default).
    pub(super) fn add(&mut self, name: &str, value: Option<&str>) -> Result<(), (i16, String)> {
        if name == RETENTION_MS {
            let ms = match value {
                None => None,
                Some(v) => match v.parse::<i64>() {
                    Ok(-1) => None,
                    Ok(ms) if ms > 0 => Some(ms),
                    _ => {
                        return Err(invalid_config(format!(
                            "{RETENTION_MS} {v:?} is not a positive number of milliseconds or -1"
                        )));
                    }
                },
            };
            self.retention_ms = Some(ms);
            return Ok(());
        }
        if !TOPIC_CONFIG_KEYS.contains(&name) {
            return Err(invalid_config(format!(
                "config {name:?} cannot be set; topics take {RETENTION_MS}, {}",
                TOPIC_CONFIG_KEYS.join(", ")
            )));
        }
        match value {
            Some(v) => {
                self.set.insert(name.to_string(), v.to_string());
            }
            None => self.remove.push(name.to_string()),
        }
        Ok(())
    }
}

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// Every config of a topic with `retention_ms` and `config` as Kafka
/// describes it: what can be set (with where its value comes from) and the
/// read-only values the agent enforces.
pub(super) fn topic_configs(
    broker: &Broker,
    retention_ms: Option<i64>,
    config: &HashMap<String, String>,
) -> Vec<DescribeConfigsResourceResult> {
    let mut out = Vec::new();
    let entry = |name: &str, value: String, source: i8, read_only: bool, kind: i8| {
        DescribeConfigsResourceResult::default()
            .with_name(s(name))
            .with_value(Some(s(value)))
            .with_read_only(read_only)
            .with_config_source(source)
            .with_config_type(kind)
    };
    out.push(match retention_ms {
        Some(ms) => entry(
            RETENTION_MS,
            ms.to_string(),
            DYNAMIC_TOPIC_CONFIG,
            false,
            LONG,
        ),
        None => entry(RETENTION_MS, "-1".into(), DEFAULT_CONFIG, false, LONG),
    });
    for (key, default, kind) in [
        (streamhouse_metadata::RETENTION_BYTES, "-1", LONG),
        (streamhouse_metadata::CLEANUP_POLICY, "delete", LIST),
        (streamhouse_metadata::DELETE_RETENTION_MS, "86400000", LONG),
    ] {
        out.push(match config.get(key) {
            Some(v) => entry(key, v.clone(), DYNAMIC_TOPIC_CONFIG, false, kind),
            None => entry(key, default.to_string(), DEFAULT_CONFIG, false, kind),
        });
    }
    let max_batch = broker.limits.max_batch_bytes.to_string();
    for (key, value, kind) in [
        ("max.message.bytes", max_batch.as_str(), INT),
        ("message.timestamp.type", "CreateTime", STRING),
        ("compression.type", "producer", STRING),
        ("min.insync.replicas", "1", INT),
    ] {
        out.push(entry(key, value.to_string(), DEFAULT_CONFIG, true, kind));
    }
    out
}

pub(super) async fn describe(
    broker: &Broker,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let wanted = |c: &DescribeConfigsResourceResult| {
            r.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.is_empty() || keys.contains(&c.name))
        };
        results.push(match r.resource_type {
            TOPIC => match broker.metadata.get_topic(&r.resource_name).await {
                Ok(Some(t)) => result.with_configs(
                    topic_configs(broker, t.retention_ms, &t.config)
                        .into_iter()
                        .filter(|c| wanted(c))
                        .collect(),
                ),
                Ok(None) => result
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_error_message(Some(s(format!(
                        "topic {:?} does not exist",
                        r.resource_name.as_str()
                    )))),
                Err(e) => result
                    .with_error_code(metadata_code(&e))
                    .with_error_message(Some(s(e.to_string()))),
            },
            // Agents have no broker configs a client can read or change.
            BROKER => result,
            other => result
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(s(format!(
                    "resource type {other} has no configs here"
                )))),
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// Applies `settings` to topic `name` (or only checks them).
async fn apply(
    broker: &Broker,
    name: &str,
    settings: Settings,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let failed = |e: streamhouse_metadata::Error| (metadata_code(&e), e.to_string());
    let topic = broker
        .metadata
        .get_topic(name)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition.code(),
                format!("topic {name:?} does not exist"),
            )
        })?;
    if validate_only {
        // The store's own checks, on the config as it would become.
        let mut config = topic.config.clone();
        config.extend(settings.set.clone());
        for key in &settings.remove {
            config.remove(key);
        }
        return streamhouse_metadata::TopicConfig {
            name: topic.name,
            partition_count: topic.partition_count,
            retention_ms: settings.retention_ms.unwrap_or(topic.retention_ms),
            config,
        }
        .validate()
        .map_err(failed);
    }
    broker
        .metadata
        .alter_topic(
            name,
            TopicAlter {
                partition_count: None,
                retention_ms: settings.retention_ms,
                set_config: settings.set,
                remove_config: settings.remove,
            },
        )
        .await
        .map_err(failed)?;
    broker.pipeline.invalidate_topic(name);
    tracing::info!(topic = %name, "topic configs altered by a Kafka client");
    Ok(())
}

fn alter_result(r: Result<(), (i16, String)>) -> (i16, Option<StrBytes>) {
    match r {
        Ok(()) => (0, None),
        Err((code, message)) => (code, Some(s(message))),
    }
}

/// AlterConfigs: the topic's settable configs become exactly those given.
pub(super) async fn alter(broker: &Broker, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let outcome = if r.resource_type != TOPIC {
            Err((
                ResponseError::InvalidRequest.code(),
                "only topic configs can be altered".into(),
            ))
        } else {
            let mut settings = Settings::default();
            let given: Vec<&str> = r.configs.iter().map(|c| c.name.as_str()).collect();
            let mut checked = Ok(());
            for c in &r.configs {
                checked = checked.and_then(|()| settings.add(&c.name, c.value.as_deref()));
            }
            // Not given: back to the default.
            for key in std::iter::once(RETENTION_MS).chain(TOPIC_CONFIG_KEYS) {
                if !given.contains(&key) {
                    checked = checked.and_then(|()| settings.add(key, None));
                }
            }
            match checked {
                Ok(()) => apply(broker, &r.resource_name, settings, request.validate_only).await,
                Err(e) => Err(e),
            }
        };
        let (code, message) = alter_result(outcome);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET (0) and DELETE (1) per config.
pub(super) async fn incremental_alter(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let outcome = if r.resource_type != TOPIC {
            Err((
                ResponseError::InvalidRequest.code(),
                "only topic configs can be altered".into(),
            ))
        } else {
            let mut settings = Settings::default();
            let mut checked = Ok(());
            for c in &r.configs {
                checked = checked.and_then(|()| match c.config_operation {
                    0 => settings.add(&c.name, Some(c.value.as_deref().unwrap_or(""))),
                    1 => settings.add(&c.name, None),
                    op => Err(invalid_config(format!(
                        "operation {op} on {:?}: only SET and DELETE are supported",
                        c.name.as_str()
                    ))),
                });
            }
            match checked {
                Ok(()) => apply(broker, &r.resource_name, settings, request.validate_only).await,
                Err(e) => Err(e),
            }
        };
        let (code, message) = alter_result(outcome);
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
