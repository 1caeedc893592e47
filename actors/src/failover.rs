//! An API client for node agents that fails over between several servers. The channel connects
//! through a [`FailoverConnector`]: each (re)connection tries the server that worked last, then
//! the next ones in order, so when a server dies, the broken connection is re-established to a
//! surviving one on the next call. Calls in flight on the dead connection fail with
//! `Unavailable`; the agent's actors retry them like any other transient failure.
//!
//! Owns only connection setup; it holds no API logic.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Endpoint, Uri};

use crate::error::{Error, Result};

/// How long one connection attempt to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings that notice a silently dead server (power loss, partition) on an idle channel.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses `http://host:port[,http://host:port...]` into `host:port` authorities.
pub fn parse_server_urls(spec: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for url in spec.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::Client(format!("server URL {url:?}: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(Error::Client(format!(
                "server URL {url:?}: only http:// URLs are supported"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::Client(format!("server URL {url:?}: no host")))?;
        let port = authority.port_u16().unwrap_or(80);
        out.push(format!("{}:{port}", authority.host()));
    }
    if out.is_empty() {
        return Err(Error::Client("no server URL given".into()));
    }
    Ok(out)
}

/// Connects to the first reachable of several servers, starting with the one that worked last.
#[derive(Debug, Clone)]
pub struct FailoverConnector {
    servers: Arc<[String]>,
    current: Arc<AtomicUsize>,
}

impl FailoverConnector {
    /// A connector over `servers` (`host:port` each, at least one).
    pub fn new(servers: Vec<String>) -> Self {
        FailoverConnector {
            servers: servers.into(),
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The server connected to last (or to be tried first).
    pub fn current(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.servers.len().max(1);
        self.servers.get(i).map_or("", String::as_str)
    }

    async fn connect(self) -> std::io::Result<TokioIo<TcpStream>> {
        let n = self.servers.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no server URL given");
        for step in 0..n {
            let i = (start + step) % n;
            let addr = &self.servers[i];
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str()))
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {CONNECT_TIMEOUT:?}"),
                    ))
                });
            match attempt {
                Ok(stream) => {
                    // Latency of small RPCs matters more than throughput here.
                    let _ = stream.set_nodelay(true);
                    if step > 0 || self.current.load(Ordering::Relaxed) != i {
                        tracing::info!(server = %addr, "API connection failed over");
                    }
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(TokioIo::new(stream));
                }
                Err(e) => {
                    tracing::warn!(server = %addr, error = %e, "API server unreachable; trying the next one");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

impl tower_service::Service<Uri> for FailoverConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

/// An API client over `servers` (`host:port` each) that reconnects to the next reachable one
/// when its server goes away. Connects lazily.
pub fn client(servers: Vec<String>) -> Result<api::client::Client> {
    let first = servers
        .first()
        .ok_or_else(|| Error::Client("no server URL given".into()))?;
    let endpoint = Endpoint::from_shared(format!("http://{first}"))
        .map_err(|e| Error::Client(format!("server URL {first:?}: {e}")))?
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = endpoint.connect_with_connector_lazy(FailoverConnector::new(servers));
    Ok(api::client::Client::from_channel(channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_become_authorities_and_bad_ones_are_named() {
        assert_eq!(
            parse_server_urls("http://127.0.0.1:6443, http://127.0.0.2:6443,").unwrap(),
            vec!["127.0.0.1:6443", "127.0.0.2:6443"]
        );
        assert_eq!(parse_server_urls("http://a").unwrap(), vec!["a:80"]);
        let err = parse_server_urls("https://a:1").unwrap_err().to_string();
        assert!(err.contains("https://a:1"), "{err}");
        assert!(parse_server_urls(" , ").is_err());
    }

    #[tokio::test]
    async fn a_connection_goes_to_the_next_server_when_the_current_one_refuses() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap().to_string();
        // A port that was just free: nothing listens there.
        let dead_addr = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let c = FailoverConnector::new(vec![dead_addr.clone(), live_addr.clone()]);
        assert_eq!(c.current(), dead_addr);
        let accept = tokio::spawn(async move { live.accept().await.map(|_| ()) });
        c.clone().connect().await.unwrap();
        accept.await.unwrap().unwrap();
        assert_eq!(c.current(), live_addr, "sticks to the server that answered");
    }

    #[tokio::test]
    async fn all_servers_down_is_an_error() {
        let dead = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        assert!(FailoverConnector::new(vec![dead]).connect().await.is_err());
    }
}
