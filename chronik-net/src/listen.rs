//! What one client may hold of a node: connections per client address
//! (`client_connections_max`) and calls in flight per client address
//! (`client_in_flight_max`), so one client cannot starve the others; and
//! the accept loop that counts connections and runs TLS handshakes side by
//! side (a slow or hostile client holds up nobody else).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// A count per client address, bounded.
pub(crate) struct Limiter {
    max: usize,
    taken: Mutex<HashMap<IpAddr, usize>>,
}

/// One unit of a [`Limiter`], given back when dropped.
pub(crate) struct Slot {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Limiter {
    pub fn new(max: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            max,
            taken: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `ip`, or `None` when it holds `max` already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut taken = self.taken.lock();
        let n = taken.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            limiter: self.clone(),
            ip,
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.limiter.taken.lock();
        if let Some(n) = taken.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                taken.remove(&self.ip);
            }
        }
    }
}

#[cfg(not(madsim))]
pub(crate) use imp::{accept, Counted, MetricsListener, Port};

#[cfg(not(madsim))]
mod imp {
    use super::{Limiter, Slot};
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};

    /// Which port a connection came in on (logs, refusal metric labels).
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Port {
        Peer,
        Client,
        Metrics,
    }

    impl Port {
        pub fn label(self) -> &'static str {
            match self {
                Port::Peer => "peer",
                Port::Client => "client",
                Port::Metrics => "metrics",
            }
        }
    }

    /// Accepted connections waiting for the server to take them.
    const ACCEPTED_BACKLOG: usize = 64;

    /// A connection holding its slot of the connection limit until it
    /// closes. Everything else is the inner stream's, connection info
    /// included (so peer certificates and addresses reach the handlers).
    pub(crate) struct Counted<S> {
        inner: S,
        _slot: Option<Slot>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
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
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Counted<S> {
        type ConnectInfo = S::ConnectInfo;

        fn connect_info(&self) -> Self::ConnectInfo {
            self.inner.connect_info()
        }
    }

    /// Accepts connections on `listener`: over `limiter`'s count per client
    /// address one is closed at once; each other goes through `handshake`
    /// (TLS, or nothing) in a task of its own. Refusals are logged and
    /// counted by reason. Ends when the receiver is dropped.
    pub(crate) fn accept<S, F, Fut>(
        listener: TcpListener,
        port: Port,
        limiter: Option<Arc<Limiter>>,
        metrics: crate::metrics::Metrics,
        handshake: F,
    ) -> tokio::sync::mpsc::Receiver<(Counted<S>, SocketAddr)>
    where
        S: Send + 'static,
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<S, (&'static str, String)>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
        let handshake = Arc::new(handshake);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = tokio::select! {
                    _ = tx.closed() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of file descriptors and the like: wait
                            // rather than spin.
                            tracing::warn!(port = port.label(), "accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let refuse = |reason: &'static str| {
                    metrics
                        .security_refusals
                        .with_label_values(&[port.label(), reason])
                        .inc();
                };
                let slot = match &limiter {
                    None => None,
                    Some(l) => match l.take(addr.ip()) {
                        Some(s) => Some(s),
                        None => {
                            tracing::info!(
                                %addr,
                                port = port.label(),
                                "connection closed: this client address holds {} already (client_connections_max)",
                                l.max()
                            );
                            refuse("too_many_connections");
                            continue;
                        }
                    },
                };
                // Small gRPC frames must not wait for Nagle's algorithm.
                let _ = tcp.set_nodelay(true);
                let (tx, metrics, handshake) = (tx.clone(), metrics.clone(), handshake.clone());
                tokio::spawn(async move {
                    match handshake(tcp).await {
                        Ok(inner) => {
                            let _ = tx.send((Counted { inner, _slot: slot }, addr)).await;
                        }
                        Err((reason, message)) => {
                            tracing::info!(%addr, port = port.label(), reason, "{message}");
                            metrics
                                .security_refusals
                                .with_label_values(&[port.label(), reason])
                                .inc();
                        }
                    }
                });
            }
        });
        rx
    }

    /// Accepted connections as axum's listener (`/metrics`).
    pub(crate) struct MetricsListener<S> {
        pub accepted: tokio::sync::mpsc::Receiver<(Counted<S>, SocketAddr)>,
        pub local: SocketAddr,
    }

    impl<S> axum::serve::Listener for MetricsListener<S>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        type Io = Counted<S>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.accepted.recv().await {
                Some(c) => c,
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            Ok(self.local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_address_gets_max_slots_and_more_once_one_is_given_back() {
        let l = Limiter::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let s1 = l.take(a).expect("first");
        let _s2 = l.take(a).expect("second");
        assert!(l.take(a).is_none(), "a third from the same address");
        let _other = l.take(b).expect("another address is not held up");
        drop(s1);
        assert!(l.take(a).is_some(), "a slot given back is free again");
    }
}
