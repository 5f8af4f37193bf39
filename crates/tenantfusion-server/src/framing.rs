//! A bound on each message a client sends.
//!
//! pgwire reads a message whole before decoding it and accepts up to 1 GiB
//! for a `Query`, `Parse` or `Bind`: a logged-in client that announces such
//! a length makes the server buffer it, and a hundred such connections
//! exhaust the machine. [`Bounded`] sits between the socket and pgwire's
//! framing and follows the message boundaries in the bytes it passes on
//! (the untyped startup packets first, then `type, length, body`); a
//! length over the limit fails the read, which ends the connection before
//! any of that body is buffered.
//!
//! It also holds the answers to the extended protocol's messages until
//! the client's `Sync` (or `Flush`), as PostgreSQL does: pgwire flushes
//! after `BindComplete`, after `CommandComplete` and after `ReadyForQuery`,
//! and each flush is a write and a packet the client wakes up for, three
//! per prepared statement run instead of one. While [`Bounded::cork`] is
//! on, flushes keep what was written (up to [`CORK_BYTES`], then it goes
//! out) until a flush with the cork off.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a corked socket holds at most; past it, bytes are written through.
pub(crate) const CORK_BYTES: usize = 64 << 10;

/// The codes of the startup-phase packets after which another startup-phase
/// packet follows (`SSLRequest`, `GSSENCRequest`); any other startup packet
/// (the startup message, `CancelRequest`) is followed by typed messages.
const NEGOTIATION_CODES: [i32; 2] = [80877103, 80877104];

/// Where in the client's byte stream the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Reading the 8-byte head (length, code) of a startup-phase packet.
    StartupHead { got: usize, head: [u8; 8] },
    /// Reading the 5-byte head (type, length) of a typed message.
    TypedHead { got: usize, head: [u8; 5] },
    /// Passing over a body; `then_typed`: typed messages follow.
    Body { remaining: usize, then_typed: bool },
}

impl Position {
    /// The start of the next message.
    fn head(typed: bool) -> Self {
        if typed {
            Position::TypedHead {
                got: 0,
                head: [0; 5],
            }
        } else {
            Position::StartupHead {
                got: 0,
                head: [0; 8],
            }
        }
    }

    /// A body of `remaining` bytes, or the next head when there is none.
    fn body(remaining: usize, then_typed: bool) -> Self {
        if remaining == 0 {
            Position::head(then_typed)
        } else {
            Position::Body {
                remaining,
                then_typed,
            }
        }
    }
}

/// A socket whose every incoming message is at most `limit` bytes, and
/// whose outgoing bytes wait for an uncorked flush while corked.
#[derive(Debug)]
pub(crate) struct Bounded<S> {
    inner: S,
    limit: usize,
    position: Position,
    corked: bool,
    /// Written while corked, not yet sent; `sent` of them went out.
    held: Vec<u8>,
    sent: usize,
}

impl<S> Bounded<S> {
    pub(crate) fn new(inner: S, limit: usize) -> Self {
        Self {
            inner,
            limit,
            position: Position::head(false),
            corked: false,
            held: Vec::new(),
            sent: 0,
        }
    }

    /// Holds flushes (`true`) until a flush after `cork(false)`.
    pub(crate) fn cork(&mut self, corked: bool) {
        self.corked = corked;
    }

    /// The socket, for a protocol that continues over it (TLS); what was
    /// read through it is the caller's to check.
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }

    /// Follows the message boundaries through `bytes`, the next bytes read.
    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.position {
                Position::StartupHead { got, head } => {
                    let take = (8 - *got).min(bytes.len());
                    head[*got..*got + take].copy_from_slice(&bytes[..take]);
                    *got += take;
                    bytes = &bytes[take..];
                    if *got == 8 {
                        let [l0, l1, l2, l3, c0, c1, c2, c3] = *head;
                        let length = i32::from_be_bytes([l0, l1, l2, l3]);
                        let code = i32::from_be_bytes([c0, c1, c2, c3]);
                        let body = body(self.limit, length, 8)?;
                        self.position = Position::body(body, !NEGOTIATION_CODES.contains(&code));
                    }
                }
                Position::TypedHead { got, head } => {
                    let take = (5 - *got).min(bytes.len());
                    head[*got..*got + take].copy_from_slice(&bytes[..take]);
                    *got += take;
                    bytes = &bytes[take..];
                    if *got == 5 {
                        let [_, l0, l1, l2, l3] = *head;
                        let body = body(self.limit, i32::from_be_bytes([l0, l1, l2, l3]), 5)?;
                        self.position = Position::body(body, true);
                    }
                }
                Position::Body {
                    remaining,
                    then_typed,
                } => {
                    let take = (*remaining).min(bytes.len());
                    *remaining -= take;
                    bytes = &bytes[take..];
                    if *remaining == 0 {
                        self.position = Position::head(*then_typed);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The body's length after a head of `read` bytes of a message whose
/// length field says `length` (it counts itself, not a type byte).
fn body(limit: usize, length: i32, read: usize) -> io::Result<usize> {
    let counted = read - usize::from(read == 5);
    match usize::try_from(length) {
        Ok(length) if length >= counted && length <= limit => Ok(length - counted),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message of {length} bytes: messages are at most {limit} bytes"),
        )),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => Poll::Ready(self.follow(&buf.filled()[before..])),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> Bounded<S> {
    /// Writes out what is held.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Behind held bytes, even uncorked: they go out together at the
        // flush, one write.
        if (this.corked || !this.held.is_empty()) && this.held.len() + buf.len() <= CORK_BYTES {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        // Full, or not corked: what is held goes first, in order.
        ready!(this.poll_send_held(cx))?;
        if this.corked && buf.len() <= CORK_BYTES {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.corked {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_send_held(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_held(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(code: i32, body: &[u8]) -> Vec<u8> {
        let mut packet = ((8 + body.len()) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&code.to_be_bytes());
        packet.extend_from_slice(body);
        packet
    }

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut message = vec![kind];
        message.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    #[test]
    fn follows_negotiation_startup_and_typed_messages_in_any_pieces() {
        let mut stream = startup(80877103, b"");
        stream.extend(startup(196608, b"user\0alice\0\0"));
        stream.extend(typed(b'p', b"SCRAM"));
        stream.extend(typed(b'Q', &[b'x'; 1000]));
        stream.extend(typed(b'S', b""));
        for piece in [1, 3, 7, 64, stream.len()] {
            let mut bounded = Bounded::new((), 1024);
            for chunk in stream.chunks(piece) {
                bounded.follow(chunk).unwrap();
            }
            assert_eq!(bounded.position, Position::head(true), "pieces of {piece}");
        }
    }

    #[test]
    fn a_length_over_the_limit_fails_before_its_body() {
        let mut bounded = Bounded::new((), 1024);
        bounded.follow(&startup(196608, b"user\0a\0\0")).unwrap();
        let err = bounded.follow(b"Q\x7f\xff\xff\xff").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut bounded = Bounded::new((), 1024);
        assert!(bounded.follow(&[0x80, 0, 0, 0, 0, 3, 0, 0]).is_err());
        let mut bounded = Bounded::new((), 1024);
        // A length smaller than its own field is as wrong.
        bounded.follow(&startup(196608, b"u\0a\0\0")).unwrap();
        assert!(bounded.follow(b"Q\x00\x00\x00\x02").is_err());
        let mut bounded = Bounded::new((), 1024);
        bounded.follow(&startup(196608, b"u\0a\0\0")).unwrap();
        bounded.follow(&typed(b'Q', &[0; 1020])).unwrap();
        assert!(bounded.follow(&typed(b'Q', &[0; 1021])).is_err());
    }

    #[tokio::test]
    async fn corked_writes_wait_for_an_uncorked_flush_and_keep_their_order() {
        use tokio::io::AsyncWriteExt;
        let mut socket = Bounded::new(Vec::new(), 1 << 20);
        socket.cork(true);
        socket.write_all(b"bind-complete;").await.unwrap();
        socket.flush().await.unwrap();
        socket.write_all(b"rows;done;").await.unwrap();
        socket.flush().await.unwrap();
        assert!(socket.inner.is_empty(), "nothing went out while corked");
        socket.cork(false);
        socket.write_all(b"ready").await.unwrap();
        assert!(
            socket.inner.is_empty(),
            "behind what is held, until the flush"
        );
        socket.flush().await.unwrap();
        assert_eq!(socket.inner, b"bind-complete;rows;done;ready");

        // Past the bound, what is held goes out first, then the rest.
        let mut socket = Bounded::new(Vec::new(), 1 << 20);
        socket.cork(true);
        socket.write_all(&[1; 10]).await.unwrap();
        socket.write_all(&vec![2; CORK_BYTES]).await.unwrap();
        assert_eq!(socket.inner, [1; 10]);
        assert_eq!(socket.held.len(), CORK_BYTES);
        socket.write_all(&vec![3; CORK_BYTES + 1]).await.unwrap();
        assert_eq!(socket.inner.len(), 10 + CORK_BYTES + CORK_BYTES + 1);
        assert!(socket.held.is_empty());
        socket.shutdown().await.unwrap();
    }
}
