//! A TCP proxy on loopback between clients and a server (an agent, or the
//! S3 server) that injects faults on command: delayed responses, lost
//! responses (the connection is reset after the request reached the
//! server, before its answer reaches the client), duplicated requests,
//! reset connections and stalls.
//!
//! gRPC runs over HTTP/2, so a response cannot be duplicated byte-wise
//! without breaking the framing; "duplicate" replays instead every byte a
//! client sent on a connection, from its first byte, on a second
//! connection to the server whose answers are thrown away: every request
//! of that connection reaches the server twice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::profile::{Figures, Rng};

/// What the proxy does to traffic now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Each response chunk waits a random time below this.
    Delay(Duration),
    /// Each response chunk is, with this percent chance, never delivered:
    /// the client connection is reset instead.
    DropResponses(u64),
    /// New connections are recorded and replayed to the server once.
    Duplicate,
    /// Responses are held back while the mode lasts.
    Stall,
    /// New connections are reset at once (existing ones are reset by
    /// [`Proxy::reset_all`]).
    Refuse,
}

/// Most bytes of one connection recorded for a duplicate replay.
const MAX_REPLAY_BYTES: usize = 4 << 20;

struct Shared {
    name: &'static str,
    upstream: Mutex<Option<SocketAddr>>,
    mode: Mutex<Mode>,
    rng: Mutex<Rng>,
    figures: Arc<Figures>,
    resets: watch::Sender<u64>,
    closed: AtomicBool,
}

/// A proxy listening on a free loopback port until dropped.
pub struct Proxy {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port; connections wait for an upstream
    /// (set with [`Proxy::set_upstream`]) and are refused without one.
    /// `name` prefixes the fault kinds it counts in `figures`.
    pub async fn start(name: &'static str, seed: u64, figures: Arc<Figures>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name,
            upstream: Mutex::new(None),
            mode: Mutex::new(Mode::Pass),
            rng: Mutex::new(Rng::new(seed)),
            figures,
            resets: watch::channel(0).0,
            closed: AtomicBool::new(false),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Proxy {
            address,
            shared,
            task,
        }
    }

    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = Some(upstream);
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Resets every open connection (RST to both sides).
    pub fn reset_all(&self) {
        self.shared.resets.send_modify(|g| *g += 1);
        self.count("reset_connections");
    }

    fn count(&self, kind: &'static str) {
        self.shared.count(kind);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.resets.send_modify(|g| *g += 1);
        self.task.abort();
    }
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    fn count(&self, kind: &'static str) {
        self.figures.effect(format!("{}_{kind}", self.name));
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let upstream = *shared.upstream.lock().unwrap();
            let mode = shared.mode();
            let Some(upstream) = upstream.filter(|_| mode != Mode::Refuse) else {
                if mode == Mode::Refuse {
                    shared.count("refused_connections");
                }
                reset(&client);
                return;
            };
            let Ok(server) = TcpStream::connect(upstream).await else {
                reset(&client);
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let record = mode == Mode::Duplicate;
            if record {
                shared.count("duplicated_connections");
            }
            serve(client, server, upstream, record, shared).await;
        });
    }
}

fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Pumps both directions until either side closes, a reset is ordered or
/// a fault ends the connection.
async fn serve(
    client: TcpStream,
    server: TcpStream,
    upstream: SocketAddr,
    record: bool,
    shared: Arc<Shared>,
) {
    let mut resets = shared.resets.subscribe();
    resets.mark_unchanged();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let recorded = Arc::new(Mutex::new(record.then(Vec::new)));
    let abort = {
        let requests = pump_requests(client_read, server_write, recorded.clone());
        let responses = pump_responses(server_read, &client_write, shared.clone());
        tokio::pin!(requests, responses);
        tokio::select! {
            _ = &mut requests => false,
            dropped = &mut responses => dropped,
            _ = resets.changed() => true,
        }
    };
    if abort {
        let _ = client_write.as_ref().set_zero_linger();
    }
    drop(client_write);
    let replay = recorded.lock().unwrap().take();
    if let Some(bytes) = replay.filter(|b| !b.is_empty() && !shared.closed.load(Ordering::SeqCst)) {
        tokio::spawn(replay_to(upstream, bytes));
    }
}

async fn pump_requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    recorded: Arc<Mutex<Option<Vec<u8>>>>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut rec = recorded.lock().unwrap();
            if let Some(r) = rec.as_mut() {
                if r.len() + n <= MAX_REPLAY_BYTES {
                    r.extend_from_slice(&buf[..n]);
                } else {
                    *rec = None;
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Forwards responses; returns true when a fault ended the connection.
async fn pump_responses(mut from: OwnedReadHalf, to: &OwnedWriteHalf, shared: Arc<Shared>) -> bool {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        match shared.mode() {
            Mode::Pass | Mode::Duplicate | Mode::Refuse => {}
            Mode::Delay(max) => {
                let wait = shared.rng.lock().unwrap().between(Duration::ZERO, max);
                shared.count("delayed_responses");
                tokio::time::sleep(wait).await;
            }
            Mode::DropResponses(percent) => {
                if shared.rng.lock().unwrap().chance(percent) {
                    shared.count("lost_responses");
                    return true;
                }
            }
            Mode::Stall => {
                shared.count("stalled_responses");
                // Bounded: a stall outlives its window by at most 10 s.
                for _ in 0..500 {
                    if shared.mode() != Mode::Stall {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        if write_all(to, &buf[..n]).await.is_err() {
            return false;
        }
    }
}

async fn write_all(to: &OwnedWriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends a recorded client byte stream to the server again and reads (and
/// discards) what it answers for a bounded time.
async fn replay_to(upstream: SocketAddr, bytes: Vec<u8>) {
    let Ok(stream) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut read, mut write) = stream.into_split();
    let _ = tokio::time::timeout(Duration::from_secs(5), async move {
        let drain = async {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        let send = async {
            let _ = write.write_all(&bytes).await;
            // Keep the connection open a moment so the server answers.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = write.shutdown().await;
        };
        tokio::join!(drain, send);
    })
    .await;
}

#[tokio::test]
async fn the_proxy_forwards_and_resets() {
    let figures = Arc::new(Figures::default());
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start("test", 1, figures.clone()).await;
    proxy.set_upstream(echo_addr);
    let mut c = TcpStream::connect(proxy.address).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    proxy.set_mode(Mode::DropResponses(100));
    c.write_all(b"lost").await.unwrap();
    let mut rest = Vec::new();
    let read = c.read_to_end(&mut rest).await;
    assert!(read.is_err() || rest.is_empty(), "the response was dropped");
    assert_eq!(figures.effects_total(), 1);

    proxy.set_mode(Mode::Refuse);
    let mut c = TcpStream::connect(proxy.address).await.unwrap();
    let _ = c.write_all(b"x").await;
    let mut rest = Vec::new();
    let read = c.read_to_end(&mut rest).await;
    assert!(read.is_err() || rest.is_empty(), "refused");
}
