//! The accept loop of a node's protocol port: a bounded number of handshakes and clients
//! (`node::slots`); then a member's link (node, data or store) gets a reader that hands its
//! envelopes to the node loop, and a client connection gets its requests admitted by the
//! payload budget before they are read.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::cluster::message::{decode_envelope, Message};
use crate::ids::NodeId;
use crate::node::budget::Budget;
use crate::node::slots::{Slots, MAX_CLIENT_CONNECTIONS, MAX_HANDSHAKES};
use crate::store::Store;
use crate::wire::framing::{
    decode, split, Admitted, FrameReader, FrameWriter, MAX_DATA_FRAME_BYTES, MAX_FRAME_BYTES,
    MAX_HELLO_BYTES,
};
use crate::wire::handshake::{Accepted, MemberAuth};
use crate::wire::request::{EncryptReply, EncryptRequest, Refusal, MAX_ID_LEN};
use crate::{Error, Result};

use super::shell::{refusal, Input};
use super::HANDSHAKE_TIMEOUT;

/// Replies queued for one client connection.
const CLIENT_QUEUE: usize = 4096;

pub(super) async fn accept_loop(
    listener: TcpListener,
    me: NodeId,
    members: Arc<Vec<NodeId>>,
    auth: MemberAuth,
    inputs: mpsc::Sender<Input>,
    store: Store,
    budget: Budget,
) -> Result<()> {
    let mut next_conn = 0u64;
    let (handshakes, clients) = (
        Slots::new(MAX_HANDSHAKES),
        Slots::new(MAX_CLIENT_CONNECTIONS),
    );
    loop {
        let handshake = handshakes.take().await;
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(node = me, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next_conn += 1;
        let conn = next_conn;
        let (auth, members, inputs) = (auth.clone(), members.clone(), inputs.clone());
        let (store, budget) = (store.clone(), budget.clone());
        // Taken for whatever comes, kept only by a client.
        let client_slot = clients.try_take();
        tokio::spawn(async move {
            let (mut reader, mut writer) = split(stream);
            let room = client_slot.is_some();
            reader.allow_frames(MAX_HELLO_BYTES);
            let accepted = timeout(
                HANDSHAKE_TIMEOUT,
                auth.accept(&mut reader, &mut writer, me, &members, room),
            )
            .await;
            drop(handshake);
            reader.allow_frames(MAX_FRAME_BYTES);
            // Only a client keeps the slot: a member's link never holds one.
            let client_slot = client_slot.filter(|_| matches!(accepted, Ok(Ok(Accepted::Client))));
            match accepted {
                Ok(Ok(Accepted::Member(member))) => {
                    let _ = inputs.send(Input::LinkOpened(member, conn)).await;
                    let reason = read_member(&mut reader, member, conn, &inputs, false).await;
                    match reason {
                        Ok(()) => debug!(
                            node = me,
                            member, "[Node {me}] connection from node {member} closed"
                        ),
                        Err(e) => {
                            warn!(node = me, member, %remote, "[Node {me}] closed connection from node {member}: {e}")
                        }
                    }
                    let _ = inputs.send(Input::LinkClosed(member, conn)).await;
                }
                Ok(Ok(Accepted::Data(member))) => {
                    reader.allow_frames(MAX_DATA_FRAME_BYTES);
                    if let Err(e) = read_member(&mut reader, member, conn, &inputs, true).await {
                        warn!(node = me, member, %remote, "[Node {me}] closed the data link from node {member}: {e}");
                    }
                }
                Ok(Ok(Accepted::Store(member))) => {
                    if let Err(e) = store.serve(reader, writer, member).await {
                        warn!(node = me, member, %remote, "[Node {me}] closed the store link from node {member}: {e}");
                    }
                }
                Ok(Ok(Accepted::Client)) => {
                    let _client_slot = client_slot;
                    debug!(node = me, %remote, "client connected");
                    if let Err(e) = serve_client(me, reader, writer, inputs, budget).await {
                        debug!(node = me, %remote, "[Node {me}] closed client connection: {e}");
                    }
                }
                Ok(Err(e)) => warn!(node = me, %remote, "[Node {me}] refused a connection: {e}"),
                Err(_) => {
                    warn!(node = me, %remote, "[Node {me}] refused a connection: no handshake within {HANDSHAKE_TIMEOUT:?}")
                }
            }
        });
    }
}

/// Forwards a member's envelopes to the node loop until the connection ends. On its data link
/// (`data`) only payloads and replies may come; its close says nothing of the member's life.
async fn read_member(
    reader: &mut FrameReader,
    member: NodeId,
    conn: u64,
    inputs: &mpsc::Sender<Input>,
    data: bool,
) -> Result<()> {
    while let Some(frame) = reader.next_frame().await? {
        let envelope = decode_envelope(&frame)?;
        if envelope.from != member {
            return Err(Error::Protocol(format!(
                "node {member} sent a message signed as node {}",
                envelope.from
            )));
        }
        let payload = matches!(envelope.message, Message::Forward(_) | Message::Reply(_));
        if data && !payload {
            return Err(Error::Protocol(format!(
                "node {member} sent a {} on its data link",
                envelope.message.kind()
            )));
        }
        if inputs.send(Input::Envelope(envelope, conn)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads a client's requests and writes its replies until either side ends.
/// Each request takes its frame's share of the node's budget when the frame's header comes,
/// before its body is read; without room the body is dropped as it arrives and the request
/// refused at once ("unavailable": the client sends it again after a pause).
async fn serve_client(
    me: NodeId,
    reader: FrameReader,
    mut writer: FrameWriter,
    inputs: mpsc::Sender<Input>,
    budget: Budget,
) -> Result<()> {
    let (reply_tx, mut reply_rx) = mpsc::channel::<EncryptReply>(CLIENT_QUEUE);
    // A reply may be four times its request (an encrypted PNG of a 20 MB image is ~80 MB).
    writer.allow_frames(MAX_DATA_FRAME_BYTES);
    let writer_task = tokio::spawn(async move {
        while let Some(reply) = reply_rx.recv().await {
            writer.feed(&reply).await?;
            while let Ok(more) = reply_rx.try_recv() {
                writer.feed(&more).await?;
            }
            writer.flush().await?;
        }
        Ok::<_, Error>(())
    });
    let mut frames = reader.admitting({
        let budget = budget.clone();
        move |len| budget.try_take(len)
    });
    let result = async {
        while let Some(frame) = frames.next().await? {
            let (request, share) = match frame {
                Admitted::Frame(bytes, share) => (decode::<EncryptRequest>(&bytes)?, share),
                Admitted::Refused { head, len } => {
                    let id = EncryptRequest::id_of(&head)?;
                    check_id(&id)?;
                    let busy = refusal(&id, me, Refusal::Unavailable, &budget.busy(me, len));
                    if reply_tx.send(busy).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            check_id(&request.id)?;
            if inputs
                .send(Input::ClientRequest(request, reply_tx.clone(), share))
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(reply_tx);
    // Replies still owed go out before the connection closes (the writer ends with the last sender).
    let _ = timeout(Duration::from_secs(1), writer_task).await;
    result
}

/// A client's request id must be 1 to [`MAX_ID_LEN`] bytes.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::Protocol(format!(
            "request id must be 1 to {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}
