//! Metrics of the Kafka listener: answers counted by API and error code
//! (`streamhouse_kafka_responses_total{api, error}`, one count per error
//! code in the answer: per partition, per topic or for the whole request).

use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, AddPartitionsToTxnResponse, DescribeProducersResponse,
    DescribeTransactionsResponse, EndTxnResponse, ListTransactionsResponse,
    TxnOffsetCommitResponse,
};
use kafka_protocol::messages::{
    AlterConfigsResponse, ApiKey, ApiVersionsResponse, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatResponse, CreatePartitionsResponse, CreateTopicsResponse,
    DeleteRecordsResponse, DeleteTopicsResponse, DescribeClusterResponse, DescribeConfigsResponse,
    FetchResponse, FindCoordinatorResponse, IncrementalAlterConfigsResponse,
    InitProducerIdResponse, ListOffsetsResponse, MetadataResponse, OffsetCommitResponse,
    OffsetFetchResponse, OffsetForLeaderEpochResponse, ProduceResponse,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsResponse, CreateAclsResponse, DeleteAclsResponse,
    DescribeAclsResponse, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::messages::{
    DeleteGroupsResponse, DescribeGroupsResponse, HeartbeatResponse, JoinGroupResponse,
    LeaveGroupResponse, ListGroupsResponse, OffsetDeleteResponse, SyncGroupResponse,
};
use kafka_protocol::messages::{SaslAuthenticateResponse, SaslHandshakeResponse};

/// The error codes an answer carries (0 for success).
pub(super) trait ErrorCodes {
    fn error_codes(&self) -> Vec<i16>;
}

/// Counts the answer's error codes: one counter update per distinct code,
/// however many partitions carry it.
pub(super) fn count(api: ApiKey, answer: &impl ErrorCodes) {
    let mut codes = answer.error_codes();
    if codes.is_empty() {
        codes.push(0);
    }
    codes.sort_unstable();
    for run in codes.chunk_by(|a, b| a == b) {
        metrics::counter!(
            "streamhouse_kafka_responses_total",
            "api" => format!("{api:?}"),
            "error" => run[0].to_string()
        )
        .increment(run.len() as u64);
    }
}

/// Answers whose one code covers the whole request.
macro_rules! whole_request_codes {
    ($($answer:ty),* $(,)?) => {
        $(
            impl ErrorCodes for $answer {
                fn error_codes(&self) -> Vec<i16> {
                    vec![self.error_code]
                }
            }
        )*
    };
}

whole_request_codes!(
    ApiVersionsResponse,
    InitProducerIdResponse,
    DescribeClusterResponse,
    AddOffsetsToTxnResponse,
    EndTxnResponse,
    ListTransactionsResponse,
    ConsumerGroupHeartbeatResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    ListGroupsResponse,
    SaslHandshakeResponse,
    SaslAuthenticateResponse,
);

impl ErrorCodes for MetadataResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.topics.iter().map(|t| t.error_code).collect()
    }
}

impl ErrorCodes for ProduceResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
            .collect()
    }
}

impl ErrorCodes for FetchResponse {
    fn error_codes(&self) -> Vec<i16> {
        let mut codes: Vec<i16> = self
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        if self.error_code != 0 {
            codes.push(self.error_code);
        }
        codes
    }
}

impl ErrorCodes for ListOffsetsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }
}

impl ErrorCodes for CreateTopicsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.topics.iter().map(|t| t.error_code).collect()
    }
}

impl ErrorCodes for DeleteTopicsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.responses.iter().map(|t| t.error_code).collect()
    }
}

impl ErrorCodes for DeleteRecordsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }
}

impl ErrorCodes for CreatePartitionsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.results.iter().map(|t| t.error_code).collect()
    }
}

impl ErrorCodes for DescribeConfigsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.results.iter().map(|r| r.error_code).collect()
    }
}

impl ErrorCodes for AlterConfigsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.responses.iter().map(|r| r.error_code).collect()
    }
}

impl ErrorCodes for IncrementalAlterConfigsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.responses.iter().map(|r| r.error_code).collect()
    }
}

impl ErrorCodes for OffsetForLeaderEpochResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }
}

impl ErrorCodes for FindCoordinatorResponse {
    fn error_codes(&self) -> Vec<i16> {
        let mut codes: Vec<i16> = self.coordinators.iter().map(|c| c.error_code).collect();
        if codes.is_empty() {
            codes.push(self.error_code);
        }
        codes
    }
}

impl ErrorCodes for OffsetCommitResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }
}

impl ErrorCodes for OffsetFetchResponse {
    fn error_codes(&self) -> Vec<i16> {
        let mut codes: Vec<i16> = self.groups.iter().map(|g| g.error_code).collect();
        codes.push(self.error_code);
        codes
    }
}

impl ErrorCodes for AddPartitionsToTxnResponse {
    fn error_codes(&self) -> Vec<i16> {
        let mut codes: Vec<i16> = self
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| {
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
            })
            .collect();
        if self.error_code != 0 {
            codes.push(self.error_code);
        }
        codes
    }
}

impl ErrorCodes for TxnOffsetCommitResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }
}

impl ErrorCodes for DescribeTransactionsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.transaction_states
            .iter()
            .map(|t| t.error_code)
            .collect()
    }
}

impl ErrorCodes for DescribeProducersResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }
}

impl ErrorCodes for ConsumerGroupDescribeResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.groups.iter().map(|g| g.error_code).collect()
    }
}

impl ErrorCodes for LeaveGroupResponse {
    fn error_codes(&self) -> Vec<i16> {
        let mut codes: Vec<i16> = self.members.iter().map(|m| m.error_code).collect();
        if self.error_code != 0 || codes.is_empty() {
            codes.push(self.error_code);
        }
        codes
    }
}

impl ErrorCodes for DescribeGroupsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.groups.iter().map(|g| g.error_code).collect()
    }
}

impl ErrorCodes for DeleteGroupsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.results.iter().map(|g| g.error_code).collect()
    }
}

impl ErrorCodes for OffsetDeleteResponse {
    fn error_codes(&self) -> Vec<i16> {
        let mut codes: Vec<i16> = self
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        if self.error_code != 0 {
            codes.push(self.error_code);
        }
        codes
    }
}

impl ErrorCodes for CreateAclsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.results.iter().map(|r| r.error_code).collect()
    }
}

impl ErrorCodes for DescribeAclsResponse {
    fn error_codes(&self) -> Vec<i16> {
        vec![self.error_code]
    }
}

impl ErrorCodes for DeleteAclsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.filter_results.iter().map(|r| r.error_code).collect()
    }
}

impl ErrorCodes for DescribeUserScramCredentialsResponse {
    fn error_codes(&self) -> Vec<i16> {
        let mut codes = vec![self.error_code];
        codes.extend(self.results.iter().map(|r| r.error_code));
        codes
    }
}

impl ErrorCodes for AlterUserScramCredentialsResponse {
    fn error_codes(&self) -> Vec<i16> {
        self.results.iter().map(|r| r.error_code).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };

    #[test]
    fn every_partition_counts() {
        let r = ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default().with_partition_responses(vec![
                PartitionProduceResponse::default(),
                PartitionProduceResponse::default().with_error_code(3),
            ]),
        ]);
        assert_eq!(r.error_codes(), [0, 3]);
        assert_eq!(MetadataResponse::default().error_codes(), Vec::<i16>::new());
    }
}
