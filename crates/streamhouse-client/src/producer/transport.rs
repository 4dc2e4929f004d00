//! The sender's seam to the cluster: topic partition counts, produce
//! requests and producer ids. [`ClusterTransport`] is the real one (gRPC
//! agents, or the metadata store for producer ids); unit tests put a
//! scripted one in its place.

use std::sync::Arc;

use futures::future::BoxFuture;
use streamhouse_metadata::ProducerIdentity;
use streamhouse_proto as pb;

use crate::cluster::{Cluster, Source};
use crate::error::{Error, Result};

/// What the producer's sender needs of the cluster.
pub(crate) trait Transport: Send + Sync + 'static {
    /// The partition count of a topic (cached for the refresh interval).
    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<u32>>;

    /// Forgets the cached partition count of a topic.
    fn invalidate_topic(&self, topic: &str);

    /// Sends one produce request to one agent, once, within the request
    /// timeout.
    fn produce(&self, request: pb::ProduceRequest) -> BoxFuture<'_, Result<pb::ProduceResponse>>;

    /// A new idempotent producer id (`current` unset), or `current`'s id
    /// with its epoch bumped.
    fn init_producer_id(
        &self,
        current: Option<ProducerIdentity>,
    ) -> BoxFuture<'_, Result<ProducerIdentity>>;
}

/// The transport over the real cluster.
pub(crate) struct ClusterTransport {
    pub cluster: Arc<Cluster>,
    pub source: Source,
}

impl Transport for ClusterTransport {
    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<u32>> {
        Box::pin(self.cluster.partitions(topic))
    }

    fn invalidate_topic(&self, topic: &str) {
        self.cluster.invalidate_topic(topic);
    }

    fn produce(&self, request: pb::ProduceRequest) -> BoxFuture<'_, Result<pb::ProduceResponse>> {
        Box::pin(async move {
            let conn = self.cluster.agent().await?;
            let timeout = self.cluster.config.request_timeout;
            let mut client = conn.client.clone();
            let result = match tokio::time::timeout(timeout, client.produce(request)).await {
                Ok(Ok(r)) => Ok(r.into_inner()),
                Ok(Err(status)) => Err(Error::Rpc {
                    address: conn.address.clone(),
                    status: Arc::new(status),
                }),
                Err(_) => Err(Error::Timeout {
                    address: conn.address.clone(),
                    timeout,
                }),
            };
            if result.as_ref().is_err_and(Error::is_retryable) {
                self.cluster.report_failure(&conn.id);
            }
            result
        })
    }

    fn init_producer_id(
        &self,
        current: Option<ProducerIdentity>,
    ) -> BoxFuture<'_, Result<ProducerIdentity>> {
        Box::pin(async move {
            match &self.source {
                Source::Metadata(store) => {
                    self.cluster
                        .config
                        .retry
                        .run_metadata(|| store.init_producer_id(current))
                        .await
                }
                Source::Bootstrap(_) => {
                    let request = pb::InitProducerIdRequest {
                        producer_id: current.map(|c| c.producer_id),
                        producer_epoch: current.map(|c| i32::from(c.epoch)),
                        ..Default::default()
                    };
                    let r = self
                        .cluster
                        .call(|mut c| {
                            let r = request.clone();
                            async move { c.init_producer_id(r).await }
                        })
                        .await?;
                    Ok(ProducerIdentity {
                        producer_id: r.producer_id,
                        epoch: r.producer_epoch as i16,
                    })
                }
            }
        })
    }
}
