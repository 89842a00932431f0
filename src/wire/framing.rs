//! Framing: whole values in, whole values out, over a TCP stream.
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes of postcard-encoded
//! value (tokio-util's `LengthDelimitedCodec`). This is the only place that sees bytes on the
//! wire: the rest of the crate reads and writes typed values. A frame longer than the limit, a
//! value that does not decode, or a member speaking another protocol version is an
//! [`Error::Protocol`], after which the caller closes the connection.

use bytes::{Buf, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::{Error, Result};

/// The largest frame accepted: an image request plus its cover, with room to spare.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// The largest frame of a handshake (a hello, a challenge, a proof: a few dozen bytes), so a
/// connection nobody has authenticated yet holds no more than this.
pub const MAX_HELLO_BYTES: usize = 4096;
/// The largest frame on a data link between two authenticated nodes, and of a reply to a
/// client: the reply to the largest upload (an encrypted PNG is about four times its secret
/// image: 32 MiB make ~130 MB).
pub const MAX_DATA_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// The largest frame after which a connection keeps its buffer. A huge frame grows a
/// connection's buffer to its size, and kept, that is up to 256 MiB per link for as long as
/// the link lives (a node that served one 27 MB upload stayed 110 MB above its idle size), so
/// after a bigger frame the buffer is given back.
const KEPT_BUFFER_BYTES: usize = 1 << 20;

/// A fresh buffer with what `buffer` holds: its allocation, grown by a huge frame, goes back.
fn release(buffer: &mut BytesMut) {
    *buffer = BytesMut::from(&buffer[..]);
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// Encodes a value as one frame's bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes> {
    postcard::to_stdvec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Protocol(format!("cannot encode a message: {e}")))
}

/// Decodes one frame's bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::Protocol(format!("undecodable frame of {} bytes: {e}", bytes.len())))
}

/// The reading half of a framed connection.
pub struct FrameReader {
    inner: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
}

/// The writing half of a framed connection.
pub struct FrameWriter {
    inner: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    /// Whether a frame past [`KEPT_BUFFER_BYTES`] went into the buffer since the last flush.
    grown: bool,
}

/// Splits a stream into framed halves.
pub fn split(stream: TcpStream) -> (FrameReader, FrameWriter) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    (
        FrameReader {
            inner: FramedRead::new(read, codec()),
        },
        FrameWriter {
            inner: FramedWrite::new(write, codec()),
            grown: false,
        },
    )
}

impl FrameReader {
    /// Accepts frames of up to `max` bytes from now on (a data link's, see
    /// [`MAX_DATA_FRAME_BYTES`]).
    pub fn allow_frames(&mut self, max: usize) {
        self.inner.decoder_mut().set_max_frame_length(max);
    }

    /// The next frame's bytes; `None` when the member closed the connection cleanly.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(bytes)) => {
                if bytes.len() > KEPT_BUFFER_BYTES {
                    release(self.inner.read_buffer_mut());
                }
                Ok(Some(bytes.freeze()))
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(Error::Protocol(format!("bad frame: {e}")))
            }
            Some(Err(e)) => Err(Error::Io(e)),
        }
    }

    /// The next value; `None` on a clean close.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.next_frame().await? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    /// The next value, or an error if the connection closed.
    pub async fn expect<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.read()
            .await?
            .ok_or_else(|| Error::Protocol("connection closed".into()))
    }
}

impl FrameReader {
    /// Reads each frame from now on only if `admit` gives something for its length (a share
    /// of a byte budget) when its header arrives: an admitted frame is read whole and comes
    /// with it; a refused one is read and dropped as it arrives, but for its first
    /// [`REFUSED_HEAD_BYTES`]. So no more than the admitted bytes are ever held.
    pub fn admitting<A, F>(self, admit: F) -> AdmittingReader<A, F>
    where
        F: FnMut(usize) -> Option<A>,
    {
        AdmittingReader {
            inner: self.inner.map_decoder(|codec| Admit {
                admit,
                max: codec.max_frame_length(),
                next: Next::Head,
            }),
        }
    }
}

/// The first bytes kept of a refused frame: enough for what its refusal must name (a
/// request's id leads its encoding).
pub const REFUSED_HEAD_BYTES: usize = 160;

/// A frame read under a budget ([`FrameReader::admitting`]).
#[derive(Debug)]
pub enum Admitted<A> {
    /// The whole frame, with what admitted it.
    Frame(Bytes, A),
    /// A frame refused when its header came: its first bytes, and its length.
    Refused {
        /// Its first [`REFUSED_HEAD_BYTES`] bytes (fewer if it is shorter).
        head: Bytes,
        /// Its length.
        len: usize,
    },
}

/// The reading half of a connection whose frames must be admitted before they are read.
pub struct AdmittingReader<A, F> {
    inner: FramedRead<OwnedReadHalf, Admit<A, F>>,
}

impl<A, F: FnMut(usize) -> Option<A>> AdmittingReader<A, F> {
    /// The next frame; `None` when the member closed the connection cleanly.
    pub async fn next(&mut self) -> Result<Option<Admitted<A>>> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(frame)) => {
                if matches!(&frame, Admitted::Frame(bytes, _) if bytes.len() > KEPT_BUFFER_BYTES) {
                    release(self.inner.read_buffer_mut());
                }
                Ok(Some(frame))
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(Error::Protocol(format!("bad frame: {e}")))
            }
            Some(Err(e)) => Err(Error::Io(e)),
        }
    }
}

/// The decoder of [`AdmittingReader`]: 4-byte big-endian lengths, as [`LengthDelimitedCodec`].
struct Admit<A, F> {
    admit: F,
    max: usize,
    next: Next<A>,
}

enum Next<A> {
    Head,
    Body {
        len: usize,
        share: A,
    },
    Skip {
        len: usize,
        left: usize,
        head: BytesMut,
    },
}

impl<A, F: FnMut(usize) -> Option<A>> Decoder for Admit<A, F> {
    type Item = Admitted<A>;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> std::io::Result<Option<Admitted<A>>> {
        loop {
            match std::mem::replace(&mut self.next, Next::Head) {
                Next::Head => {
                    let Some(header) = src.get(..4) else {
                        return Ok(None);
                    };
                    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                    let len = len as usize;
                    if len > self.max {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("a frame of {len} bytes (limit {} bytes)", self.max),
                        ));
                    }
                    src.advance(4);
                    self.next = match (self.admit)(len) {
                        Some(share) => {
                            src.reserve(len.saturating_sub(src.len()));
                            Next::Body { len, share }
                        }
                        None => Next::Skip {
                            len,
                            left: len,
                            head: BytesMut::new(),
                        },
                    };
                }
                Next::Body { len, share } => {
                    if src.len() < len {
                        self.next = Next::Body { len, share };
                        return Ok(None);
                    }
                    return Ok(Some(Admitted::Frame(src.split_to(len).freeze(), share)));
                }
                Next::Skip {
                    len,
                    mut left,
                    mut head,
                } => {
                    let arrived = left.min(src.len());
                    let keep = arrived.min(REFUSED_HEAD_BYTES - head.len());
                    head.extend_from_slice(&src[..keep]);
                    src.advance(arrived);
                    left -= arrived;
                    if left > 0 {
                        self.next = Next::Skip { len, left, head };
                        return Ok(None);
                    }
                    let head = head.freeze();
                    return Ok(Some(Admitted::Refused { head, len }));
                }
            }
        }
    }
}

impl FrameWriter {
    /// Writes frames of up to `max` bytes from now on (a data link's).
    pub fn allow_frames(&mut self, max: usize) {
        self.inner.encoder_mut().set_max_frame_length(max);
    }

    /// Writes one value as a frame and flushes it.
    pub async fn write<T: Serialize>(&mut self, value: &T) -> Result<()> {
        self.write_bytes(encode(value)?).await
    }

    /// Writes already-encoded bytes as a frame and flushes it.
    pub async fn write_bytes(&mut self, bytes: Bytes) -> Result<()> {
        self.feed_bytes(bytes).await?;
        self.flush().await
    }

    /// Queues already-encoded bytes as a frame without flushing.
    pub async fn feed_bytes(&mut self, bytes: Bytes) -> Result<()> {
        self.grown |= bytes.len() > KEPT_BUFFER_BYTES;
        self.inner.feed(bytes).await.map_err(Error::Io)
    }

    /// Queues a value without flushing (call [`FrameWriter::flush`] after a batch).
    pub async fn feed<T: Serialize>(&mut self, value: &T) -> Result<()> {
        self.feed_bytes(encode(value)?).await
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) -> Result<()> {
        SinkExt::<Bytes>::flush(&mut self.inner)
            .await
            .map_err(Error::Io)?;
        if std::mem::take(&mut self.grown) {
            release(self.inner.write_buffer_mut());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes())
                .await
                .unwrap();
            s.write_all(&[0u8; 16]).await.unwrap();
        });
        let (stream, _) = listener.accept().await.unwrap();
        let (mut reader, _) = split(stream);
        let err = reader.next_frame().await.unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
        writer.await.unwrap();
    }

    /// Issue 31: a link that carried a huge frame kept a buffer of its size for its life.
    #[tokio::test]
    async fn a_huge_frame_leaves_no_huge_buffer_behind() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = tokio::spawn(async move { split(TcpStream::connect(addr).await.unwrap()) });
        let (stream, _) = listener.accept().await.unwrap();
        let (mut reader, _) = split(stream);
        let (_, mut writer) = connect.await.unwrap();
        let huge = Bytes::from(vec![5u8; 8 * KEPT_BUFFER_BYTES]);
        // A buffer's capacity after `reserve(1)` is what it can reuse of its allocation.
        let sent = tokio::spawn(async move {
            writer.write_bytes(huge).await.unwrap();
            writer.inner.write_buffer_mut().reserve(1);
            writer.inner.write_buffer().capacity()
        });
        let frame = reader.next_frame().await.unwrap().unwrap();
        assert_eq!(frame.len(), 8 * KEPT_BUFFER_BYTES);
        drop(frame);
        reader.inner.read_buffer_mut().reserve(1);
        assert!(reader.inner.read_buffer().capacity() <= KEPT_BUFFER_BYTES);
        assert!(sent.await.unwrap() <= KEPT_BUFFER_BYTES);
    }

    /// Issue 31: a client's frame was read whole (up to 64 MiB per connection) before the
    /// node's budget was asked; now the header asks, and a refused frame is never held.
    #[tokio::test]
    async fn frames_are_admitted_by_their_header_and_refused_ones_never_held() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let big = vec![7u8; 1 << 20];
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            let (_, mut w) = split(TcpStream::connect(addr).await.unwrap());
            for frame in [b"small".to_vec(), sent, b"after".to_vec()] {
                w.write_bytes(Bytes::from(frame)).await.unwrap();
            }
        });
        let (stream, _) = listener.accept().await.unwrap();
        let (reader, _) = split(stream);
        let mut frames = reader.admitting(|len| (len < 1000).then_some(len));
        let mut got = Vec::new();
        while let Some(frame) = frames.next().await.unwrap() {
            got.push(frame);
            assert!(frames.inner.read_buffer().len() <= KEPT_BUFFER_BYTES);
        }
        writer.await.unwrap();
        assert!(matches!(&got[0], Admitted::Frame(b, 5) if &b[..] == b"small"));
        assert!(
            matches!(&got[1], Admitted::Refused { head, len } if *len == big.len() && head[..] == big[..REFUSED_HEAD_BYTES]),
            "{:?}",
            got[1]
        );
        assert!(matches!(&got[2], Admitted::Frame(b, 5) if &b[..] == b"after"));
        assert_eq!(got.len(), 3);
    }
}
