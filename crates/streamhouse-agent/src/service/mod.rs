//! The gRPC service: every RPC of `streamhouse.proto`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use streamhouse_metadata::{
    AclOperation as Op, MetadataStore, ResourceType as Resource, Topic, TopicConfig,
};
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;
use streamhouse_proto::stream_house_server::StreamHouse;
use streamhouse_storage::{Reader, WritePipeline};
use tonic::{Request, Response, Status};

use crate::auth::CLUSTER;
use crate::auth::grpc::{require, session_of};
use crate::connections::Protocol;
use crate::error::{bound_message, bounded, describe, error_code, status};
use crate::produce::{self, BatchFailure, PartitionInput, PartitionOutcome};

mod groups;

/// Limits on what one request may ask for.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    /// Largest encoded request accepted (bigger ones get OUT_OF_RANGE).
    /// Default 64 MiB.
    pub max_request_bytes: usize,
    /// Largest record batch accepted (RECORD_TOO_LARGE), as sent and once
    /// decompressed. Default 8 MiB.
    pub max_batch_bytes: usize,
    /// Most partitions one produce or fetch request may name. Default 10,000.
    pub max_partitions_per_request: usize,
    /// Longest a fetch may wait for new records. Default 30 s.
    pub max_fetch_wait: Duration,
    /// Largest fetch response. Default 64 MiB.
    pub max_fetch_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_request_bytes: 64 << 20,
            max_batch_bytes: 8 << 20,
            max_partitions_per_request: 10_000,
            max_fetch_wait: Duration::from_secs(30),
            max_fetch_bytes: 64 << 20,
        }
    }
}

pub(crate) struct Service {
    /// This agent's id: its entry in GetMetadata carries its connections.
    pub agent_id: String,
    pub connections: Arc<crate::connections::Connections>,
    pub metadata: Arc<dyn MetadataStore>,
    pub pipeline: Arc<WritePipeline>,
    pub reader: Arc<Reader>,
    pub limits: RequestLimits,
    pub agent_ttl: Duration,
    pub group_heartbeat_interval: Duration,
    pub shutting_down: Arc<AtomicBool>,
    /// Changes on every commit of this agent's pipeline.
    pub commits: tokio::sync::watch::Receiver<u64>,
    /// Where transaction markers are written.
    pub store: Arc<dyn object_store::ObjectStore>,
    /// Users, ACLs and the checks made with them.
    pub auth: Arc<crate::auth::Auth>,
    /// Transactional ids by producer id, as ACL checks of transactions
    /// look them up.
    pub transactional_ids: std::sync::Mutex<HashMap<i64, String>>,
}

fn topic_info(t: &Topic) -> pb::TopicInfo {
    pb::TopicInfo {
        name: t.name.clone(),
        topic_id: t.id,
        partition_count: t.partition_count,
        retention_ms: t.retention_ms,
        config: t.config.clone(),
        created_at_ms: t.created_at_ms,
    }
}

fn batch_error(code: ErrorCode, message: String) -> pb::BatchResult {
    pb::BatchResult {
        error: code as i32,
        message,
        ..Default::default()
    }
}

impl Service {
    /// The topics `session` may describe, as listed to it.
    fn describable(&self, session: &crate::auth::Session, topics: &[Topic]) -> Vec<pb::TopicInfo> {
        topics
            .iter()
            .filter(|t| {
                self.auth
                    .allows_silently(session, Op::Describe, Resource::Topic, &t.name)
            })
            .map(topic_info)
            .collect()
    }

    fn check_running(&self) -> Result<(), Status> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(pb::with_error_code(
                Status::unavailable("agent is shutting down; use another agent"),
                ErrorCode::AgentShuttingDown,
            ));
        }
        Ok(())
    }

    fn check_partition_count(&self, n: usize, what: &str) -> Result<(), Status> {
        if n > self.limits.max_partitions_per_request {
            return Err(Status::invalid_argument(format!(
                "{what} names {n} partitions, over the limit of {}",
                self.limits.max_partitions_per_request
            )));
        }
        Ok(())
    }

    async fn fetch_once(
        &self,
        partitions: &[pb::FetchPartition],
        max_bytes: usize,
        committed: bool,
    ) -> (Vec<pb::FetchedPartition>, bool) {
        let reads: Vec<_> = partitions
            .iter()
            .map(|p| crate::fetch::PartitionRead {
                topic: &p.topic,
                partition: p.partition,
                offset: p.offset,
                max_bytes: p.max_bytes as usize,
            })
            .collect();
        let (results, total) =
            crate::fetch::fetch(&self.reader, &reads, max_bytes, committed).await;
        let out = partitions
            .iter()
            .zip(results)
            .map(|(p, result)| {
                let mut fetched = pb::FetchedPartition {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    ..Default::default()
                };
                match result {
                    Ok(r) => {
                        fetched.log_start_offset = r.log_start_offset;
                        fetched.high_watermark = r.high_watermark;
                        fetched.last_stable_offset = r.last_stable_offset;
                        fetched.aborted = r
                            .aborted
                            .iter()
                            .map(|a| pb::AbortedTransactionInfo {
                                producer_id: a.producer_id,
                                first_offset: a.first_offset,
                                last_offset: a.last_offset,
                            })
                            .collect();
                        fetched.records = r.records;
                    }
                    Err(e) => {
                        fetched.error = error_code(&e) as i32;
                        fetched.message = describe(&e);
                        if let streamhouse_storage::Error::CorruptBatch { last_offset, .. } = e {
                            fetched.corrupt_last_offset = last_offset;
                        }
                    }
                }
                fetched
            })
            .collect();
        (out, total > 0)
    }
}

#[tonic::async_trait]
impl StreamHouse for Service {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        self.check_running()?;
        let started = std::time::Instant::now();
        metrics::counter!("streamhouse_produce_requests_total").increment(1);
        let session = session_of(&request);
        let request = request.into_inner();
        self.check_partition_count(request.partitions.len(), "produce request")?;
        if self.auth.required() {
            // Transactional batches also need WRITE on the transactional id
            // their producer id belongs to.
            let producers: std::collections::BTreeSet<i64> = request
                .partitions
                .iter()
                .flat_map(|p| streamhouse_core::batches(&p.records))
                .filter_map(Result::ok)
                .filter(|(h, _)| h.attributes.is_transactional())
                .map(|(h, _)| h.producer_id)
                .collect();
            for producer_id in producers {
                groups::require_transaction_writer(self, &session, producer_id).await?;
            }
        }
        let allowed: Vec<bool> = request
            .partitions
            .iter()
            .map(|p| {
                self.auth
                    .allows(&session, Op::Write, Resource::Topic, &p.topic)
            })
            .collect();
        let inputs: Vec<PartitionInput<'_>> = request
            .partitions
            .iter()
            .zip(&allowed)
            .filter(|(_, allowed)| **allowed)
            .map(|(p, _)| PartitionInput {
                topic: &p.topic,
                partition: p.partition,
                records: &p.records,
            })
            .collect();
        let mut outcomes = produce::produce(&self.pipeline, &inputs).await.into_iter();
        let mut results = Vec::with_capacity(request.partitions.len());
        for (p, allowed) in request.partitions.iter().zip(allowed) {
            let outcome = match allowed {
                true => outcomes.next().unwrap_or(PartitionOutcome::Refused {
                    code: ErrorCode::Internal,
                    message: "no outcome for this partition".into(),
                }),
                false => PartitionOutcome::Refused {
                    code: ErrorCode::AuthorizationFailed,
                    message: format!(
                        "{} may not write to topic {:?}",
                        session.principal,
                        bounded(&p.topic)
                    ),
                },
            };
            let mut result = pb::PartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                ..Default::default()
            };
            match outcome {
                PartitionOutcome::Refused { code, message } => {
                    tracing::info!(topic = %bounded(&p.topic), partition = p.partition, code = ?code, %message, "produce refused");
                    result.error = code as i32;
                    result.message = message;
                }
                PartitionOutcome::Batches(appends) => {
                    for outcome in appends {
                        result.batches.push(match outcome {
                            Ok(a) => {
                                metrics::counter!("streamhouse_produce_records_total")
                                    .increment(a.offset_span as u64);
                                pb::BatchResult {
                                    base_offset: a.base_offset,
                                    duplicate: a.duplicate,
                                    ..Default::default()
                                }
                            }
                            Err(BatchFailure { code, message }) => {
                                if code == ErrorCode::StorageUnavailable {
                                    tracing::warn!(topic = %bounded(&p.topic), partition = p.partition, error = %message, "produce failed");
                                } else {
                                    tracing::info!(topic = %bounded(&p.topic), partition = p.partition, code = ?code, error = %message, "produce rejected");
                                }
                                batch_error(code, message)
                            }
                        });
                    }
                }
            }
            results.push(result);
        }
        let bytes: usize = request.partitions.iter().map(|p| p.records.len()).sum();
        metrics::counter!("streamhouse_produce_bytes_total").increment(bytes as u64);
        metrics::histogram!("streamhouse_produce_latency_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(Response::new(pb::ProduceResponse { results }))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        self.check_running()?;
        let session = session_of(&request);
        let mut request = request.into_inner();
        self.check_partition_count(request.partitions.len(), "fetch request")?;
        let (readable, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut request.partitions)
            .into_iter()
            .partition(|p| {
                self.auth
                    .allows(&session, Op::Read, Resource::Topic, &p.topic)
            });
        request.partitions = readable;
        let denied: Vec<pb::FetchedPartition> = denied
            .into_iter()
            .map(|p| pb::FetchedPartition {
                message: format!(
                    "{} may not read topic {:?}",
                    session.principal,
                    bounded(&p.topic)
                ),
                topic: p.topic,
                partition: p.partition,
                error: ErrorCode::AuthorizationFailed as i32,
                ..Default::default()
            })
            .collect();
        let max_bytes = (request.max_bytes as usize).min(self.limits.max_fetch_bytes);
        let wait =
            Duration::from_millis(request.max_wait_ms.into()).min(self.limits.max_fetch_wait);
        let deadline = tokio::time::Instant::now() + wait;
        let mut commits = self.commits.clone();
        loop {
            commits.mark_unchanged();
            let committed = request.isolation_level == pb::IsolationLevel::ReadCommitted as i32;
            let (mut partitions, any_data) = self
                .fetch_once(&request.partitions, max_bytes, committed)
                .await;
            partitions.extend(denied.iter().cloned());
            let any_error = partitions.iter().any(|p| p.error != ErrorCode::None as i32);
            if any_data || any_error || tokio::time::Instant::now() >= deadline {
                metrics::counter!("streamhouse_fetch_requests_total").increment(1);
                for p in &partitions {
                    metrics::counter!("streamhouse_fetch_bytes_total")
                        .increment(p.records.len() as u64);
                    let records: u64 = streamhouse_core::batches(&p.records)
                        .filter_map(|b| b.ok())
                        .map(|(h, _)| h.record_count.max(0) as u64)
                        .sum();
                    metrics::counter!("streamhouse_fetch_records_total").increment(records);
                    if p.error != ErrorCode::None as i32 {
                        tracing::info!(topic = %bounded(&p.topic), partition = p.partition, error = %p.message, "fetch error");
                    }
                }
                return Ok(Response::new(pb::FetchResponse { partitions }));
            }
            // Wake at once for this agent's commits; poll for other agents'.
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn get_metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let session = session_of(&request);
        let request = request.into_inner();
        let mut response = pb::MetadataResponse {
            agent_ttl_ms: self.agent_ttl.as_millis() as u64,
            ..Default::default()
        };
        if request.all_topics {
            let topics = self.metadata.list_topics().await.map_err(|e| status(&e))?;
            response.topics = self.describable(&session, &topics);
        } else {
            for name in &request.topics {
                require(&self.auth, &session, Op::Describe, Resource::Topic, name)?;
                match self
                    .metadata
                    .get_topic(name)
                    .await
                    .map_err(|e| status(&e))?
                {
                    Some(t) => response.topics.push(topic_info(&t)),
                    None => response.unknown_topics.push(name.clone()),
                }
            }
        }
        let group = (!request.agent_group.is_empty()).then_some(request.agent_group.as_str());
        let agents = self
            .metadata
            .list_agents(group)
            .await
            .map_err(|e| status(&e))?;
        response.agents = agents
            .into_iter()
            .filter(|a| a.is_live(self.agent_ttl))
            .map(|a| {
                // Only this agent knows its connections.
                let own = a.agent_id == self.agent_id;
                let open = |p| own.then(|| self.connections.open(p));
                pb::AgentInfo {
                    grpc_connections: open(Protocol::Grpc),
                    kafka_connections: open(Protocol::Kafka),
                    agent_id: a.agent_id,
                    group: a.group,
                    address: a.address,
                    zone: a.zone.unwrap_or_default(),
                    heartbeat_age_ms: a.heartbeat_age.as_millis() as u64,
                }
            })
            .collect();
        Ok(Response::new(response))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let session = session_of(&request);
        let r = request.into_inner();
        if !self
            .auth
            .allows_silently(&session, Op::Create, Resource::Cluster, CLUSTER)
        {
            require(&self.auth, &session, Op::Create, Resource::Topic, &r.name)?;
        }
        let topic = self
            .metadata
            .create_topic(TopicConfig {
                name: r.name,
                partition_count: r.partition_count,
                retention_ms: r.retention_ms,
                config: r.config.into_iter().collect::<HashMap<_, _>>(),
            })
            .await
            .map_err(|e| status(&e))?;
        tracing::info!(topic = %topic.name, partitions = topic.partition_count, "created topic");
        Ok(Response::new(topic_info(&topic)))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let session = session_of(&request);
        let name = request.into_inner().name;
        require(&self.auth, &session, Op::Delete, Resource::Topic, &name)?;
        self.metadata
            .delete_topic(&name)
            .await
            .map_err(|e| status(&e))?;
        self.pipeline.invalidate_topic(&name);
        tracing::info!(topic = %bounded(&name), "deleted topic");
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn alter_topic(
        &self,
        request: Request<pb::AlterTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let session = session_of(&request);
        let r = request.into_inner();
        // The answer describes the topic, whatever changes.
        require(&self.auth, &session, Op::Describe, Resource::Topic, &r.name)?;
        if r.partition_count.is_some() {
            require(&self.auth, &session, Op::Alter, Resource::Topic, &r.name)?;
        }
        if r.retention_ms.is_some()
            || r.clear_retention
            || !r.set_config.is_empty()
            || !r.remove_config.is_empty()
        {
            require(
                &self.auth,
                &session,
                Op::AlterConfigs,
                Resource::Topic,
                &r.name,
            )?;
        }
        let retention_ms = match (r.clear_retention, r.retention_ms) {
            (true, Some(_)) => {
                return Err(Status::invalid_argument(
                    "set retention_ms or clear_retention, not both",
                ));
            }
            (true, None) => Some(None),
            (false, ms) => ms.map(Some),
        };
        let topic = self
            .metadata
            .alter_topic(
                &r.name,
                streamhouse_metadata::TopicAlter {
                    partition_count: r.partition_count,
                    retention_ms,
                    set_config: r.set_config.into_iter().collect(),
                    remove_config: r.remove_config,
                },
            )
            .await
            .map_err(|e| status(&e))?;
        self.pipeline.invalidate_topic(&topic.name);
        tracing::info!(topic = %topic.name, partitions = topic.partition_count, "altered topic");
        Ok(Response::new(topic_info(&topic)))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let session = session_of(&request);
        let topics = self.metadata.list_topics().await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::ListTopicsResponse {
            topics: self.describable(&session, &topics),
        }))
    }

    async fn delete_records(
        &self,
        request: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        let session = session_of(&request);
        let r = request.into_inner();
        require(&self.auth, &session, Op::Delete, Resource::Topic, &r.topic)?;
        let topic = self
            .metadata
            .get_topic(&r.topic)
            .await
            .map_err(|e| status(&e))?
            .ok_or_else(|| {
                Status::not_found(bound_message(format!("topic {:?} does not exist", r.topic)))
            })?;
        let log_start_offset = self
            .metadata
            .advance_log_start(topic.id, r.partition, r.offset)
            .await
            .map_err(|e| status(&e))?;
        tracing::info!(topic = %r.topic, partition = r.partition, log_start = log_start_offset, "records deleted");
        Ok(Response::new(pb::DeleteRecordsResponse {
            log_start_offset,
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let session = session_of(&request);
        let name = request.into_inner().name;
        require(&self.auth, &session, Op::Describe, Resource::Topic, &name)?;
        let topic = self
            .metadata
            .get_topic(&name)
            .await
            .map_err(|e| status(&e))?
            .ok_or_else(|| {
                Status::not_found(bound_message(format!("topic {name:?} does not exist")))
            })?;
        let usage: HashMap<u32, streamhouse_metadata::PartitionUsage> = self
            .metadata
            .partition_usage(topic.id)
            .await
            .map_err(|e| status(&e))?
            .into_iter()
            .map(|u| (u.partition, u))
            .collect();
        let mut partitions = Vec::with_capacity(topic.partition_count as usize);
        for p in 0..topic.partition_count {
            let s = self
                .metadata
                .partition_state(topic.id, p)
                .await
                .map_err(|e| status(&e))?;
            partitions.push(pb::PartitionInfo {
                partition: p,
                log_start_offset: s.log_start_offset,
                high_watermark: s.next_offset,
                last_stable_offset: s.last_stable_offset,
                bytes: usage.get(&p).map_or(0, |u| u.bytes),
                segments: usage.get(&p).map_or(0, |u| u.segments),
            });
        }
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(topic_info(&topic)),
            partitions,
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let session = session_of(&request);
        let request = request.into_inner();
        self.check_partition_count(request.partitions.len(), "list offsets request")?;
        let committed = request.isolation_level == pb::IsolationLevel::ReadCommitted as i32;
        let mut partitions = Vec::with_capacity(request.partitions.len());
        for p in request.partitions {
            let mut listed = pb::ListedOffset {
                topic: p.topic.clone(),
                partition: p.partition,
                ..Default::default()
            };
            if !self
                .auth
                .allows(&session, Op::Describe, Resource::Topic, &p.topic)
            {
                listed.error = ErrorCode::AuthorizationFailed as i32;
                listed.message = format!(
                    "{} may not describe topic {:?}",
                    session.principal,
                    bounded(&p.topic)
                );
                partitions.push(listed);
                continue;
            }
            let found = async {
                let state = self.reader.partition_state(&p.topic, p.partition).await?;
                let offset = match p.timestamp {
                    -2 => state.log_start_offset,
                    -1 if committed => state.last_stable_offset,
                    -1 => state.next_offset,
                    ts => self
                        .reader
                        .offset_for_timestamp(&p.topic, p.partition, ts)
                        .await?
                        .unwrap_or(state.next_offset)
                        .max(state.log_start_offset),
                };
                Ok::<_, streamhouse_storage::Error>((offset, state))
            }
            .await;
            match found {
                Ok((offset, state)) => {
                    listed.offset = offset;
                    listed.log_start_offset = state.log_start_offset;
                    listed.high_watermark = state.next_offset;
                }
                Err(e) => {
                    listed.error = error_code(&e) as i32;
                    listed.message = describe(&e);
                }
            }
            partitions.push(listed);
        }
        Ok(Response::new(pb::ListOffsetsResponse { partitions }))
    }

    async fn init_producer_id(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        groups::init_producer_id(self, request).await
    }

    async fn group_heartbeat(
        &self,
        request: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
        groups::group_heartbeat(self, request).await
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        groups::commit_offsets(self, request).await
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        groups::fetch_offsets(self, request).await
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        groups::list_groups(self, request).await
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        groups::describe_group(self, request).await
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        groups::delete_group(self, request).await
    }

    async fn add_offsets_to_txn(
        &self,
        request: Request<pb::AddOffsetsToTxnRequest>,
    ) -> Result<Response<pb::AddOffsetsToTxnResponse>, Status> {
        groups::add_offsets_to_txn(self, request).await
    }

    async fn end_txn(
        &self,
        request: Request<pb::EndTxnRequest>,
    ) -> Result<Response<pb::EndTxnResponse>, Status> {
        groups::end_txn(self, request).await
    }
}
