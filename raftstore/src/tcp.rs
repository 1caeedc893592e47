//! Accepted TCP connections for the gRPC servers (peer service, etcd API), with Nagle's
//! algorithm off.
//!
//! tonic sets `TCP_NODELAY` only on connections it accepts itself; the servers here accept
//! through a stream of their own, and with Nagle on, a response written as more than one
//! segment (HTTP/2 headers, then data) waits for the client's delayed ACK: about 40 ms added to
//! many calls. The Capstan API server accepts its connections here too. This module only
//! configures sockets.

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};

/// The connections accepted on `listener`, each with `TCP_NODELAY` set.
pub fn incoming_nodelay(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                // Still usable, only slower.
                tracing::warn!(error = %e, "could not set TCP_NODELAY on an accepted connection");
            }
        })
    })
}
