//! The measurements, run the same way against either system through [`crate::client`]:
//! put throughput and latency at several client counts, linearizable gets, compare-and-swap
//! transactions, watch delivery latency, leader fail-over and resident memory.
//!
//! Connections are spread round-robin over the members with the leader first, so both systems
//! see the same mix of leader and follower traffic.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::client::{self, rpc};
use crate::cluster::{BenchCluster, MEMBERS};
use crate::error::{BenchError, Result};
use crate::stats::{Latencies, LoadSummary};

/// Size of every value written.
pub const VALUE_SIZE: usize = 256;
/// Client counts of the put phases.
pub const PUT_CLIENTS: [usize; 4] = [1, 16, 64, 256];
/// Clients of the get and txn phases.
pub const READ_CLIENTS: usize = 64;
/// Watchers of the watch phase.
pub const WATCHERS: usize = 1000;
/// Clients that share one HTTP/2 connection (at least one connection per member).
const CLIENTS_PER_CONN: usize = 16;
/// Distinct keys the put phases write.
const PUT_KEYS: u64 = 10_000;
/// Keys the get phase reads (written before it).
const GET_KEYS: u64 = 1_000;
/// Watch streams the watchers are spread over.
const WATCH_STREAMS: usize = 20;
/// The key every watcher watches.
const WATCH_KEY: &[u8] = b"/bench/watch";

/// How long each phase runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Load before measuring starts (connections warm, caches filled).
    pub warmup: Duration,
    /// Measured time of each load phase.
    pub phase: Duration,
    /// Writes whose delivery to every watcher is timed.
    pub watch_puts: usize,
    /// Pause between those writes, so each is delivered on its own.
    pub watch_gap: Duration,
    /// Leader kills.
    pub failovers: usize,
    /// Quiet time before idle memory is read.
    pub settle: Duration,
    /// Stop after the put phases (and the memory reading after them).
    pub puts_only: bool,
}

impl Plan {
    /// The full plan, or a short one for smoke runs.
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                warmup: Duration::from_millis(300),
                phase: Duration::from_secs(2),
                watch_puts: 30,
                watch_gap: Duration::from_millis(20),
                failovers: 1,
                settle: Duration::from_secs(1),
                puts_only: false,
            }
        } else {
            Plan {
                warmup: Duration::from_secs(1),
                phase: Duration::from_secs(8),
                watch_puts: 200,
                watch_gap: Duration::from_millis(20),
                failovers: 3,
                settle: Duration::from_secs(3),
                puts_only: false,
            }
        }
    }
}

/// Watch delivery figures.
#[derive(Clone, Debug)]
pub struct WatchSummary {
    /// Median time from sending a put to a watcher receiving its event.
    pub p50: Duration,
    /// 99th percentile of the same.
    pub p99: Duration,
    /// Events delivered.
    pub delivered: usize,
    /// Events expected (watchers x puts).
    pub expected: usize,
}

/// Everything measured on one system.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Put phases by client count.
    pub put: Vec<(usize, LoadSummary)>,
    /// Linearizable gets.
    pub get: Option<LoadSummary>,
    /// Compare-and-swap transactions, with the share that swapped.
    pub txn: Option<(LoadSummary, f64)>,
    /// Watch delivery.
    pub watch: Option<WatchSummary>,
    /// Leader fail-over times, one per kill.
    pub failover: Vec<Duration>,
    /// Resident memory per member (KiB) before any load.
    pub rss_idle: Vec<u64>,
    /// Resident memory per member (KiB) after the load phases.
    pub rss_loaded: Vec<u64>,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Put,
    Get,
    CompareAndSwap,
}

/// A tiny deterministic generator for key choice (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn put_key(n: u64) -> Vec<u8> {
    format!("/bench/put/{n:05}").into_bytes()
}

/// Runs every measurement on `cluster`, reporting progress through `say`.
pub async fn measure(
    cluster: &mut BenchCluster,
    plan: &Plan,
    say: &dyn Fn(&str),
) -> Result<Figures> {
    let mut figures = Figures::default();
    let endpoints = leader_first(cluster).await?;
    tokio::time::sleep(plan.settle).await;
    figures.rss_idle = cluster.rss_kib()?;
    for clients in PUT_CLIENTS {
        say(&format!("put, {clients} clients"));
        let summary = load(&endpoints, Op::Put, clients, plan).await?;
        figures.put.push((clients, summary.0));
    }
    if plan.puts_only {
        figures.rss_loaded = cluster.rss_kib()?;
        return Ok(figures);
    }
    say("prefill for gets");
    prefill(&endpoints).await?;
    say(&format!("linearizable get, {READ_CLIENTS} clients"));
    figures.get = Some(load(&endpoints, Op::Get, READ_CLIENTS, plan).await?.0);
    say(&format!("txn compare-and-swap, {READ_CLIENTS} clients"));
    let (txn, swapped) = load(&endpoints, Op::CompareAndSwap, READ_CLIENTS, plan).await?;
    figures.txn = Some((txn, swapped));
    say(&format!("watch delivery, {WATCHERS} watchers"));
    figures.watch = Some(watch_latency(&endpoints, plan).await?);
    figures.rss_loaded = cluster.rss_kib()?;
    for trial in 1..=plan.failovers {
        say(&format!("leader fail-over {trial}/{}", plan.failovers));
        figures.failover.push(failover(cluster).await?);
    }
    Ok(figures)
}

/// Client URLs with the leader's first.
async fn leader_first(cluster: &BenchCluster) -> Result<Vec<String>> {
    let leader = cluster
        .leader()
        .await?
        .ok_or_else(|| BenchError::Unexpected("no member reports being leader".to_string()))?;
    let mut urls = vec![cluster.client_url(leader).to_string()];
    urls.extend(
        (0..MEMBERS)
            .filter(|i| *i != leader)
            .map(|i| cluster.client_url(i).to_string()),
    );
    Ok(urls)
}

/// Runs `clients` concurrent loops of `op` for the warm-up and the measured phase. Returns the
/// summary and, for compare-and-swap, the share of transactions that swapped.
async fn load(
    endpoints: &[String],
    op: Op,
    clients: usize,
    plan: &Plan,
) -> Result<(LoadSummary, f64)> {
    let conns = clients.div_ceil(CLIENTS_PER_CONN).max(endpoints.len());
    let channels = client::connect_many(endpoints, conns).await?;
    let measure_from = Instant::now() + plan.warmup;
    let until = measure_from + plan.phase;
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let channel = channels[c % channels.len()].clone();
        tasks.spawn(client_loop(op, channel, c, measure_from, until));
    }
    let (mut latencies, mut errors, mut swapped, mut tried) = (Latencies::default(), 0, 0u64, 0u64);
    while let Some(joined) = tasks.join_next().await {
        let run =
            joined.map_err(|e| BenchError::Unexpected(format!("client task failed: {e}")))??;
        latencies.merge(run.latencies);
        errors += run.errors;
        swapped += run.swapped;
        tried += run.tried;
    }
    let share = if tried == 0 {
        1.0
    } else {
        swapped as f64 / tried as f64
    };
    Ok((LoadSummary::new(latencies, plan.phase, errors), share))
}

struct ClientRun {
    latencies: Latencies,
    errors: u64,
    swapped: u64,
    tried: u64,
}

async fn client_loop(
    op: Op,
    channel: Channel,
    client: usize,
    measure_from: Instant,
    until: Instant,
) -> Result<ClientRun> {
    let mut kv = rpc::kv_client::KvClient::new(channel);
    let mut rng = Rng::new(client as u64 + 1);
    let value = vec![b'v'; VALUE_SIZE];
    let cas_key = format!("/bench/cas/{client:04}").into_bytes();
    let mut expected = match op {
        Op::CompareAndSwap => client::put(&mut kv, cas_key.clone(), value.clone()).await?,
        Op::Put | Op::Get => 0,
    };
    let mut run = ClientRun {
        latencies: Latencies::default(),
        errors: 0,
        swapped: 0,
        tried: 0,
    };
    loop {
        let started = Instant::now();
        if started >= until {
            return Ok(run);
        }
        let outcome = match op {
            Op::Put => client::put(&mut kv, put_key(rng.below(PUT_KEYS)), value.clone())
                .await
                .map(|_| true),
            Op::Get => client::get(&mut kv, put_key(rng.below(GET_KEYS))).await,
            Op::CompareAndSwap => {
                match client::compare_and_swap(&mut kv, cas_key.clone(), expected, value.clone())
                    .await
                {
                    Ok((swapped, revision)) => {
                        expected = revision;
                        Ok(swapped)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if started < measure_from {
            continue;
        }
        match outcome {
            Ok(ok) => {
                run.latencies.record(started.elapsed());
                run.tried += 1;
                run.swapped += u64::from(ok);
            }
            Err(_) => run.errors += 1,
        }
    }
}

/// Writes every key the get phase reads.
async fn prefill(endpoints: &[String]) -> Result<()> {
    let channels = client::connect_many(endpoints, READ_CLIENTS.div_ceil(CLIENTS_PER_CONN)).await?;
    let mut tasks = JoinSet::new();
    for (c, channel) in channels.into_iter().enumerate() {
        let n = endpoints.len().max(1);
        tasks.spawn(async move {
            let mut kv = rpc::kv_client::KvClient::new(channel);
            let mut key = c as u64;
            while key < GET_KEYS {
                client::put(&mut kv, put_key(key), vec![b'v'; VALUE_SIZE]).await?;
                key += n as u64;
            }
            Ok::<_, BenchError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| BenchError::Unexpected(format!("prefill task failed: {e}")))??;
    }
    Ok(())
}

/// Opens [`WATCHERS`] watches of [`WATCH_KEY`] over [`WATCH_STREAMS`] streams, then writes the
/// key `plan.watch_puts` times and times each event from the put being sent to its arrival.
async fn watch_latency(endpoints: &[String], plan: &Plan) -> Result<WatchSummary> {
    let per_stream = WATCHERS / WATCH_STREAMS;
    let expected_per_stream = per_stream * plan.watch_puts;
    let give_up = plan.watch_gap * plan.watch_puts as u32 + Duration::from_secs(30);
    let mut readers = JoinSet::new();
    // Keeps the request sides open until the readers are done.
    let mut senders = Vec::new();
    for s in 0..WATCH_STREAMS {
        let channel = client::connect(&endpoints[s % endpoints.len()]).await?;
        let (tx, rx) = mpsc::channel(per_stream + 1);
        // Queue the creates before opening the stream: etcd (grpc-go) sends the response
        // headers only with the first response.
        for _ in 0..per_stream {
            let create = rpc::WatchRequest {
                request_union: Some(rpc::watch_request::RequestUnion::CreateRequest(
                    rpc::WatchCreateRequest {
                        key: WATCH_KEY.to_vec(),
                        ..Default::default()
                    },
                )),
            };
            tx.send(create)
                .await
                .map_err(|_| BenchError::Unexpected("watch stream closed".to_string()))?;
        }
        let mut responses = rpc::watch_client::WatchClient::new(channel)
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(BenchError::rpc("watch"))?
            .into_inner();
        let mut created = 0;
        while created < per_stream {
            let response = tokio::time::timeout(client::CALL_TIMEOUT, responses.message())
                .await
                .map_err(|_| BenchError::Timeout("watches to be created".to_string()))?
                .map_err(BenchError::rpc("watch"))?
                .ok_or_else(|| BenchError::Unexpected("watch stream ended".to_string()))?;
            if response.canceled {
                return Err(BenchError::Unexpected(format!(
                    "watch refused: {}",
                    response.cancel_reason
                )));
            }
            created += usize::from(response.created);
        }
        senders.push(tx);
        readers.spawn(async move {
            let mut arrivals: Vec<(usize, Instant)> = Vec::with_capacity(expected_per_stream);
            let deadline = tokio::time::Instant::now() + give_up;
            while arrivals.len() < expected_per_stream {
                let next = tokio::time::timeout_at(deadline, responses.message()).await;
                let Ok(Ok(Some(response))) = next else { break };
                let now = Instant::now();
                for event in response.events {
                    let index = event
                        .kv
                        .and_then(|kv| String::from_utf8(kv.value).ok())
                        .and_then(|v| v.parse::<usize>().ok());
                    if let Some(index) = index {
                        arrivals.push((index, now));
                    }
                }
            }
            arrivals
        });
    }
    let mut kv = rpc::kv_client::KvClient::new(client::connect(&endpoints[0]).await?);
    let mut sent = Vec::with_capacity(plan.watch_puts);
    for i in 0..plan.watch_puts {
        sent.push(Instant::now());
        client::put(&mut kv, WATCH_KEY.to_vec(), i.to_string().into_bytes()).await?;
        tokio::time::sleep(plan.watch_gap).await;
    }
    let mut latencies = Latencies::default();
    let mut delivered = 0;
    while let Some(joined) = readers.join_next().await {
        let arrivals =
            joined.map_err(|e| BenchError::Unexpected(format!("watch reader failed: {e}")))?;
        for (index, at) in arrivals {
            if let Some(sent_at) = sent.get(index) {
                latencies.record(at.saturating_duration_since(*sent_at));
                delivered += 1;
            }
        }
    }
    drop(senders);
    Ok(WatchSummary {
        p50: latencies.quantile(0.50).unwrap_or_default(),
        p99: latencies.quantile(0.99).unwrap_or_default(),
        delivered,
        expected: WATCHERS / WATCH_STREAMS * WATCH_STREAMS * plan.watch_puts,
    })
}

/// Kills the leader with SIGKILL and times until the first write succeeds on a survivor; a new
/// write attempt starts every [`PROBE_INTERVAL`], so the figure does not depend on a client's
/// retry policy. Restarts the killed member afterwards.
async fn failover(cluster: &mut BenchCluster) -> Result<Duration> {
    const PROBE_INTERVAL: Duration = Duration::from_millis(10);
    const GIVE_UP: Duration = Duration::from_secs(30);
    let leader = cluster
        .leader()
        .await?
        .ok_or_else(|| BenchError::Unexpected("no leader before the kill".to_string()))?;
    let mut survivors = Vec::new();
    for i in (0..MEMBERS).filter(|i| *i != leader) {
        survivors.push(client::connect(cluster.client_url(i)).await?);
    }
    // A write through each survivor first, so connections are warm and the cluster healthy.
    for channel in &survivors {
        let mut kv = rpc::kv_client::KvClient::new(channel.clone());
        client::put(&mut kv, b"/bench/failover".to_vec(), b"before".to_vec()).await?;
    }
    let killed_at = Instant::now();
    cluster.kill(leader);
    let mut probes = JoinSet::new();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    let mut n = 0usize;
    let elapsed = loop {
        tokio::select! {
            _ = tick.tick() => {
                if killed_at.elapsed() > GIVE_UP {
                    return Err(BenchError::Timeout("a write after killing the leader".to_string()));
                }
                let mut kv = rpc::kv_client::KvClient::new(survivors[n % survivors.len()].clone());
                n += 1;
                probes.spawn(async move {
                    client::put(&mut kv, b"/bench/failover".to_vec(), b"after".to_vec()).await
                });
            }
            Some(joined) = probes.join_next() => {
                if matches!(joined, Ok(Ok(_))) {
                    break killed_at.elapsed();
                }
            }
        }
    };
    probes.abort_all();
    cluster.restart(leader).await?;
    settle(cluster).await?;
    Ok(elapsed)
}

/// Waits until every member has applied a fresh write, so the next kill starts from a healthy
/// cluster (a restarted member that is still catching up would slow either system's election).
async fn settle(cluster: &BenchCluster) -> Result<()> {
    const KEY: &[u8] = b"/bench/settled";
    let leader = cluster
        .leader()
        .await?
        .ok_or_else(|| BenchError::Unexpected("no leader after the restart".to_string()))?;
    let mut kv = rpc::kv_client::KvClient::new(client::connect(cluster.client_url(leader)).await?);
    let marker = format!("{:?}", Instant::now()).into_bytes();
    client::put(&mut kv, KEY.to_vec(), marker.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..MEMBERS {
        let mut kv = rpc::kv_client::KvClient::new(client::connect(cluster.client_url(i)).await?);
        while client::local_value(&mut kv, KEY.to_vec())
            .await
            .ok()
            .flatten()
            != Some(marker.clone())
        {
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(
                    "the restarted member to catch up".to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let the restarted member see a few heartbeats before the next kill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}
