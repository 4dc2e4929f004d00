//! Kafka connections: accepting them, reading size-prefixed request
//! frames, and writing the answers in request order while later requests
//! are already being handled (pipelining).
//!
//! ```text
//! socket ─read frame─▶ dispatch::request ─spawn─▶ answer task ┐
//!        ◀─write in order── writer (awaits the tasks FIFO) ◀──┘
//! ```
//!
//! A frame whose size is negative, too small for a request header, or over
//! the agent's largest request closes the connection, as do an unknown API
//! key and a body that does not decode; other connections are unaffected.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::Broker;
use super::dispatch;
use crate::connections::{Open, Protocol};
use crate::error::{Error, Result};

/// Requests of one connection handled at the same time, answered in order.
const MAX_IN_FLIGHT: usize = 64;
/// Smallest request: API key, version and correlation id.
const MIN_FRAME: usize = 8;
/// Memory first reserved for a frame; more as its bytes arrive.
const INITIAL_FRAME_CAPACITY: usize = 64 << 10;

/// Accepts Kafka connections on `listener` until `stop` changes, then
/// serves the open ones until the task is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let broker = broker.clone();
                    connections.spawn(async move {
                        if let Err(e) = connection(stream, broker).await {
                            tracing::debug!(%peer, error = %e, "Kafka connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a Kafka connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The client of a connection, as request handlers see it.
#[derive(Clone, Debug)]
pub(super) struct Peer {
    /// The client's address as Kafka shows it (`/ip`).
    pub host: String,
    /// Becomes true once the client stopped sending (it closed the
    /// connection, or a frame was malformed).
    pub gone: watch::Receiver<bool>,
}

impl Peer {
    /// Whether the client stopped sending.
    pub fn is_gone(&self) -> bool {
        *self.gone.borrow()
    }
}

/// One answer, in the order of its request; `None` for a request that is
/// not answered (produce with acks=0).
type Answer = JoinHandle<Result<Option<Bytes>>>;

async fn connection(stream: TcpStream, broker: Arc<Broker>) -> Result<()> {
    let _open = Open::new(broker.connections.clone(), Protocol::Kafka);
    let (gone_tx, gone) = watch::channel(false);
    let peer = Peer {
        host: stream
            .peer_addr()
            .map(|a| format!("/{}", a.ip()))
            .unwrap_or_default(),
        gone,
    };
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Answer>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(answer) = rx.recv().await {
            let frame = answer
                .await
                .map_err(|e| Error::KafkaConnection(format!("request handler failed: {e}")))??;
            if let Some(frame) = frame {
                wr.write_all(&frame).await.map_err(Error::KafkaIo)?;
            }
        }
        wr.shutdown().await.map_err(Error::KafkaIo)
    });
    let read = read_requests(&mut rd, &broker, &tx, &peer).await;
    // Handlers that wait for other members (JoinGroup, SyncGroup) stop
    // waiting on behalf of a client that is gone.
    let _ = gone_tx.send(true);
    // The requests read so far are still answered, then the socket closes.
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::KafkaConnection(format!("writer failed: {e}")))?;
    read.and(written)
}

async fn read_requests(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    broker: &Arc<Broker>,
    answers: &mpsc::Sender<Answer>,
    peer: &Peer,
) -> Result<()> {
    let max = broker.limits.max_request_bytes;
    loop {
        let size = match rd.read_i32().await {
            Ok(size) => size,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(Error::KafkaIo(e)),
        };
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| (MIN_FRAME..=max).contains(&s))
            .ok_or_else(|| {
                Error::KafkaConnection(format!(
                    "request frame of {size} bytes (allowed: {MIN_FRAME} to {max})"
                ))
            })?;
        // Memory grows with the bytes that arrive, not with the size a
        // client announces.
        let mut frame = Vec::with_capacity(size.min(INITIAL_FRAME_CAPACITY));
        (&mut *rd)
            .take(size as u64)
            .read_to_end(&mut frame)
            .await
            .map_err(Error::KafkaIo)?;
        if frame.len() < size {
            return Err(Error::KafkaConnection(format!(
                "the connection closed {} bytes into a {size}-byte frame",
                frame.len()
            )));
        }
        let answer = dispatch::request(broker, Bytes::from(frame), peer).await?;
        if answers.send(tokio::spawn(answer)).await.is_err() {
            // The writer stopped: the socket is gone.
            return Ok(());
        }
    }
}
