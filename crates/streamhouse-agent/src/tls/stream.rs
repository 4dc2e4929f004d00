//! A connection accepted by a listener, plain or TLS, and what is known of
//! its client once the handshake is done.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::{Listener, Tls, subject};

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener knows of a connection's client.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// Whether the connection is encrypted.
    pub tls: bool,
    /// The common name of the client certificate, verified against the
    /// client CA (mutual TLS).
    pub cert_name: Option<String>,
}

/// A connection's byte stream.
pub(crate) enum AgentStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Completes a connection accepted on a listener: the TLS handshake when
/// `tls` is set (bounded in time), and what is known of the client.
pub(crate) async fn accept(
    stream: TcpStream,
    tls: Option<&Tls>,
    listener: Listener,
) -> std::io::Result<(AgentStream, ConnInfo)> {
    let _ = stream.set_nodelay(true);
    let remote = stream.peer_addr().ok();
    let Some(tls) = tls else {
        let info = ConnInfo {
            remote,
            ..ConnInfo::default()
        };
        return Ok((AgentStream::Plain(stream), info));
    };
    let handshake = tls.acceptor(listener).accept(stream);
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    let cert_name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| subject::common_name(leaf.as_ref()));
    let info = ConnInfo {
        remote,
        tls: true,
        cert_name,
    };
    Ok((AgentStream::Tls(Box::new(stream)), info))
}

/// Accepts on `listener`, completing handshakes concurrently so a slow
/// client does not hold up others, and hands each ready connection to
/// `ready` until the listener or `ready` is gone.
pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<Tls>>,
    kind: Listener,
    ready: tokio::sync::mpsc::Sender<(AgentStream, ConnInfo)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        let tls = tls.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match accept(stream, tls.as_deref(), kind).await {
                Ok(conn) => {
                    let _ = ready.send(conn).await;
                }
                Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            }
        });
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            AgentStream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            AgentStream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for AgentStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        both!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        both!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        both!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            AgentStream::Plain(s) => s.is_write_vectored(),
            AgentStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, s => s.poll_shutdown(cx))
    }
}
