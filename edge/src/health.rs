//! Active health checks: a plain HTTP/1.1 GET of the group's health path on every
//! resolved origin address each interval, fed through the healthy/unhealthy thresholds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::EdgeState;

/// Runs forever, re-reading the current snapshot each round so reloads take effect.
pub async fn run(state: Arc<EdgeState>) {
    loop {
        let snapshot = state.snapshot();
        let upstream = snapshot.upstream.clone();
        let interval = upstream.health.interval;
        if upstream.active_checks {
            let origins = upstream.pool().origins.clone();
            let checks = origins.into_iter().map(|origin| {
                let check = upstream.health.clone();
                async move {
                    let ok = probe(origin.addr, &check.path, check.timeout).await;
                    origin.active_result(ok, &check);
                }
            });
            futures_join_all(checks).await;
        }
        tokio::time::sleep(interval).await;
    }
}

async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        let _ = handle.await;
    }
}

/// One probe: healthy when the origin answers a 2xx or 3xx within `timeout`.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: edgebox-health\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 32];
        let mut read = 0;
        while read < 12 {
            let n = stream.read(&mut head[read..]).await?;
            if n == 0 {
                break;
            }
            read += n;
        }
        Ok::<_, std::io::Error>(status_ok(&head[..read]))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
}

fn status_ok(head: &[u8]) -> bool {
    // "HTTP/1.1 200 ..."
    head.len() >= 12 && head.starts_with(b"HTTP/1.") && matches!(head[9], b'2' | b'3')
}
