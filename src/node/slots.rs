//! Bounded connections (issue 31): a node holds at most so many of each kind, whatever
//! clients open. mini-redis's `MAX_CONNECTIONS` is the model: a slot is taken before a
//! connection is accepted and given back when it closes, so a flood of connections waits in
//! the kernel's backlog instead of in the node's memory.
//!
//! - HTTP: [`MAX_HTTP_CONNECTIONS`]. The API speaks HTTP/1.1 only, one request at a time per
//!   connection, so this bounds the requests in progress too.
//! - The protocol port: [`MAX_HANDSHAKES`] connections may be in their handshake at once
//!   (each for at most the handshake timeout, with frames of at most 4 KiB), and
//!   [`MAX_CLIENT_CONNECTIONS`] clients may be connected; a client beyond that is refused in
//!   the handshake, with the reason. Links from other nodes take no client slot, so clients
//!   can never keep a member out.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// HTTP connections a node serves at once. Generous: a user's peer keeps its idle
/// keep-alive connections open (reqwest's pool, 90 s), and each holds a slot; bodies are
/// bounded by the payload budget, not by this.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
/// Connections to the protocol port in their handshake at once (each holds at most a
/// handshake frame, 4 KiB, for at most the handshake timeout, 2 s).
pub const MAX_HANDSHAKES: usize = 1024;
/// Client connections a node serves at once (a multicast client holds one per node).
pub const MAX_CLIENT_CONNECTIONS: usize = 1024;

/// A number of slots; a [`Slot`] is given back when dropped.
#[derive(Clone, Debug)]
pub struct Slots(Arc<Semaphore>);

/// One taken slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slots {
    /// `n` slots.
    pub fn new(n: usize) -> Slots {
        Slots(Arc::new(Semaphore::new(n)))
    }

    /// A slot, waiting for one to be free.
    pub async fn take(&self) -> Slot {
        // The semaphore is never closed.
        let permit = Arc::clone(&self.0).acquire_owned().await;
        Slot {
            _permit: permit.expect("slots are never closed"),
        }
    }

    /// A slot if one is free now.
    pub fn try_take(&self) -> Option<Slot> {
        Arc::clone(&self.0)
            .try_acquire_owned()
            .ok()
            .map(|permit| Slot { _permit: permit })
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.0.available_permits()
    }
}

/// A listener that accepts a connection only when it has a slot for it; the connection holds
/// its slot until it closes. For `axum::serve`.
pub struct Bounded {
    listener: TcpListener,
    slots: Slots,
}

impl Bounded {
    /// Accepts from `listener` at most `n` connections at a time.
    pub fn new(listener: TcpListener, n: usize) -> Bounded {
        Bounded {
            listener,
            slots: Slots::new(n),
        }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Held<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let slot = self.slots.take().await;
        loop {
            match self.listener.accept().await {
                Ok((io, addr)) => return (Held { io, _slot: slot }, addr),
                // Out of file descriptors and the like: wait instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection with the slot it holds.
pub struct Held<T> {
    io: T,
    _slot: Slot,
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use std::time::Duration;

    #[tokio::test]
    async fn a_bounded_listener_accepts_the_next_connection_only_when_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut bounded = Bounded::new(listener, 1);
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let (first, _) = bounded.accept().await;
        let second = tokio::time::timeout(Duration::from_millis(200), bounded.accept()).await;
        assert!(second.is_err(), "no slot: the second waits in the backlog");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), bounded.accept()).await;
        assert!(second.is_ok(), "the first closed: the second is accepted");
    }

    #[test]
    fn slots_are_given_back_when_dropped() {
        let slots = Slots::new(2);
        let a = slots.try_take().expect("one");
        let _b = slots.try_take().expect("two");
        assert!(slots.try_take().is_none());
        drop(a);
        assert_eq!(slots.free(), 1);
        assert!(slots.try_take().is_some());
    }
}
