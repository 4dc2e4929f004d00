//! The load a scenario runs while faults are injected: idempotent
//! producers, a transactional producer that commits some transactions and
//! aborts others, and a consumer group whose members come and go. Every
//! acknowledgement, transaction outcome and partition ownership goes into
//! the [`History`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use streamhouse_client::{
    Admin, AutoOffsetReset, Consumer, Error, IsolationLevel, Producer, ProducerRecord,
    RebalanceListener, TopicPartition,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::history::{History, Outcome, Ownership, Tp, Txn, Violation};
use crate::profile::{Figures, Rng};

pub const TOPIC: &str = "events";
pub const PARTITIONS: u32 = 4;
pub const GROUP: &str = "faults";
const MEMBERS: usize = 3;

/// What every task of a run shares.
#[derive(Clone)]
pub struct Ctx {
    pub addresses: Vec<String>,
    pub history: Arc<Mutex<History>>,
    pub figures: Arc<Figures>,
    pub start: Instant,
    pub seed: u64,
}

impl Ctx {
    fn since_start(&self) -> Duration {
        self.start.elapsed()
    }

    fn producer(&self) -> streamhouse_client::ProducerBuilder {
        let mut b = Producer::builder()
            .batch_size(20)
            .batch_timeout(Duration::from_millis(2))
            .request_timeout(Duration::from_secs(2))
            .retry_backoff(Duration::from_millis(50))
            .max_retries(60)
            .agent_refresh_interval(Duration::from_millis(500));
        for a in &self.addresses {
            b = b.bootstrap(a.clone());
        }
        b
    }
}

/// The running load.
pub struct Workload {
    stop_producers: Arc<AtomicBool>,
    stop_consumers: Arc<AtomicBool>,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Two idempotent producers, one transactional producer, three group
    /// members (the first leaves and rejoins now and then) and a sampler
    /// of the coordinator's view of the group.
    pub fn start(ctx: &Ctx) -> Workload {
        let stop_producers = Arc::new(AtomicBool::new(false));
        let stop_consumers = Arc::new(AtomicBool::new(false));
        let mut producers = Vec::new();
        for i in 0..2 {
            producers.push(tokio::spawn(idempotent(
                ctx.clone(),
                i,
                stop_producers.clone(),
            )));
        }
        producers.push(tokio::spawn(transactional(
            ctx.clone(),
            stop_producers.clone(),
        )));
        let mut consumers = Vec::new();
        for i in 0..MEMBERS {
            consumers.push(tokio::spawn(member(ctx.clone(), i, stop_consumers.clone())));
        }
        consumers.push(tokio::spawn(sample_coordinator(
            ctx.clone(),
            stop_consumers.clone(),
        )));
        Workload {
            stop_producers,
            stop_consumers,
            producers,
            consumers,
        }
    }

    /// Stops the producers; false if one did not finish within `bound`.
    pub async fn stop_producers(&mut self, bound: Duration) -> bool {
        self.stop_producers.store(true, Ordering::SeqCst);
        join_all_within(&mut self.producers, bound).await
    }

    /// Stops the consumers; false if one did not finish within `bound`.
    pub async fn stop_consumers(&mut self, bound: Duration) -> bool {
        self.stop_consumers.store(true, Ordering::SeqCst);
        join_all_within(&mut self.consumers, bound).await
    }
}

async fn join_all_within(tasks: &mut Vec<JoinHandle<()>>, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let mut all = true;
    for t in tasks.drain(..) {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(r) => r.expect("a workload task panicked"),
            Err(_) => all = false,
        }
    }
    all
}

async fn idempotent(ctx: Ctx, index: usize, stop: Arc<AtomicBool>) {
    let producer = loop {
        match ctx.producer().build().await {
            Ok(p) => break p,
            Err(_) if !stop.load(Ordering::SeqCst) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no producer: {e}"),
        }
    };
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let mut pending = Vec::new();
        for _ in 0..20 {
            let value = format!("p{index}-{n}");
            let record = ProducerRecord::new(TOPIC, value.clone()).key(format!("k{}", n % 16));
            n += 1;
            match producer.send_record(record).await {
                Ok(d) => pending.push((value, d)),
                Err(_) => ctx.history.lock().unwrap().unacked.push(value),
            }
        }
        for (value, d) in pending {
            let r = d.await;
            let mut h = ctx.history.lock().unwrap();
            match r {
                Ok(r) => {
                    h.acked.push((value, (r.topic, r.partition), r.offset));
                    ctx.figures.operation("records_acked", 1);
                }
                Err(_) => {
                    h.unacked.push(value);
                    ctx.figures.operation("records_failed", 1);
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), producer.close()).await;
}

async fn transactional(ctx: Ctx, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(ctx.seed ^ 0x7478);
    let mut producer: Option<Producer> = None;
    let mut t = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(p) = producer.as_ref() else {
            producer = init_transactional(&ctx).await;
            if producer.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        if p.begin_transaction().is_err() {
            close(producer.take()).await;
            continue;
        }
        let id = format!("tx{t}");
        t += 1;
        let abort = rng.chance(33);
        let mut values = Vec::new();
        let mut pending = Vec::new();
        let mut failed = false;
        for i in 0..10u64 {
            let value = format!("{id}-{i}");
            let record =
                ProducerRecord::new(TOPIC, value.clone()).key(format!("k{}", (t + i) % 16));
            match p.send_record(record).await {
                Ok(d) => pending.push((value, d)),
                Err(_) => {
                    values.push((value, None));
                    failed = true;
                    break;
                }
            }
        }
        let outcome = if abort || failed {
            // Written first, so the log holds what read_committed must skip.
            let _ = p.flush().await;
            abort_outcome(p).await
        } else {
            match p.commit_transaction().await {
                Ok(()) => Outcome::Committed,
                Err(Error::TransactionAbortable { .. }) => abort_outcome(p).await,
                Err(_) => Outcome::Unknown,
            }
        };
        for (value, d) in pending {
            let acked = match tokio::time::timeout(Duration::from_secs(10), d).await {
                Ok(Ok(r)) => Some(((r.topic, r.partition), r.offset)),
                _ => None,
            };
            values.push((value, acked));
        }
        if outcome == Outcome::Unknown {
            // The next instance fences this one and settles its transaction.
            close(producer.take()).await;
        }
        ctx.figures.operation(
            match outcome {
                Outcome::Committed => "txns_committed",
                Outcome::Aborted => "txns_aborted",
                Outcome::Unknown => "txns_unknown",
            },
            1,
        );
        ctx.history.lock().unwrap().txns.push(Txn {
            id,
            values,
            outcome,
        });
    }
    close(producer).await;
}

async fn abort_outcome(p: &Producer) -> Outcome {
    match p.abort_transaction().await {
        Ok(()) => Outcome::Aborted,
        Err(_) => Outcome::Unknown,
    }
}

async fn init_transactional(ctx: &Ctx) -> Option<Producer> {
    let p = ctx
        .producer()
        .transactional_id(format!("faults-tx-{}", ctx.seed))
        .transaction_timeout(Duration::from_secs(5))
        .build()
        .await
        .ok()?;
    match p.init_transactions().await {
        Ok(()) => Some(p),
        Err(_) => {
            close(Some(p)).await;
            None
        }
    }
}

async fn close(p: Option<Producer>) {
    if let Some(p) = p {
        let _ = tokio::time::timeout(Duration::from_secs(10), p.close()).await;
    }
}

/// Records the partitions a member holds, from the rebalance callbacks.
struct Recorder {
    member: String,
    ctx: Ctx,
}

impl Recorder {
    fn assigned(&self, tps: impl IntoIterator<Item = Tp>) {
        let now = self.ctx.since_start();
        let mut h = self.ctx.history.lock().unwrap();
        for tp in tps {
            h.ownership.push(Ownership {
                member: self.member.clone(),
                tp,
                from: now,
                to: None,
            });
        }
    }

    /// Ends the member's holding of every partition `keep` rejects.
    fn released(&self, keep: impl Fn(&Tp) -> bool) {
        let now = self.ctx.since_start();
        let mut h = self.ctx.history.lock().unwrap();
        for o in h.ownership.iter_mut() {
            if o.member == self.member && o.to.is_none() && !keep(&o.tp) {
                o.to = Some(now);
            }
        }
    }
}

fn tp(p: &TopicPartition) -> Tp {
    (p.topic.clone(), p.partition)
}

impl RebalanceListener for Recorder {
    fn on_revoked<'a>(
        &'a self,
        _: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        let gone: Vec<Tp> = partitions.iter().map(tp).collect();
        self.released(|t| !gone.contains(t));
        Box::pin(async {})
    }

    fn on_assigned<'a>(
        &'a self,
        _: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        self.assigned(partitions.iter().map(tp));
        Box::pin(async {})
    }
}

/// A group member; member 0 leaves and rejoins every few seconds.
async fn member(ctx: Ctx, index: usize, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(ctx.seed ^ (0x6d65 + index as u64));
    let mut incarnation = 0;
    while !stop.load(Ordering::SeqCst) {
        let recorder = Arc::new(Recorder {
            member: format!("m{index}.{incarnation}"),
            ctx: ctx.clone(),
        });
        incarnation += 1;
        let mut b = Consumer::builder()
            .group_id(GROUP)
            .subscribe([TOPIC])
            .client_id(recorder.member.clone())
            .isolation_level(IsolationLevel::ReadCommitted)
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .auto_commit_interval(Duration::from_millis(200))
            .session_timeout(Duration::from_secs(6))
            .request_timeout(Duration::from_secs(2))
            .retry_backoff(Duration::from_millis(50))
            .rebalance_listener(recorder.clone());
        for a in &ctx.addresses {
            b = b.bootstrap(a.clone());
        }
        let consumer = match b.build().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let leave_at = (index == 0)
            .then(|| Instant::now() + rng.between(Duration::from_secs(3), Duration::from_secs(8)));
        while !stop.load(Ordering::SeqCst) && leave_at.is_none_or(|t| Instant::now() < t) {
            if let Ok(records) = consumer.poll(Duration::from_millis(100)).await {
                ctx.figures
                    .operation("records_consumed", records.len() as u64);
            }
            // Partitions dropped without a callback (the member was
            // removed from the group) end here.
            let held: Vec<Tp> = consumer.assignment().iter().map(tp).collect();
            recorder.released(|t| held.contains(t));
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), consumer.close()).await;
        recorder.released(|_| false);
    }
}

/// Samples the coordinator's view: every partition owned by at most one
/// member at a time.
async fn sample_coordinator(ctx: Ctx, stop: Arc<AtomicBool>) {
    let mut admin = None;
    let mut last: Option<Violation> = None;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if admin.is_none() {
            admin = Admin::connect(ctx.addresses[0].clone()).await.ok();
        }
        let Some(a) = &admin else { continue };
        let Ok(group) = a.describe_group(GROUP).await else {
            continue;
        };
        ctx.figures.operation("coordinator_samples", 1);
        let mut owners: std::collections::BTreeMap<Tp, Vec<String>> = Default::default();
        for m in &group.members {
            for p in &m.owned {
                owners
                    .entry(tp(p))
                    .or_default()
                    .push(format!("{} ({})", m.client_id, m.member_id));
            }
        }
        for (tp, members) in owners {
            if members.len() > 1 {
                let v = Violation::SharedOwnership {
                    tp,
                    members,
                    at: ctx.since_start(),
                };
                let repeat = matches!((&last, &v),
                    (Some(Violation::SharedOwnership { tp: a, members: ma, .. }),
                     Violation::SharedOwnership { tp: b, members: mb, .. }) if a == b && ma == mb);
                if !repeat {
                    ctx.history.lock().unwrap().observed.push(v.clone());
                }
                last = Some(v);
            }
        }
    }
}
