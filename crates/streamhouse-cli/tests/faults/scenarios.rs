//! The scenarios: a workload on real agent processes while one family of
//! faults is injected, then the history check. Scenarios run one at a
//! time (each one loads the machine on its own).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamhouse_client::{Admin, AutoOffsetReset, Consumer, IsolationLevel, TopicPartition};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::history::{History, Observed, Tp, Violation};
use crate::profile::{self, Figures, Profile, Rng};
use crate::proxy::Mode;
use crate::workload::{Ctx, GROUP, PARTITIONS, TOPIC, Workload};

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fault a scenario can inject.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Agent proxies: responses delayed, lost, requests duplicated,
    /// connections reset.
    AgentDelay,
    AgentLoseResponses,
    AgentDuplicate,
    AgentReset,
    /// Agent processes: SIGKILL (and a new process), SIGSTOP/SIGCONT.
    AgentKill,
    AgentStop,
    /// `pg_ctl restart -m fast` of the metadata store.
    PostgresRestart,
    /// The S3 proxy: connections refused and reset, responses lost,
    /// stalled, delayed.
    S3Fail,
    S3LoseResponses,
    S3Stall,
    S3Delay,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_faults_between_clients_and_agents() {
    let _serial = SERIAL.lock().await;
    let run = Run::new("network");
    let cluster = Cluster::local(2, run.seed, &run.figures).await;
    run.execute(
        cluster,
        &[
            Fault::AgentDelay,
            Fault::AgentLoseResponses,
            Fault::AgentDuplicate,
            Fault::AgentReset,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_processes_killed_and_stopped() {
    let _serial = SERIAL.lock().await;
    let run = Run::new("processes");
    let cluster = Cluster::local(2, run.seed, &run.figures).await;
    run.execute(cluster, &[Fault::AgentKill, Fault::AgentStop])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_and_object_store_faults() {
    let _serial = SERIAL.lock().await;
    let run = Run::new("stores");
    let Some(cluster) = Cluster::postgres_s3(2, run.seed, &run.figures).await else {
        return;
    };
    run.execute(
        cluster,
        &[
            Fault::PostgresRestart,
            Fault::S3Fail,
            Fault::S3LoseResponses,
            Fault::S3Stall,
            Fault::S3Delay,
        ],
    )
    .await;
}

struct Run {
    name: &'static str,
    profile: Profile,
    seed: u64,
    figures: Arc<Figures>,
}

impl Run {
    fn new(name: &'static str) -> Run {
        let run = Run {
            name,
            profile: Profile::from_env(),
            seed: profile::seed(),
            figures: Arc::new(Figures::default()),
        };
        eprintln!(
            "faults/{name}: profile {} seed {} (replay with STREAMHOUSE_FAULTS_SEED={})",
            run.profile.name, run.seed, run.seed
        );
        run
    }

    /// Runs the workload while injecting `faults` for the profile's time,
    /// heals everything, lets the load finish and checks the history.
    async fn execute(self, mut cluster: Cluster, faults: &[Fault]) {
        let admin = Admin::connect(cluster.direct()).await.unwrap();
        admin
            .create_topic(TOPIC, PARTITIONS, None, HashMap::new())
            .await
            .unwrap();
        let ctx = Ctx {
            addresses: cluster.addresses(),
            history: Arc::new(Mutex::new(History::default())),
            figures: self.figures.clone(),
            start: Instant::now(),
            seed: self.seed,
        };
        let mut workload = Workload::start(&ctx);
        let mut rng = Rng::new(self.seed);
        let end = Instant::now() + self.profile.fault_time;
        while Instant::now() < end {
            let quiet = rng.between(Duration::from_millis(100), Duration::from_millis(800));
            tokio::time::sleep(quiet).await;
            let fault = faults[rng.below(faults.len() as u64) as usize];
            self.inject(&mut cluster, fault, &mut rng).await;
        }
        heal(&mut cluster);
        eprintln!("faults/{}: faults stopped, finishing the load", self.name);
        // Agent 0 may be a new process now: reach its current address.
        let admin = Admin::connect(cluster.direct()).await.unwrap();

        let mut stuck = Vec::new();
        if !workload.stop_producers(Duration::from_secs(120)).await {
            stuck.push("a producer did not finish within 120 s of the faults' end".to_string());
        }
        if let Err(what) = group_reaches_the_end(&admin, Duration::from_secs(60)).await {
            stuck.push(what);
        }
        if !workload.stop_consumers(Duration::from_secs(30)).await {
            stuck.push("a group member did not close within 30 s".to_string());
        }
        let committed = match read_committed(&cluster, &admin, Duration::from_secs(60)).await {
            Ok(c) => c,
            Err((c, what)) => {
                stuck.push(what);
                c
            }
        };
        let observed = Observed {
            logs: cluster.read_logs(TOPIC, PARTITIONS).await,
            committed,
        };
        let stored: usize = observed
            .logs
            .values()
            .flat_map(|l| &l.batches)
            .map(|b| b.records.len())
            .sum();
        self.figures
            .operation("final_log_records_checked", stored as u64);
        self.figures.operation(
            "final_read_committed_records_checked",
            observed.committed.len() as u64,
        );
        let mut history = ctx.history.lock().unwrap();
        history
            .observed
            .extend(stuck.into_iter().map(|what| Violation::Stuck { what }));
        let violations = history.check(&observed);
        let report = self
            .figures
            .report(self.name, &self.profile, self.seed, violations.len());
        eprintln!("{report}");
        for v in violations.iter().take(30) {
            eprintln!("  violation: {v}");
        }
        assert!(
            self.figures.operations_of("records_acked") > 0,
            "the workload made no progress\n{report}"
        );
        assert!(self.figures.faults_total() > 0, "no fault was injected");
        assert!(
            violations.is_empty(),
            "{} violations (first: {}); replay with STREAMHOUSE_FAULTS_SEED={}\n{report}",
            violations.len(),
            violations[0],
            self.seed
        );
    }

    async fn inject(&self, cluster: &mut Cluster, fault: Fault, rng: &mut Rng) {
        let max = self.profile.max_stall;
        let window = rng.between(Duration::from_millis(300), max);
        let n = cluster.agents.len() as u64;
        let agent = rng.below(n) as usize;
        self.figures.fault(match fault {
            Fault::AgentDelay => "agent_delay",
            Fault::AgentLoseResponses => "agent_lose_responses",
            Fault::AgentDuplicate => "agent_duplicate_requests",
            Fault::AgentReset => "agent_reset_connections",
            Fault::AgentKill => "agent_sigkill",
            Fault::AgentStop => "agent_sigstop",
            Fault::PostgresRestart => "postgres_restart",
            Fault::S3Fail => "s3_refuse_and_reset",
            Fault::S3LoseResponses => "s3_lose_responses",
            Fault::S3Stall => "s3_stall",
            Fault::S3Delay => "s3_delay",
        });
        match fault {
            Fault::AgentDelay => {
                let proxy = &cluster.agents[agent].proxy;
                proxy.set_mode(Mode::Delay(max / 3));
                tokio::time::sleep(window).await;
                proxy.set_mode(Mode::Pass);
            }
            Fault::AgentLoseResponses => {
                let proxy = &cluster.agents[agent].proxy;
                proxy.set_mode(Mode::DropResponses(10 + rng.below(40)));
                tokio::time::sleep(window).await;
                proxy.set_mode(Mode::Pass);
            }
            Fault::AgentDuplicate => {
                // Open connections end, so clients reconnect and are
                // recorded; at the window's end they end again and every
                // recorded stream is replayed.
                let proxy = &cluster.agents[agent].proxy;
                proxy.set_mode(Mode::Duplicate);
                proxy.reset_all();
                tokio::time::sleep(window).await;
                proxy.set_mode(Mode::Pass);
                proxy.reset_all();
            }
            Fault::AgentReset => {
                let proxy = &cluster.agents[agent].proxy;
                proxy.set_mode(Mode::Refuse);
                proxy.reset_all();
                tokio::time::sleep(window / 3).await;
                proxy.set_mode(Mode::Pass);
            }
            Fault::AgentKill => {
                let a = &mut cluster.agents[agent];
                a.kill();
                tokio::time::sleep(window / 2).await;
                a.kill_and_restart();
            }
            Fault::AgentStop => {
                let a = &mut cluster.agents[agent];
                a.stop();
                tokio::time::sleep(window).await;
                a.cont();
            }
            Fault::PostgresRestart => {
                let pg = cluster.postgres.as_ref().expect("a PostgreSQL scenario");
                let started = Instant::now();
                tokio::task::block_in_place(|| pg.restart());
                eprintln!("postgres restarted in {:?}", started.elapsed());
            }
            Fault::S3Fail | Fault::S3LoseResponses | Fault::S3Stall | Fault::S3Delay => {
                let proxy = cluster.s3_proxy.as_ref().expect("an S3 scenario");
                match fault {
                    Fault::S3Fail => {
                        proxy.set_mode(Mode::Refuse);
                        proxy.reset_all();
                    }
                    Fault::S3LoseResponses => proxy.set_mode(Mode::DropResponses(50)),
                    Fault::S3Stall => proxy.set_mode(Mode::Stall),
                    _ => proxy.set_mode(Mode::Delay(max / 3)),
                }
                tokio::time::sleep(window).await;
                proxy.set_mode(Mode::Pass);
            }
        }
    }
}

/// Every proxy passes again, every stopped agent runs again.
fn heal(cluster: &mut Cluster) {
    for a in &mut cluster.agents {
        a.proxy.set_mode(Mode::Pass);
        a.cont();
    }
    if let Some(p) = &cluster.s3_proxy {
        p.set_mode(Mode::Pass);
    }
}

/// The group's committed offsets reach every partition's high watermark
/// (nothing is produced any more) within `bound`.
async fn group_reaches_the_end(admin: &Admin, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let (Ok(topic), Ok(group)) = (
            admin.describe_topic(TOPIC).await,
            admin.describe_group(GROUP).await,
        ) {
            let committed: HashMap<u32, i64> = group
                .offsets
                .iter()
                .filter(|(tp, _)| tp.topic == TOPIC)
                .map(|(tp, o)| (tp.partition, *o))
                .collect();
            let behind: Vec<String> = topic
                .partitions
                .iter()
                .filter(|p| committed.get(&p.partition).copied().unwrap_or(0) < p.high_watermark)
                .map(|p| {
                    format!(
                        "{}: committed {:?}, high watermark {}, last stable {}",
                        p.partition,
                        committed.get(&p.partition),
                        p.high_watermark,
                        p.last_stable_offset
                    )
                })
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            last = format!("members {}; {}", group.members.len(), behind.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the group did not reach the end within {bound:?}: {last}"
    ))
}

type Committed = Vec<(Tp, i64, String)>;

/// Every record a read_committed consumer returns from the start of each
/// partition to its high watermark; an error (with what was read) if it
/// does not get there within `bound`.
async fn read_committed(
    cluster: &Cluster,
    admin: &Admin,
    bound: Duration,
) -> Result<Committed, (Committed, String)> {
    let ends: HashMap<u32, i64> = admin
        .describe_topic(TOPIC)
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    let partitions: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(TOPIC, p))
        .collect();
    let consumer = Consumer::builder()
        .bootstrap(cluster.direct())
        .assign(partitions.clone())
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted)
        .build()
        .await
        .unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + bound;
    let result = loop {
        let behind: Vec<String> = partitions
            .iter()
            .filter_map(|tp| {
                let at = consumer.position(tp).unwrap_or(0);
                let end = ends[&tp.partition];
                (at < end).then(|| format!("{tp} at {at} of {end}"))
            })
            .collect();
        if behind.is_empty() {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(format!(
                "a read_committed consumer did not reach the end within {bound:?}: {}",
                behind.join(", ")
            ));
        }
        if let Ok(batch) = consumer.poll(Duration::from_millis(200)).await {
            for r in batch {
                let value = String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned();
                records.push(((r.topic, r.partition), r.offset, value));
            }
        }
    };
    let _ = consumer.close().await;
    match result {
        Ok(()) => Ok(records),
        Err(what) => Err((records, what)),
    }
}
