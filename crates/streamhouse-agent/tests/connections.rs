//! Client connections per protocol in GetMetadata: each agent reports the
//! gRPC and Kafka connections open on it, in its own entry only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use streamhouse_agent::{Agent, AgentConfig, RunningAgent};
use streamhouse_proto as pb;
use streamhouse_proto::stream_house_client::StreamHouseClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;

async fn agent(dir: &tempfile::TempDir, kafka: bool) -> RunningAgent {
    let config = AgentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metadata_url: format!("sqlite://{}", dir.path().join("metadata.db").display()),
        storage_url: format!("file://{}", dir.path().join("objects").display()),
        kafka_listen: kafka.then(|| "127.0.0.1:0".parse().unwrap()),
        unsafe_no_fsync: true,
        ..AgentConfig::default()
    };
    Agent::start(config).await.unwrap()
}

async fn client(addr: SocketAddr) -> StreamHouseClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    StreamHouseClient::new(channel)
}

/// Every live agent's (gRPC, Kafka) connections as `asker`'s agent
/// answers, by agent id.
async fn counts(asker: &mut StreamHouseClient<Channel>) -> Vec<(String, Option<u64>, Option<u64>)> {
    let r = asker
        .get_metadata(pb::MetadataRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut out: Vec<_> = r
        .agents
        .into_iter()
        .map(|a| (a.agent_id, a.grpc_connections, a.kafka_connections))
        .collect();
    out.sort();
    out
}

/// `agent_id`'s counts once `want` holds for them (within 10 s).
async fn until(
    asker: &mut StreamHouseClient<Channel>,
    agent_id: &str,
    want: impl Fn(u64, u64) -> bool,
) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = counts(asker).await;
        let (_, grpc, kafka) = all.iter().find(|(id, _, _)| id == agent_id).unwrap();
        let now = (grpc.unwrap(), kafka.unwrap());
        if want(now.0, now.1) {
            return now;
        }
        assert!(Instant::now() < deadline, "{agent_id}: still {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Kafka connection that has been answered (so the agent counts it).
async fn kafka_client(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // ApiVersions v0: API key 18, version 0, correlation id 1, no client id.
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .await
        .unwrap();
    let size = s.read_i32().await.unwrap();
    let mut answer = vec![0; size as usize];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer[..4], &[0, 0, 0, 1]);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_report_their_grpc_and_kafka_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = agent(&dir, true).await;
    let second = agent(&dir, false).await;
    let id = first.agent_id().to_string();
    let mut asker = client(first.local_addr()).await;
    // Only the asking connection.
    assert_eq!(until(&mut asker, &id, |_, _| true).await, (1, 0));
    // The other agent's counts are its own: not in this agent's answer,
    // and in its answer.
    let all = counts(&mut asker).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let other = all.iter().find(|(a, _, _)| *a != id).unwrap();
    assert_eq!((other.1, other.2), (None, None));
    let mut other_asker = client(second.local_addr()).await;
    let seen = counts(&mut other_asker).await;
    let own = seen.iter().find(|(a, _, _)| *a == other.0).unwrap();
    assert_eq!((own.1, own.2), (Some(1), Some(0)));

    // A second native client and a Kafka client.
    let mut native = client(first.local_addr()).await;
    counts(&mut native).await;
    let kafka = kafka_client(first.kafka_addr().unwrap()).await;
    assert_eq!(until(&mut asker, &id, |_, _| true).await, (2, 1));
    // Both leave.
    drop(native);
    drop(kafka);
    assert_eq!(
        until(&mut asker, &id, |g, k| g == 1 && k == 0).await,
        (1, 0)
    );

    drop(asker);
    drop(other_asker);
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}
