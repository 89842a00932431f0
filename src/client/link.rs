//! The client's connection to one node: connect, hand over the requests still waiting, write
//! requests, read replies, reconnect with back-off.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use super::book::{deliver, Book, LinkHandle};
use crate::config::NodeAddr;
use crate::wire::framing::MAX_DATA_FRAME_BYTES;
use crate::wire::handshake::{client_hello, HelloReply};
use crate::wire::request::EncryptReply;
use crate::Error;

use super::MAX_BACKOFF;

/// Owns the connection to one node: connect, write requests, read replies, reconnect.
///
/// When a connection closes, the requests still waiting go to one other connected node again,
/// marked [`EncryptRequest::resent_after`] this node: it may have won one and replied over the
/// connection that is gone.
pub(super) async fn link(
    node: NodeAddr,
    mut requests: mpsc::Receiver<Bytes>,
    handles: Arc<Vec<LinkHandle>>,
    book: Arc<Mutex<Book>>,
    connected: Arc<watch::Sender<usize>>,
    nodes: usize,
) {
    let up = handles
        .iter()
        .find(|h| h.id == node.id)
        .map(|h| Arc::clone(&h.up))
        .unwrap_or_default();
    let mut backoff = Duration::from_millis(50);
    loop {
        // Requests queued while this node was unreachable went to the others.
        while requests.try_recv().is_ok() {}
        let attempt = async {
            let (reply, reader, writer) = client_hello(node.addr).await?;
            match reply {
                HelloReply::Welcome { .. } => Ok((reader, writer)),
                HelloReply::Refused(reason) => Err(Error::Protocol(format!(
                    "node {} refused: {reason}",
                    node.id
                ))),
                HelloReply::Challenge { .. } => Err(Error::Protocol(format!(
                    "node {} asked for a member handshake",
                    node.id
                ))),
            }
        };
        if let Ok(Ok((mut reader, mut writer))) = timeout(Duration::from_secs(2), attempt).await {
            backoff = Duration::from_millis(50);
            // A reply may be four times its request: as large as a data link's frames.
            reader.allow_frames(MAX_DATA_FRAME_BYTES);
            // Requests still waiting may have reached no node that is alive now (every holder
            // restarted): give them to this one too. Nodes serve an id once, whatever its copies.
            let is_up = |id| {
                handles
                    .iter()
                    .any(|h| h.id == id && h.up.load(Ordering::Relaxed))
            };
            let waiting = book
                .lock()
                .map(|mut b| b.for_new_connection(node.id, is_up))
                .unwrap_or_default();
            let mut resent = Ok(());
            for bytes in waiting {
                resent = resent.and(writer.feed_bytes(bytes).await);
            }
            if resent.and(writer.flush().await).is_err() {
                tokio::time::sleep(backoff).await;
                continue;
            }
            connected.send_modify(|n| *n += 1);
            up.store(true, Ordering::Relaxed);
            let started = Instant::now();
            let book_r = Arc::clone(&book);
            let mut read = tokio::spawn(async move {
                while let Ok(Some(reply)) = reader.read::<EncryptReply>().await {
                    deliver(&book_r, reply, nodes);
                }
            });
            loop {
                tokio::select! {
                    _ = &mut read => break,
                    next = requests.recv() => match next {
                        None => {
                            read.abort();
                            up.store(false, Ordering::Relaxed);
                            connected.send_modify(|n| *n -= 1);
                            return;
                        }
                        Some(bytes) => {
                            let mut ok = writer.feed_bytes(bytes).await.is_ok();
                            while ok {
                                match requests.try_recv() {
                                    Ok(more) => ok = writer.feed_bytes(more).await.is_ok(),
                                    Err(_) => break,
                                }
                            }
                            if !ok || writer.flush().await.is_err() {
                                read.abort();
                                break;
                            }
                        }
                    }
                }
            }
            up.store(false, Ordering::Relaxed);
            connected.send_modify(|n| *n -= 1);
            if let Ok(mut book) = book.lock() {
                let next = handles
                    .iter()
                    .find(|h| h.id != node.id && h.up.load(Ordering::Relaxed));
                book.connection_closed(node.id, next, |id| handles.iter().find(|h| h.id == id));
            }
            if started.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(50);
            }
        }
        if requests.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
