//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1, or over TLS when
//! the agent has a certificate. One request per connection (the answer
//! closes it), which is what scrapers expect of a small exporter.
//!
//! The recorder is process-wide: every agent of a process that serves
//! metrics serves the same registry.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::tls::{self, Listener, Tls};

/// Largest request head read; a longer one is answered 431.
const MAX_HEAD: usize = 8 << 10;
/// A client must send its request and read the answer within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often histograms are rolled over.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use. If another recorder was
/// installed first, metrics go there and this endpoint serves none.
fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics serves nothing");
            }
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            handle
        })
        .clone()
}

/// Serves `/metrics` on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, tls: Option<Arc<Tls>>) {
    let handle = handle();
    let (ready, mut connections) = tokio::sync::mpsc::channel(16);
    tokio::spawn(tls::accept_loop(listener, tls, Listener::Plain, ready));
    while let Some((stream, info)) = connections.recv().await {
        let handle = handle.clone();
        tokio::spawn(async move {
            let answered = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &handle)).await;
            if let Ok(Err(e)) = answered {
                tracing::debug!(remote = ?info.remote, error = %e, "metrics request failed");
            }
        });
    }
}

/// Binds the metrics listener; serving starts with [`serve`].
pub(crate) async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    handle();
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        address: addr.to_string(),
        source,
    })
}

async fn answer(mut stream: tls::AgentStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let (status, body) = if !complete {
        ("431 Request Header Fields Too Large", String::new())
    } else {
        route(&head, handle)
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn route(head: &[u8], handle: &PrometheusHandle) -> (&'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", handle.render()),
        (Some(b"GET"), _) => ("404 Not Found", "try /metrics\n".into()),
        _ => ("405 Method Not Allowed", String::new()),
    }
}
