//! A deadline on every write to an HTTP client, WebSockets included.
//!
//! hyper bounds the time to read a request's headers, and `body` the time
//! to read its body, but nothing bounds a write: a client that sends a
//! request and then never reads the answer (or a WebSocket's events) would
//! hold its connection, its slot and the answer's buffers for ever. A
//! write that makes no progress for the limit fails with `TimedOut`, which
//! ends the connection like any broken one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `S`, whose writes fail after `limit` without progress.
pub(crate) struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Running while a write waits; dropped when one makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// A write that is `Pending`: pending still, or timed out.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {limit:?}"),
        )))
    }

    fn progressed<T>(
        &mut self,
        done: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match done {
            Poll::Ready(done) => {
                self.stalled = None;
                Poll::Ready(done)
            }
            Poll::Pending => self.waiting(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(done, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(done, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(done, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progressed(done, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    // Real time, in tenths of a second (tokio's paused clock needs its
    // test-util feature, which would rebuild everything that uses tokio).
    const LIMIT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_write_nobody_reads_fails_at_the_deadline() {
        // A pipe of 64 bytes whose other end never reads.
        let (near, _far) = tokio::io::duplex(64);
        let mut near = WriteDeadline::new(near, LIMIT);
        near.write_all(&[0; 64]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = near.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= LIMIT);
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(16);
        let mut near = WriteDeadline::new(near, LIMIT);
        // Reads every 50 ms: each write waits, none as long as the limit,
        // and the whole takes four times the limit.
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            let mut total = 0;
            while total < 256 {
                tokio::time::sleep(LIMIT / 4).await;
                total += far.read(&mut buf).await.unwrap();
            }
            total
        });
        near.write_all(&[0; 256]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 256);
    }
}
