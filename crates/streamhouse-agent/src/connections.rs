//! Open client connections of this agent, by protocol: every TCP
//! connection accepted by the gRPC listener (one HTTP/2 connection; a
//! native client keeps one per agent it talks to) and by the Kafka
//! listener, from accept until closed. GetMetadata reports them in this
//! agent's own entry; the gauges `streamhouse_grpc_connections` and
//! `streamhouse_kafka_connections` follow them.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use crate::tls::{AgentStream, ConnInfo};

/// The protocol of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    Kafka,
}

impl Protocol {
    fn gauge(self) -> &'static str {
        match self {
            Protocol::Grpc => "streamhouse_grpc_connections",
            Protocol::Kafka => "streamhouse_kafka_connections",
        }
    }
}

/// Open connections per protocol.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    grpc: AtomicU64,
    kafka: AtomicU64,
}

impl Connections {
    fn counter(&self, protocol: Protocol) -> &AtomicU64 {
        match protocol {
            Protocol::Grpc => &self.grpc,
            Protocol::Kafka => &self.kafka,
        }
    }

    /// Connections of `protocol` open now.
    pub(crate) fn open(&self, protocol: Protocol) -> u64 {
        self.counter(protocol).load(Ordering::Relaxed)
    }
}

/// One open connection, counted while this lives.
pub(crate) struct Open {
    connections: Arc<Connections>,
    protocol: Protocol,
}

impl Open {
    pub(crate) fn new(connections: Arc<Connections>, protocol: Protocol) -> Open {
        connections
            .counter(protocol)
            .fetch_add(1, Ordering::Relaxed);
        ::metrics::gauge!(protocol.gauge()).increment(1.0);
        Open {
            connections,
            protocol,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.connections
            .counter(self.protocol)
            .fetch_sub(1, Ordering::Relaxed);
        ::metrics::gauge!(self.protocol.gauge()).decrement(1.0);
    }
}

/// A gRPC connection's stream, counted until tonic drops it. Its
/// [`ConnInfo`] reaches every request of the connection as an extension.
pub(crate) struct CountedStream {
    inner: AgentStream,
    info: ConnInfo,
    _open: Open,
}

impl CountedStream {
    pub(crate) fn new(
        inner: AgentStream,
        info: ConnInfo,
        connections: Arc<Connections>,
    ) -> CountedStream {
        CountedStream {
            inner,
            info,
            _open: Open::new(connections, Protocol::Grpc),
        }
    }
}

impl Connected for CountedStream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_count_while_open() {
        let c = Arc::new(Connections::default());
        let a = Open::new(c.clone(), Protocol::Kafka);
        let b = Open::new(c.clone(), Protocol::Kafka);
        let g = Open::new(c.clone(), Protocol::Grpc);
        assert_eq!((c.open(Protocol::Grpc), c.open(Protocol::Kafka)), (1, 2));
        drop(a);
        drop(g);
        assert_eq!((c.open(Protocol::Grpc), c.open(Protocol::Kafka)), (0, 1));
        drop(b);
        assert_eq!(c.open(Protocol::Kafka), 0);
    }
}
