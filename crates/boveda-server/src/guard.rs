//! Connections no client can hoard.
//!
//! Every connection costs a file descriptor, and the process has a limit
//! (1024 by default). Without limits, 1 050 connections that send nothing
//! stopped all service, and 400 that sent half a request's headers were
//! held for a minute. So the listener is wrapped:
//!
//! - at most [`Limits::max_connections`] connections are open at once (by
//!   default three quarters of the open-file limit, leaving room for the
//!   vaults' own files), and at most [`Limits::per_address`] from one
//!   address, so one client cannot hold them all; a connection over either
//!   is answered `503` with `Retry-After` and closed at once;
//! - a request's headers must all arrive within [`Limits::headers`] of its
//!   first byte, or the connection is answered `408` and closed (a body
//!   that never ends is the application's 30 s limit);
//! - a connection on which nothing is read or written for [`Limits::idle`]
//!   is closed (an event stream sends a keep-alive comment more often).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The server's connection limits (see the module's text).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub per_address: usize,
    pub headers: Duration,
    pub idle: Duration,
}

impl Limits {
    /// Limits fitted to this process's open-file limit, raised first to
    /// its hard limit (as `LimitNOFILE` in the systemd unit allows).
    pub fn for_this_process() -> Self {
        let soft = raise_open_file_limit();
        let max_connections = (soft.saturating_mul(3) / 4).clamp(16, 16_384) as usize;
        Self {
            max_connections,
            per_address: (max_connections / 4).max(8),
            headers: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// Raises the soft open-file limit to the hard one; returns the soft limit
/// in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (l.current, l.maximum)
        && max > cur
    {
        l.current = Some(max);
        if setrlimit(Resource::Nofile, l).is_ok() {
            return max;
        }
        return cur;
    }
    l.current.unwrap_or(1024)
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A listener whose connections are counted and timed.
pub struct Guarded<L> {
    inner: L,
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

impl<L> Guarded<L> {
    pub fn new(inner: L, limits: Limits) -> Self {
        Self { inner, limits, counts: Arc::new(Mutex::new(Counts::default())) }
    }
}

/// A whole HTTP/1.1 response with a JSON error, written by hand where no
/// request was read (the connection is closed after it).
fn refusal(status: &str, code: &str, message: &str, extra: &str) -> Vec<u8> {
    let body = serde_json::json!({"code": code, "message": message}).to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

static BUSY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    refusal(
        "503 Service Unavailable",
        "too_many_connections",
        "too many connections are open (from this address, or in all); try again in a second",
        "retry-after: 1\r\n",
    )
});
static TOO_SLOW: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    refusal("408 Request Timeout", "request_timeout", "the request's headers did not arrive in time", "")
});

impl<L> axum::serve::Listener for Guarded<L>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    type Io = GuardedIo<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (mut io, addr) = self.inner.accept().await;
            let admitted = match self.counts.lock() {
                Ok(mut c) => {
                    let mine = c.by_address.get(&addr.ip()).copied().unwrap_or(0);
                    if c.total >= self.limits.max_connections || mine >= self.limits.per_address {
                        false
                    } else {
                        c.total += 1;
                        *c.by_address.entry(addr.ip()).or_default() += 1;
                        true
                    }
                }
                Err(_) => true,
            };
            if !admitted {
                // answered and closed off the accept loop: a client that
                // does not read cannot stall it
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        let _ = io.write_all(&BUSY).await;
                        let _ = io.shutdown().await;
                    })
                    .await;
                });
                continue;
            }
            let io = GuardedIo {
                inner: io,
                limits: self.limits,
                counts: self.counts.clone(),
                addr: addr.ip(),
                timer: Box::pin(tokio::time::sleep(self.limits.idle)),
                last_activity: Instant::now(),
                request_started: None,
                tail: [0; 3],
                refusing: None,
            };
            return (io, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection with its time limits; counted until dropped.
pub struct GuardedIo<S> {
    inner: S,
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
    addr: IpAddr,
    timer: Pin<Box<Sleep>>,
    last_activity: Instant,
    /// When the first byte of a request whose headers are not complete came.
    request_started: Option<Instant>,
    /// The last bytes read, to find a headers' end split across reads.
    tail: [u8; 3],
    /// The 408 being written before the connection is closed.
    refusing: Option<usize>,
}

impl<S> GuardedIo<S> {
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn deadline(&self) -> Instant {
        let idle = self.last_activity + self.limits.idle;
        match self.request_started {
            Some(t) => idle.min(t + self.limits.headers),
            None => idle,
        }
    }

    /// Follows the bytes read: a request starts with its first byte and
    /// its headers end at an empty line.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.last_activity = Instant::now();
        let mut window = self.tail.to_vec();
        window.extend_from_slice(bytes);
        if self.request_started.is_none() {
            self.request_started = Some(Instant::now());
        }
        if window.windows(4).any(|w| w == b"\r\n\r\n") {
            self.request_started = None; // headers complete; the body has its own limit
        }
        let keep = window.len().min(3);
        let mut tail = [0u8; 3];
        tail[3 - keep..].copy_from_slice(&window[window.len() - keep..]);
        self.tail = tail;
    }
}

impl<S> Drop for GuardedIo<S> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counts.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.by_address.get_mut(&self.addr) {
                *n -= 1;
                if *n == 0 {
                    c.by_address.remove(&self.addr);
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if let Some(written) = me.refusing {
            // finish writing the 408, then end the connection
            match Pin::new(&mut me.inner).poll_write(cx, &TOO_SLOW[written..]) {
                Poll::Ready(Ok(n)) if n > 0 && written + n < TOO_SLOW.len() => {
                    me.refusing = Some(written + n);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
                _ => return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request headers too slow"))),
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = buf.filled()[before..].to_vec();
                me.saw(&fresh);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = me.deadline();
                if me.timer.deadline() != deadline {
                    me.timer.as_mut().reset(deadline);
                }
                if me.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some(t) = me.request_started
                    && Instant::now() >= t + me.limits.headers
                {
                    me.refusing = Some(0);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle")))
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            self.last_activity = Instant::now();
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            self.last_activity = Instant::now();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
