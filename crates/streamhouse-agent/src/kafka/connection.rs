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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::Broker;
use super::{dispatch, sasl};
use crate::auth::Session;
use crate::connections::{Open, Protocol};
use crate::error::{Error, Result};
use crate::tls::{self, AgentStream, ConnInfo, Listener, Tls};

/// Requests of one connection handled at the same time, answered in order.
const MAX_IN_FLIGHT: usize = 64;
/// Smallest request: API key, version and correlation id.
const MIN_FRAME: usize = 8;
/// Largest frame read from a connection that has not authenticated yet
/// (Kafka's `sasl.server.max.receive.size`).
const UNAUTHENTICATED_MAX_FRAME: usize = 512 << 10;
/// Memory first reserved for a frame; more as its bytes arrive.
const INITIAL_FRAME_CAPACITY: usize = 64 << 10;

/// Accepts Kafka connections on `listener` until `stop` changes, then
/// serves the open ones until the task is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    broker: Arc<Broker>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let broker = broker.clone();
                    let tls = tls.clone();
                    connections.spawn(async move {
                        let (stream, info) = match tls::accept(stream, tls.as_deref(), Listener::Plain).await {
                            Ok(accepted) => accepted,
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "Kafka TLS handshake failed");
                                return;
                            }
                        };
                        if let Err(e) = connection(stream, info, broker).await {
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
    /// Who the client is (see [`sasl`]).
    pub session: Session,
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

async fn connection(stream: AgentStream, info: ConnInfo, broker: Arc<Broker>) -> Result<()> {
    let _open = Open::new(broker.connections.clone(), Protocol::Kafka);
    let (gone_tx, gone) = watch::channel(false);
    let mut peer = Peer {
        host: info
            .remote
            .map(|a| format!("/{}", a.ip()))
            .unwrap_or_default(),
        gone,
        session: Session::anonymous(info.remote, "kafka"),
    };
    let mut sasl = sasl::Conn::new(broker.auth.clone(), info);
    peer.session = sasl.session.clone();
    let (mut rd, mut wr) = tokio::io::split(stream);
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
    let read = read_requests(&mut rd, &broker, &tx, peer, &mut sasl).await;
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

/// Reads a frame of `size` bytes (fewer if the connection closes first).
/// Memory follows the bytes that arrive, not the size a client announces:
/// the first [`INITIAL_FRAME_CAPACITY`] bytes, then, once they have come,
/// room for the rest in one step, so a large frame is neither copied as it
/// grows nor reserved before its sender has sent much of it.
async fn read_frame(rd: &mut (impl AsyncRead + Unpin), size: usize) -> Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(size.min(INITIAL_FRAME_CAPACITY));
    while frame.len() < size {
        if frame.len() == frame.capacity() {
            frame.reserve_exact(size - frame.len());
        }
        let room = (size - frame.len()).min(frame.capacity() - frame.len());
        let n = (&mut *rd)
            .take(room as u64)
            .read_buf(&mut frame)
            .await
            .map_err(Error::KafkaIo)?;
        if n == 0 {
            break;
        }
    }
    Ok(frame)
}

async fn read_requests(
    rd: &mut (impl AsyncRead + Unpin),
    broker: &Arc<Broker>,
    answers: &mpsc::Sender<Answer>,
    mut peer: Peer,
    sasl: &mut sasl::Conn,
) -> Result<()> {
    loop {
        // Before authentication only ApiVersions and SASL requests may
        // come, all small: a client that has not authenticated cannot make
        // the agent hold a large frame.
        let max = if sasl.authenticated() {
            broker.limits.max_request_bytes
        } else {
            broker
                .limits
                .max_request_bytes
                .min(UNAUTHENTICATED_MAX_FRAME)
        };
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
        let frame = read_frame(rd, size).await?;
        if frame.len() < size {
            return Err(Error::KafkaConnection(format!(
                "the connection closed {} bytes into a {size}-byte frame",
                frame.len()
            )));
        }
        let answer = dispatch::request(broker, Bytes::from(frame), &peer, sasl).await?;
        if answers.send(tokio::spawn(answer)).await.is_err() {
            // The writer stopped: the socket is gone.
            return Ok(());
        }
        if sasl.failed {
            // A failed authentication is answered, then the connection closes.
            return Ok(());
        }
        if sasl.authenticated() && sasl.session.principal != peer.session.principal {
            peer.session = sasl.session.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn frames_are_read_whole_as_their_bytes_arrive() {
        let size = 3 * INITIAL_FRAME_CAPACITY + 17;
        let sent: Vec<u8> = (0..size + 5).map(|i| (i % 251) as u8).collect();
        let (mut client, mut server) = tokio::io::duplex(4096);
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for piece in sent.chunks(10_000) {
                    client.write_all(piece).await.unwrap();
                }
                client
            })
        };
        let frame = read_frame(&mut server, size).await.unwrap();
        assert_eq!(
            frame,
            sent[..size],
            "exactly the frame, no byte of the next"
        );
        let mut next = [0u8; 5];
        server.read_exact(&mut next).await.unwrap();
        assert_eq!(next, sent[size..]);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_frame_cut_short_returns_what_came() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(&[7u8; 1000]).await.unwrap();
        drop(client);
        let frame = read_frame(&mut server, 1 << 20).await.unwrap();
        assert_eq!(frame.len(), 1000);
        assert!(
            frame.capacity() <= INITIAL_FRAME_CAPACITY,
            "nothing reserved for bytes that never came"
        );
    }
}
