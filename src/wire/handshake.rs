//! Who is on the other end of a connection: a member that knows the cluster secret, or a client.
//!
//! Every connection opens with a [`Hello`]. A client says so and is welcomed. A member proves
//! knowledge of the cluster secret by mutual challenge-response, without sending the secret:
//!
//! ```text
//! connector                                   acceptor
//!   Hello::Member { from, to, nonce_c }   ->
//!                                       <-    Challenge { nonce_s, mac("acceptor", ...) }
//!   Proof { mac("connector", ...) }     ->
//! ```
//!
//! Each MAC is HMAC-SHA256, keyed by a key derived from the secret with HKDF, over the role,
//! both ids and both nonces, so neither side can replay the other's answer and a process
//! without the secret can neither join, vote, nor pose as a node.
//!
//! Implementation caveats: frames after the handshake are not individually authenticated or
//! encrypted (the cluster runs on a trusted network; TLS would be the next step).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::NodeId;
use crate::wire::framing::{FrameReader, FrameWriter};
use crate::wire::PROTOCOL_VERSION;
use crate::{Error, Result};

/// The first frame on every connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Hello {
    /// A node opening its link to a member.
    Member {
        /// Protocol version of the connector.
        version: u16,
        /// The connecting node.
        from: NodeId,
        /// The node it means to reach.
        to: NodeId,
        /// The connector's challenge.
        nonce: [u8; 16],
    },
    /// A client.
    Client {
        /// Protocol version of the client.
        version: u16,
    },
    /// A node opening its data link to a member: request payloads and replies, apart from the
    /// node protocol's control messages (same proof, other MAC roles).
    Data {
        /// Protocol version of the connector.
        version: u16,
        /// The connecting node.
        from: NodeId,
        /// The node it means to reach.
        to: NodeId,
        /// The connector's challenge.
        nonce: [u8; 16],
    },
    /// A node opening a consensus-store link to a member (same proof, other MAC roles).
    Store {
        /// Protocol version of the connector.
        version: u16,
        /// The connecting node.
        from: NodeId,
        /// The node it means to reach.
        to: NodeId,
        /// The connector's challenge.
        nonce: [u8; 16],
    },
}

impl Hello {
    /// The protocol version the connector speaks.
    fn version(&self) -> u16 {
        match self {
            Hello::Client { version }
            | Hello::Member { version, .. }
            | Hello::Data { version, .. }
            | Hello::Store { version, .. } => *version,
        }
    }

    /// A node's link: its kind, the connecting node, the node it means to reach, its challenge.
    fn link(&self) -> Option<(LinkKind, NodeId, NodeId, [u8; 16])> {
        let (kind, from, to, nonce) = match self {
            Hello::Client { .. } => return None,
            Hello::Member {
                from, to, nonce, ..
            } => (LinkKind::Node, from, to, nonce),
            Hello::Data {
                from, to, nonce, ..
            } => (LinkKind::Data, from, to, nonce),
            Hello::Store {
                from, to, nonce, ..
            } => (LinkKind::Store, from, to, nonce),
        };
        Some((kind, *from, *to, *nonce))
    }
}

/// Opens a client connection to a node's protocol port and says hello as a client; returns
/// the node's answer (a welcome, or a refusal such as a full port) and the connection.
pub async fn client_hello(
    addr: std::net::SocketAddr,
) -> Result<(HelloReply, FrameReader, FrameWriter)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = super::framing::split(stream);
    let version = PROTOCOL_VERSION;
    writer.write(&Hello::Client { version }).await?;
    let reply = reader.expect().await?;
    Ok((reply, reader, writer))
}

/// The acceptor's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HelloReply {
    /// To a member: the acceptor's proof and its own challenge.
    Challenge {
        /// The acceptor's challenge.
        nonce: [u8; 16],
        /// The acceptor's proof of the secret.
        mac: [u8; 32],
    },
    /// To a client: go ahead.
    Welcome {
        /// The node the client reached.
        node: NodeId,
    },
    /// The connection is refused, with the reason.
    Refused(String),
}

/// The connector's proof of the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proof {
    /// HMAC over the handshake.
    pub mac: [u8; 32],
}

/// What an accepted connection turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// An authenticated member.
    Member(NodeId),
    /// A client.
    Client,
    /// An authenticated member's consensus-store link.
    Store(NodeId),
    /// An authenticated member's data link (payloads and replies only).
    Data(NodeId),
}

/// Which kind of link a node opens to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// The phase-1 node protocol (envelopes).
    Node,
    /// The consensus store's RPCs.
    Store,
    /// Request payloads and replies (issue 31: no image waits ahead of a heartbeat).
    Data,
}

impl LinkKind {
    fn roles(self) -> (&'static [u8], &'static [u8]) {
        match self {
            LinkKind::Node => (b"acceptor", b"connector"),
            LinkKind::Store => (b"store acceptor", b"store connector"),
            LinkKind::Data => (b"data acceptor", b"data connector"),
        }
    }
}

/// The member-authentication key, derived from the cluster secret.
#[derive(Clone)]
pub struct MemberAuth {
    key: [u8; 32],
}

fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

impl MemberAuth {
    /// Derives the key from the cluster secret.
    pub fn new(secret: &str) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"imgcloud"), secret.as_bytes());
        let mut key = [0u8; 32];
        hk.expand(b"imgcloud member authentication v1", &mut key)
            .expect("32 bytes is a valid HKDF length");
        MemberAuth { key }
    }

    /// A digest of the key that identifies the cluster without revealing its secret.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"imgcloud cluster fingerprint");
        mac.finalize().into_bytes().into()
    }

    fn mac(
        &self,
        role: &[u8],
        from: NodeId,
        to: NodeId,
        nonce_c: &[u8; 16],
        nonce_s: &[u8; 16],
    ) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(role);
        mac.update(&from.to_be_bytes());
        mac.update(&to.to_be_bytes());
        mac.update(nonce_c);
        mac.update(nonce_s);
        mac
    }

    /// The connector's side: opens a `kind` link, proves the secret to `to` and checks that
    /// `to` knows it too.
    pub async fn connect(
        &self,
        kind: LinkKind,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
        me: NodeId,
        to: NodeId,
    ) -> Result<()> {
        let nonce_c = nonce();
        let (acceptor, connector) = kind.roles();
        let hello = match kind {
            LinkKind::Node => Hello::Member {
                version: PROTOCOL_VERSION,
                from: me,
                to,
                nonce: nonce_c,
            },
            LinkKind::Store => Hello::Store {
                version: PROTOCOL_VERSION,
                from: me,
                to,
                nonce: nonce_c,
            },
            LinkKind::Data => Hello::Data {
                version: PROTOCOL_VERSION,
                from: me,
                to,
                nonce: nonce_c,
            },
        };
        writer.write(&hello).await?;
        match reader.expect::<HelloReply>().await? {
            HelloReply::Challenge {
                nonce: nonce_s,
                mac,
            } => {
                self.mac(acceptor, me, to, &nonce_c, &nonce_s)
                    .verify_slice(&mac)
                    .map_err(|_| {
                        Error::Protocol(format!("node {to} failed to prove the cluster secret"))
                    })?;
                let proof = self
                    .mac(connector, me, to, &nonce_c, &nonce_s)
                    .finalize()
                    .into_bytes();
                writer.write(&Proof { mac: proof.into() }).await
            }
            HelloReply::Refused(reason) => {
                Err(Error::Protocol(format!("node {to} refused us: {reason}")))
            }
            HelloReply::Welcome { .. } => Err(Error::Protocol(format!(
                "node {to} answered as to a client"
            ))),
        }
    }

    /// The acceptor's side, given the connection's first frame. A client is refused, with
    /// the reason, without `room_for_client`.
    pub async fn accept(
        &self,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
        me: NodeId,
        members: &[NodeId],
        room_for_client: bool,
    ) -> Result<Accepted> {
        let refuse = |reason: String| async move { Err::<Accepted, _>(Error::Protocol(reason)) };
        let hello = reader.expect::<Hello>().await?;
        match (&hello, hello.link()) {
            (Hello::Client { version }, _) if *version == PROTOCOL_VERSION && room_for_client => {
                writer.write(&HelloReply::Welcome { node: me }).await?;
                Ok(Accepted::Client)
            }
            (Hello::Client { version }, _) if *version == PROTOCOL_VERSION => {
                let reason = format!(
                    "node {me} serves as many client connections as it may; the other nodes \
                     may have room, or retry in a second"
                );
                writer.write(&HelloReply::Refused(reason.clone())).await?;
                refuse(reason).await
            }
            (_, Some((kind, from, to, nonce))) if hello.version() == PROTOCOL_VERSION => {
                self.prove(kind, reader, writer, me, members, from, to, nonce)
                    .await
            }
            _ => {
                let version = hello.version();
                let reason = format!("protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})");
                writer.write(&HelloReply::Refused(reason.clone())).await?;
                refuse(reason).await
            }
        }
    }

    /// The acceptor's challenge and check of the connector's proof.
    #[allow(clippy::too_many_arguments)]
    async fn prove(
        &self,
        kind: LinkKind,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
        me: NodeId,
        members: &[NodeId],
        from: NodeId,
        to: NodeId,
        nonce_c: [u8; 16],
    ) -> Result<Accepted> {
        if to != me || from == me || !members.contains(&from) {
            let reason =
                format!("a member claiming to be node {from} wants node {to}; this is node {me}");
            writer.write(&HelloReply::Refused(reason.clone())).await?;
            return Err(Error::Protocol(reason));
        }
        let (acceptor, connector) = kind.roles();
        let nonce_s = nonce();
        let mac = self
            .mac(acceptor, from, me, &nonce_c, &nonce_s)
            .finalize()
            .into_bytes();
        writer
            .write(&HelloReply::Challenge {
                nonce: nonce_s,
                mac: mac.into(),
            })
            .await?;
        let proof: Proof = reader.expect().await?;
        self.mac(connector, from, me, &nonce_c, &nonce_s)
            .verify_slice(&proof.mac)
            .map_err(|_| {
                Error::Protocol(format!(
                    "a process claiming to be node {from} does not know the cluster secret"
                ))
            })?;
        Ok(match kind {
            LinkKind::Node => Accepted::Member(from),
            LinkKind::Store => Accepted::Store(from),
            LinkKind::Data => Accepted::Data(from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::split;
    use tokio::net::{TcpListener, TcpStream};

    async fn handshake(
        acceptor_secret: &str,
        connector_secret: &str,
    ) -> (Result<Accepted>, Result<()>) {
        handshake_with_room(acceptor_secret, connector_secret, true).await
    }

    async fn handshake_with_room(
        acceptor_secret: &str,
        connector_secret: &str,
        room_for_client: bool,
    ) -> (Result<Accepted>, Result<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, c) = (
            MemberAuth::new(acceptor_secret),
            MemberAuth::new(connector_secret),
        );
        let connector = tokio::spawn(async move {
            let (mut r, mut w) = split(TcpStream::connect(addr).await.unwrap());
            c.connect(LinkKind::Node, &mut r, &mut w, 2, 1).await
        });
        let (stream, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = split(stream);
        let accepted = a
            .accept(&mut r, &mut w, 1, &[1, 2, 3], room_for_client)
            .await;
        drop((r, w));
        (accepted, connector.await.unwrap())
    }

    /// Issue 31: without room for another client, a client is refused with the reason; a
    /// member's link is not (clients can never keep a member out).
    #[tokio::test]
    async fn without_room_a_client_is_refused_and_a_member_is_not() {
        let (accepted, connected) = handshake_with_room("s", "s", false).await;
        assert!(matches!(accepted, Ok(Accepted::Member(2))), "{accepted:?}");
        assert!(connected.is_ok());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let (mut r, mut w) = split(TcpStream::connect(addr).await.unwrap());
            let hello = Hello::Client {
                version: PROTOCOL_VERSION,
            };
            w.write(&hello).await.unwrap();
            r.expect::<HelloReply>().await.unwrap()
        });
        let (stream, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = split(stream);
        let accepted = MemberAuth::new("s")
            .accept(&mut r, &mut w, 1, &[1, 2, 3], false)
            .await;
        assert!(accepted.is_err());
        let reply = client.await.unwrap();
        assert!(
            matches!(&reply, HelloReply::Refused(why) if why.contains("client connections")),
            "{reply:?}"
        );
    }

    #[tokio::test]
    async fn members_with_the_secret_are_accepted() {
        let (accepted, connected) = handshake("s", "s").await;
        assert_eq!(accepted.unwrap(), Accepted::Member(2));
        connected.unwrap();
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_on_both_sides() {
        let (accepted, connected) = handshake("right", "wrong").await;
        assert!(connected
            .unwrap_err()
            .to_string()
            .contains("failed to prove"));
        assert!(accepted.is_err());
    }
}
