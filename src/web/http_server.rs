//! The HTTP/1.1 connection layer under `www.rs`: accepting, bounding and
//! timing connections, reading requests, writing responses.
//!
//! Owns: the reception thread and one thread per request being served.
//! Reception (`mio`, one thread) accepts connections and reads request
//! heads from all of them at once, so an idle or slow connection costs a
//! socket and a small buffer, not a thread. A complete head gets a thread
//! of its own: it reads the body, calls the [`Handler`] (`www.rs`) and
//! writes the answer with blocking I/O and deadlines, waits up to
//! [`KEEPALIVE_LINGER`] (2 ms) for the connection's next request (a
//! browser fetching what a page links, a script paging the API: no thread
//! start and no hand-over per request) and serves it if its head is whole,
//! else hands the kept-alive connection back to reception with what it has
//! sent (`crossbeam` channel + a `mio::Waker`). No other channels.
//!
//! Why not a server crate: tiny_http buffered a request line without limit,
//! panicked when it could not start a thread and had no timeouts. The
//! synchronous crates that do bound heads and time (oxhttp, http-net's
//! blocking `Server`) keep a thread per connection under a cap and, at the
//! cap, block `accept` or answer 503, so a neighbour holding the cap's
//! worth of idle connections stalls the web UI and the webhooks; none
//! serves a unix socket or hands a connection over for a live stream. The
//! policy minibot needs fits in this file; the parsing is `httparse`'s
//! (hyper's parser) and the readiness polling `mio`'s (tokio's).
//!
//! The bounds, each one an attacker would otherwise choose:
//! - **connections:** reception holds at most [`MAX_PENDING`] connections
//!   waiting for a head (beyond, the one without progress for longest is
//!   closed). At most `max_connections` requests are served at once, each
//!   a thread; at the cap a new request displaces the one that has waited
//!   longest on its client (a body still arriving, an answer the client
//!   does not read), or gets a quick 503 if every one is busy in our code.
//!   A thread that cannot be started is a 503 too, never a panic.
//! - **heads:** a line over [`MAX_LINE`] bytes, a head over [`MAX_HEAD`] or
//!   with more than [`MAX_HEADERS`] fields is answered 414/431 and closed,
//!   before more is buffered; all heads being read together stay within
//!   [`HEAD_BUDGET`] (the largest is dropped beyond).
//! - **time:** [`IDLE_TIMEOUT`] for the first byte of a request (keep-alive
//!   included), [`HEAD_TIMEOUT`] from there to the end of the head, a body
//!   deadline that grows with its declared length, and [`WRITE_TIMEOUT`]
//!   for each [`WRITE_PIECE`] of a response: a client that stops reading
//!   is dropped.
//! - **bodies:** only `Content-Length` bodies (chunked ones get 411), each
//!   within the handler's limit for its path (413 before reading), and all
//!   bodies being read at once within [`BODY_BUDGET`] (503 beyond).
//! - **responses:** header names are `&'static str` and every value is
//!   checked for control characters before anything is written; a bad one
//!   turns the answer into a 500 (no attacker-chosen header lines).
//!
//! Compression: a text answer (HTML, CSS, JavaScript, JSON, SVG, plain
//! text, streamed ones included) to a client that accepts gzip is sent
//! gzip-compressed at [`GZIP_LEVEL`], with `Vary: Accept-Encoding`; the
//! built-in assets are compressed once (at [`GZIP_ASSET_LEVEL`]) and kept. Live streams (taken over)
//! and answers with an encoding of their own (the log download) are sent
//! as they are.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest request line or header line.
pub(crate) const MAX_LINE: usize = 8 * 1024;
/// Longest request head (request line and all headers).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request.
pub(crate) const MAX_HEADERS: usize = 100;
/// How long an open connection may wait for the first byte of a request.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a request head may take from its first byte to its end.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A body's deadline: this, plus its length at [`BODY_MIN_RATE`].
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes per second a body must at least arrive at beyond [`BODY_TIMEOUT`].
pub(crate) const BODY_MIN_RATE: u64 = 256 * 1024;
/// Longest a piece of a response may wait for the client to take it.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request thread waits for the next request on a kept-alive
/// connection before handing it back to reception ([`linger`]).
pub(crate) const KEEPALIVE_LINGER: Duration = Duration::from_millis(2);
/// The pieces responses are written in (see [`WRITE_TIMEOUT`]).
pub(crate) const WRITE_PIECE: usize = 16 * 1024;
/// Most body bytes buffered by all connections together.
pub(crate) const BODY_BUDGET: usize = 48 * 1024 * 1024;
/// Most connections waiting in reception for a request head.
pub(crate) const MAX_PENDING: usize = 512;
/// Most bytes of unfinished heads held in reception together.
pub(crate) const HEAD_BUDGET: usize = 8 * 1024 * 1024;
/// Stack of a request thread: page rendering and SQLite reads.
const STACK: usize = 512 * 1024;
/// zlib's level for answers made for each request (1 fastest .. 9
/// smallest): level 6 costs 1.2-2.5 times the instructions of level 1 for
/// pages 3-14 % smaller (the log page's is even larger), so the master
/// stays cheap at 1. The figures: docs/performance.md.
pub(crate) const GZIP_LEVEL: u32 = 1;
/// The level of the built-in assets, compressed once per process.
pub(crate) const GZIP_ASSET_LEVEL: u32 = 9;
/// Bodies shorter than this are sent as they are: they fit one TCP
/// segment either way, and each compression has a fixed cost (~60 µs
/// here, most of it setting up the compressor's tables) that a small
/// answer would pay for nothing (nginx's usual `gzip_min_length 1000`).
pub(crate) const GZIP_MIN: usize = 1000;

/// The listening socket: TCP, or a unix socket (`[www] unix_socket`).
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// One accepted connection.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
    fn shutdown(&self) {
        // Wakes a thread blocked reading or writing; errors mean it is gone.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }
    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }
    fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection handed over by [`Reply::Takeover`]: each write waits at
/// most [`WRITE_TIMEOUT`] for the client.
pub(crate) struct Takeover(Stream);

impl Write for Takeover {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Other(String),
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            other => Method::Other(other.to_string()),
        }
    }
}

/// What the handler sees of a request before its body is read.
pub(crate) struct Head {
    pub method: Method,
    /// The request target as sent (path and query).
    pub target: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The client's address (None on a unix socket).
    pub remote: Option<IpAddr>,
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A whole request.
pub(crate) struct Request {
    pub head: Head,
    pub body: Vec<u8>,
}

pub(crate) enum Body {
    /// Borrowed: a built-in asset (its compressed form is kept).
    Bytes(Cow<'static, [u8]>),
    /// Sent chunked (or until close, to HTTP/1.0 clients).
    Stream(Box<dyn Read + Send>),
    /// Read from a file of known length (artifacts, their byte ranges):
    /// sent with `Content-Length`, a piece at a time. A reader that ends
    /// early ends the connection (the client sees a short body).
    Sized(Box<dyn Read + Send>, u64),
}

pub(crate) struct Response {
    pub status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Response {
    pub(crate) fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: Body::Bytes(Cow::Owned(body)),
        }
    }

    /// A built-in asset: compressed once for every client that accepts it.
    pub(crate) fn asset(status: u16, content_type: &str, body: &'static [u8]) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: Body::Bytes(Cow::Borrowed(body)),
        }
    }

    pub(crate) fn stream(status: u16, content_type: &str, body: Box<dyn Read + Send>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: Body::Stream(body),
        }
    }

    /// A body of exactly `len` bytes from `body`, with `Content-Length`.
    pub(crate) fn sized(
        status: u16,
        content_type: &str,
        body: Box<dyn Read + Send>,
        len: u64,
    ) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: Body::Sized(body, len),
        }
    }

    /// Adds a header. The name is ours by construction; the value is
    /// checked when the response is written.
    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, if it is in memory (tests).
    pub(crate) fn body_bytes(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Bytes(b) => Some(b),
            Body::Stream(_) | Body::Sized(..) => None,
        }
    }
}

/// What the handler does with a request.
pub(crate) enum Reply {
    Respond(Response),
    /// The connection leaves the server (it no longer counts against the
    /// cap) and is given to this function, on the connection's thread, to
    /// write a response of its own (live build streams).
    Takeover(Box<dyn FnOnce(Takeover) + Send>),
}

/// The application: `www.rs`.
pub(crate) trait Handler: Send + Sync + 'static {
    /// The largest body this request may carry (413 beyond).
    fn body_limit(&self, head: &Head) -> usize;
    fn handle(&self, req: Request) -> Reply;
}

/// Whether a header value may be written: no control characters (CR and
/// LF would start a new header line; NUL and tab are refused too).
pub(crate) fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b >= 0x20 && b != 0x7f)
}

/// A connection's entry in the registry.
struct Entry {
    id: u64,
    /// Since when it waits on its client (reading a request or writing a
    /// response); None while our own code works on its request.
    waiting: Option<Instant>,
    /// A handle to shut it down with when it is displaced.
    closer: Stream,
}

#[derive(Default)]
struct Registry {
    conns: Mutex<Vec<Entry>>,
    /// Connection threads alive, displaced ones that are still ending
    /// included.
    threads: AtomicUsize,
    /// Body bytes buffered now.
    buffered: AtomicUsize,
    next_id: AtomicU64,
    stop: AtomicBool,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A poisoned lock only means a thread panicked while holding it;
        // the list itself is still consistent.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_waiting(&self, id: u64, waiting: bool) {
        if let Some(e) = self.lock().iter_mut().find(|e| e.id == id) {
            e.waiting = waiting.then(Instant::now);
        }
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|e| e.id != id);
    }
}

/// Counts a request thread while it lives.
struct ThreadGuard(Arc<Shared>, u64);

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        let reg = &self.0.registry;
        reg.remove(self.1);
        reg.threads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Body bytes counted in [`BODY_BUDGET`] until dropped.
struct Budget<'a>(&'a AtomicUsize, usize);

impl Budget<'_> {
    fn take(&mut self, n: usize) -> bool {
        let before = self.0.fetch_add(n, Ordering::SeqCst);
        self.1 += n;
        before + n <= BODY_BUDGET
    }
}

impl Drop for Budget<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}

/// A running server; [`Server::stop`] ends it.
pub(crate) struct Server {
    shared: Arc<Shared>,
    reception: Option<JoinHandle<()>>,
}

/// What reception and the request threads share.
struct Shared {
    registry: Registry,
    handler: Arc<dyn Handler>,
    /// Most requests served at once.
    max: usize,
    /// Keep-alive connections going back to reception.
    /// Kept-alive connections handed back, with what has arrived of their
    /// next head.
    back: crossbeam_channel::Sender<(Stream, Option<IpAddr>, Vec<u8>)>,
    waker: mio::Waker,
}

const LISTENER: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);

impl Server {
    /// Starts the reception thread on `listener`.
    pub(crate) fn start(
        listener: Listener,
        max_connections: usize,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Server> {
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let (back, back_rx) = crossbeam_channel::unbounded();
        let listener = match listener {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                MioListener::Tcp(mio::net::TcpListener::from_std(l))
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                MioListener::Unix(mio::net::UnixListener::from_std(l))
            }
        };
        let shared = Arc::new(Shared {
            registry: Registry::default(),
            handler,
            max: max_connections.max(1),
            back,
            waker,
        });
        let sh = shared.clone();
        let reception = std::thread::Builder::new()
            .name("http-reception".into())
            .stack_size(256 * 1024)
            .spawn(move || reception(poll, listener, back_rx, sh))?;
        Ok(Server {
            shared,
            reception: Some(reception),
        })
    }

    /// Tells reception to stop accepting, without waiting for it: for a
    /// stop that tells every thread first and then waits for each (the
    /// waits then overlap). [`Server::stop`] finishes it.
    pub(crate) fn signal_stop(&self) {
        self.shared.registry.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
    }

    /// Stops accepting, closes the connections waiting for a request and
    /// those waiting on their clients; requests being handled finish their
    /// answer.
    pub(crate) fn stop(mut self) {
        self.signal_stop();
        if let Some(h) = self.reception.take() {
            let _ = h.join();
        }
        for e in self.shared.registry.lock().iter() {
            if e.waiting.is_some() {
                e.closer.shutdown();
            }
        }
    }
}

enum MioListener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

/// A connection in reception (non-blocking).
enum MioStream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl MioStream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            MioStream::Tcp(s) => s,
            MioStream::Unix(s) => s,
        }
    }

    fn into_std(self) -> io::Result<Stream> {
        let s = match self {
            MioStream::Tcp(s) => Stream::Tcp(s.into()),
            MioStream::Unix(s) => Stream::Unix(s.into()),
        };
        s.set_nonblocking(false)?;
        Ok(s)
    }

    fn from_std(s: Stream) -> io::Result<MioStream> {
        s.set_nonblocking(true)?;
        Ok(match s {
            Stream::Tcp(s) => MioStream::Tcp(mio::net::TcpStream::from_std(s)),
            Stream::Unix(s) => MioStream::Unix(mio::net::UnixStream::from_std(s)),
        })
    }
}

impl Read for MioStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            MioStream::Tcp(s) => s.read(buf),
            MioStream::Unix(s) => s.read(buf),
        }
    }
}

/// A connection waiting in reception for a whole request head.
struct Pending {
    stream: MioStream,
    buf: Vec<u8>,
    remote: Option<IpAddr>,
    /// Accepted or handed back.
    since: Instant,
    first_byte: Option<Instant>,
    /// Last time bytes arrived.
    progress: Instant,
    scan: HeadScan,
}

/// What reading a pending connection came to.
enum Progress {
    More,
    Closed,
    Complete(Parsed),
    Refuse(Response),
}

fn read_pending(p: &mut Pending) -> Progress {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let room = (MAX_HEAD + 1)
            .saturating_sub(p.buf.len())
            .clamp(1, chunk.len());
        match p.stream.read(&mut chunk[..room]) {
            Ok(0) => return Progress::Closed,
            Ok(n) => {
                let now = Instant::now();
                p.first_byte.get_or_insert(now);
                p.progress = now;
                p.buf.extend_from_slice(&chunk[..n]);
                match parse_head(&mut p.buf, &mut p.scan, p.remote) {
                    Ok(Some(parsed)) => return Progress::Complete(parsed),
                    Ok(None) => {}
                    Err(resp) => return Progress::Refuse(resp),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::More,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Progress::Closed,
        }
    }
}

/// An answer written without waiting (reception never waits on a client),
/// then the connection is closed.
fn refuse_now(mut stream: MioStream, resp: Response) {
    let bytes = head_bytes(&resp, false, false);
    let mut out = bytes;
    if let Some(b) = resp.body_bytes() {
        out.extend_from_slice(b);
    }
    let _ = match &mut stream {
        MioStream::Tcp(s) => s.write(&out).map(drop),
        MioStream::Unix(s) => s.write(&out).map(drop),
    };
}

/// The reception thread: accepts, reads heads, hands complete ones to
/// request threads, takes keep-alive connections back.
fn reception(
    mut poll: mio::Poll,
    mut listener: MioListener,
    back: crossbeam_channel::Receiver<(Stream, Option<IpAddr>, Vec<u8>)>,
    sh: Arc<Shared>,
) {
    let registered = match &mut listener {
        MioListener::Tcp(l) => poll
            .registry()
            .register(l, LISTENER, mio::Interest::READABLE),
        MioListener::Unix(l) => poll
            .registry()
            .register(l, LISTENER, mio::Interest::READABLE),
    };
    if let Err(e) = registered {
        log::error!("http: cannot poll the listening socket: {e}");
        return;
    }
    let mut events = mio::Events::with_capacity(256);
    let mut pending: HashMap<mio::Token, Pending> = HashMap::new();
    let mut next_token = 2usize;
    let mut accept_failures = 0u32;
    loop {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(250))) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::warn!("http: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        if sh.registry.stop.load(Ordering::SeqCst) {
            return;
        }
        // New and handed-back connections, with what they have sent so far.
        let mut fresh: Vec<(MioStream, Option<IpAddr>, Vec<u8>)> = vec![];
        for ev in events.iter() {
            match ev.token() {
                LISTENER => loop {
                    let accepted = match &listener {
                        MioListener::Tcp(l) => l.accept().map(|(s, a)| {
                            // A streamed answer's pieces must not wait for
                            // the client's delayed ACKs.
                            let _ = s.set_nodelay(true);
                            (MioStream::Tcp(s), Some(a.ip()))
                        }),
                        MioListener::Unix(l) => l.accept().map(|(s, _)| (MioStream::Unix(s), None)),
                    };
                    match accepted {
                        Ok(c) => {
                            accept_failures = 0;
                            fresh.push((c.0, c.1, Vec::new()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // Out of descriptors, or an aborted handshake:
                            // say so once in a while, try again next round.
                            accept_failures += 1;
                            if accept_failures == 1 || accept_failures.is_multiple_of(1000) {
                                log::warn!("http: accept failed ({accept_failures} in a row): {e}");
                            }
                            break;
                        }
                    }
                },
                WAKE => {
                    for (s, remote, buf) in back.try_iter() {
                        if let Ok(m) = MioStream::from_std(s) {
                            fresh.push((m, remote, buf));
                        }
                    }
                }
                token => {
                    let Some(p) = pending.get_mut(&token) else {
                        continue;
                    };
                    match read_pending(p) {
                        Progress::More => {}
                        Progress::Closed => {
                            pending.remove(&token);
                        }
                        Progress::Refuse(resp) => {
                            if let Some(p) = pending.remove(&token) {
                                refuse_now(p.stream, resp);
                            }
                        }
                        Progress::Complete(parsed) => {
                            if let Some(mut p) = pending.remove(&token) {
                                // Its fd goes back to reception after a
                                // keep-alive answer and is registered anew.
                                let _ = poll.registry().deregister(p.stream.source());
                                hand_over(p, parsed, &sh);
                            }
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        for (stream, remote, buf) in fresh {
            let mut p = Pending {
                stream,
                // From the head's first bytes on, its time runs.
                first_byte: (!buf.is_empty()).then_some(now),
                buf,
                remote,
                since: now,
                progress: now,
                scan: HeadScan::default(),
            };
            // A real client sends its head right after connecting: read it
            // now, so it never waits behind (or is displaced with) a crowd
            // of connections that send nothing.
            match read_pending(&mut p) {
                Progress::More => {}
                Progress::Closed => continue,
                Progress::Refuse(resp) => {
                    refuse_now(p.stream, resp);
                    continue;
                }
                Progress::Complete(parsed) => {
                    hand_over(p, parsed, &sh);
                    continue;
                }
            }
            if pending.len() >= MAX_PENDING {
                // Full: a connection that has sent nothing makes room, the
                // one waiting longest; else the one without progress for
                // longest.
                let victim = pending
                    .iter()
                    .min_by_key(|(_, p)| (p.first_byte.is_some(), p.progress))
                    .map(|(t, _)| *t);
                if let Some(t) = victim {
                    pending.remove(&t);
                }
            }
            let token = mio::Token(next_token);
            next_token += 1;
            if poll
                .registry()
                .register(p.stream.source(), token, mio::Interest::READABLE)
                .is_ok()
            {
                pending.insert(token, p);
            }
        }
        sweep(&mut pending);
    }
}

/// Closes pending connections past their deadlines, and the largest heads
/// while all together hold more than [`HEAD_BUDGET`].
fn sweep(pending: &mut HashMap<mio::Token, Pending>) {
    let now = Instant::now();
    let mut late = vec![];
    for (t, p) in pending.iter() {
        match p.first_byte {
            None if now.duration_since(p.since) > IDLE_TIMEOUT => late.push((*t, false)),
            Some(f) if now.duration_since(f) > HEAD_TIMEOUT => late.push((*t, true)),
            _ => {}
        }
    }
    for (t, answer) in late {
        if let Some(p) = pending.remove(&t) {
            if answer {
                refuse_now(p.stream, error(408, "request head not received in time"));
            }
        }
    }
    let mut held: usize = pending.values().map(|p| p.buf.len()).sum();
    while held > HEAD_BUDGET {
        let Some(t) = pending
            .iter()
            .max_by_key(|(_, p)| p.buf.len())
            .map(|(t, _)| *t)
        else {
            break;
        };
        if let Some(p) = pending.remove(&t) {
            held -= p.buf.len();
        }
    }
}

/// A pending connection whose head is complete leaves reception for a
/// request thread.
fn hand_over(p: Pending, parsed: Parsed, sh: &Arc<Shared>) {
    if let Ok(s) = p.stream.into_std() {
        dispatch(s, parsed, p.buf, p.remote, sh);
    }
}

/// Gives a request with a complete head a thread, displacing the request
/// that has waited longest on its client if all places are taken.
fn dispatch(stream: Stream, first: Parsed, buf: Vec<u8>, remote: Option<IpAddr>, sh: &Arc<Shared>) {
    let reg = &sh.registry;
    let Ok(closer) = stream.try_clone() else {
        return;
    };
    let id = reg.next_id.fetch_add(1, Ordering::SeqCst);
    {
        let mut conns = reg.lock();
        if conns.len() >= sh.max {
            let oldest = conns
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.waiting.map(|t| (i, t)))
                .min_by_key(|&(_, t)| t)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => conns.swap_remove(i).closer.shutdown(),
                None => {
                    drop(conns);
                    return refuse(stream);
                }
            }
        }
        // Displaced threads end within a read or write; until they have,
        // they count, so the threads never exceed twice the cap.
        if reg.threads.load(Ordering::SeqCst) >= 2 * sh.max {
            drop(conns);
            return refuse(stream);
        }
        conns.push(Entry {
            id,
            waiting: Some(Instant::now()),
            closer,
        });
        reg.threads.fetch_add(1, Ordering::SeqCst);
    }
    let guard = ThreadGuard(sh.clone(), id);
    let Ok(back) = stream.try_clone() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("http-request".into())
        .stack_size(STACK)
        .spawn(move || {
            let sh = guard.0.clone();
            serve(stream, first, buf, remote, id, &sh);
            drop(guard);
        });
    if let Err(e) = spawned {
        // The closure (and with it the guard) is dropped: the place is free.
        log::warn!("http: cannot start a request thread: {e}");
        refuse(back);
    }
}

/// A quick 503 from reception: it must never wait on the client.
fn refuse(stream: Stream) {
    if let Ok(m) = MioStream::from_std(stream) {
        refuse_now(
            m,
            error(503, "server busy; retry later").with_header("Retry-After", "5"),
        );
    }
}

/// Why a connection ends without another request.
enum End {
    /// The client closed, timed out or was displaced: nothing to answer.
    Quiet,
    /// Answer this, then close.
    Answer(Response),
}

/// A JSON error answer, `{"error": msg}` (this layer's and the API's).
pub(crate) fn error(status: u16, msg: &str) -> Response {
    Response::bytes(
        status,
        "application/json",
        serde_json::json!({ "error": msg }).to_string().into_bytes(),
    )
}

/// A request thread: the request reception parsed (`first`; `buf` holds
/// the bytes after its head), then each next request whose whole head is
/// in `buf` (pipelined, or read by [`linger`]); then a kept-alive
/// connection goes back to reception.
fn serve(
    mut stream: Stream,
    first: Parsed,
    mut buf: Vec<u8>,
    remote: Option<IpAddr>,
    id: u64,
    sh: &Shared,
) {
    let reg = &sh.registry;
    let handler = &*sh.handler;
    let mut next = Some(first);
    loop {
        if reg.stop.load(Ordering::SeqCst) {
            return;
        }
        reg.set_waiting(id, true);
        // After the first: a whole head already in `buf` is served here;
        // an idle connection, or one with part of a head, goes back to
        // reception (with those bytes), which reads slow heads without a
        // thread.
        let parsed = match next.take() {
            Some(p) => Ok(p),
            None => match parse_head(&mut buf, &mut HeadScan::default(), remote) {
                Ok(Some(p)) => Ok(p),
                Ok(None) => {
                    if sh.back.send((stream, remote, buf)).is_ok() {
                        let _ = sh.waker.wake();
                    }
                    return;
                }
                Err(resp) => Err(End::Answer(resp)),
            },
        };
        let Parsed {
            head,
            http10,
            keep_alive,
        } = match parsed {
            Ok(p) => p,
            Err(End::Quiet) => return,
            Err(End::Answer(resp)) => {
                let _ = write_response(&mut stream, resp, false, false, false);
                return;
            }
        };
        let is_head = head.method == Method::Head;
        let limit = handler.body_limit(&head);
        let body = match read_body(&mut stream, &mut buf, &head, limit, reg) {
            Ok(b) => b,
            Err(End::Quiet) => return,
            Err(End::Answer(resp)) => {
                let _ = write_response(&mut stream, resp, is_head, http10, false);
                return;
            }
        };
        reg.set_waiting(id, false);
        let gzip = accepts_gzip(&head);
        let reply = handler.handle(Request { head, body: body.0 });
        drop(body.1);
        match reply {
            Reply::Respond(resp) => {
                reg.set_waiting(id, true);
                let resp = compress(resp, gzip);
                match write_response(&mut stream, resp, is_head, http10, keep_alive) {
                    Ok(true) => {}
                    Ok(false) | Err(_) => return,
                }
                if buf.is_empty() && !linger(&mut stream, &mut buf) {
                    return;
                }
            }
            Reply::Takeover(f) => {
                reg.remove(id);
                let _ = stream.set_write_timeout(WRITE_TIMEOUT);
                f(Takeover(stream));
                return;
            }
        }
    }
}

/// Waits up to [`KEEPALIVE_LINGER`] on the request thread for the next
/// request of a kept-alive connection, putting what arrives in `buf`. A
/// client that sends its next request as soon as it has an answer (a
/// browser fetching what a page links, a script paging through the API)
/// then costs no thread start and no two hand-overs through reception per
/// request. The thread stays marked waiting, so at the connection cap it
/// is the first displaced. False when the client has closed the
/// connection (or it failed).
fn linger(stream: &mut Stream, buf: &mut Vec<u8>) -> bool {
    if stream.set_read_timeout(KEEPALIVE_LINGER).is_err() {
        return false;
    }
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
        ),
    }
}

/// Where the line scan of a head being read stands: each byte is looked
/// at once, however the head arrives, and `httparse` runs only once an
/// empty line may have ended it (a flood of header bytes costs a scan for
/// newlines, not a parse per read).
#[derive(Default)]
struct HeadScan {
    /// Bytes scanned so far.
    pos: usize,
    line_start: usize,
    /// Lines seen (not counting empty lines before the request line).
    lines: usize,
    /// An empty line after the request line was seen.
    ended: bool,
}

impl HeadScan {
    fn scan(&mut self, buf: &[u8]) -> Result<(), Response> {
        while let Some(i) = buf[self.pos..].iter().position(|&b| b == b'\n') {
            let end = self.pos + i;
            if end - self.line_start > MAX_LINE {
                return Err(too_long(self.lines == 0));
            }
            let empty = matches!(&buf[self.line_start..end], b"" | b"\r");
            self.pos = end + 1;
            self.line_start = end + 1;
            if empty && self.lines > 0 {
                self.ended = true;
                return Ok(());
            }
            if !empty {
                self.lines += 1;
            }
        }
        self.pos = buf.len();
        if buf.len() - self.line_start > MAX_LINE {
            return Err(too_long(self.lines == 0));
        }
        if buf.len() > MAX_HEAD {
            return Err(error(431, "request head too large"));
        }
        Ok(())
    }
}

fn too_long(request_line: bool) -> Response {
    if request_line {
        error(414, "request line too long")
    } else {
        error(431, "request header line too long")
    }
}

/// A request head, parsed.
struct Parsed {
    head: Head,
    http10: bool,
    keep_alive: bool,
}

/// The request head at the start of `buf`, parsed and drained from it
/// (Ok(Some)), not whole yet (Ok(None)), or refused with this answer.
/// `scan` carries over between calls on the same growing `buf`, so each
/// byte is scanned once and `httparse` runs once per head.
fn parse_head(
    buf: &mut Vec<u8>,
    scan: &mut HeadScan,
    remote: Option<IpAddr>,
) -> Result<Option<Parsed>, Response> {
    scan.scan(buf)?;
    if !scan.ended {
        return Ok(None);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(error(400, "bad request: malformed head")),
        Err(httparse::Error::TooManyHeaders) => return Err(error(431, "too many header fields")),
        Err(e) => return Err(error(400, &format!("bad request: {e}"))),
    };
    let http10 = req.version == Some(0);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let connection = headers
        .iter()
        .filter(|(k, _)| k == "connection")
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",");
    let keep_alive = if http10 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    let head = Head {
        method: Method::parse(req.method.unwrap_or("")),
        target: req.path.unwrap_or("/").to_string(),
        headers,
        remote,
    };
    buf.drain(..n);
    Ok(Some(Parsed {
        head,
        http10,
        keep_alive,
    }))
}

/// Reads until `deadline`; Err(Quiet) on close, error or timeout.
fn read_more(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> Result<(), End> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || stream.set_read_timeout(left).is_err() {
        return Err(End::Quiet);
    }
    let mut chunk = [0u8; 4096];
    let want = chunk.len().min(max.saturating_sub(buf.len())).max(1);
    match stream.read(&mut chunk[..want]) {
        Ok(0) | Err(_) => Err(End::Quiet),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

/// Reads the body the head announces, within `limit`, the budget and the
/// body deadline.
fn read_body<'a>(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    head: &Head,
    limit: usize,
    reg: &'a Registry,
) -> Result<(Vec<u8>, Budget<'a>), End> {
    let mut budget = Budget(&reg.buffered, 0);
    if head.header("transfer-encoding").is_some() {
        return Err(End::Answer(error(
            411,
            "chunked request bodies are not accepted; send Content-Length",
        )));
    }
    let mut lengths = head
        .headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.trim());
    let len = match lengths.next() {
        None => 0,
        Some(v) => {
            let parsed = if v.bytes().all(|b| b.is_ascii_digit()) {
                v.parse::<u64>().ok()
            } else {
                None
            };
            let Some(n) = parsed else {
                return Err(End::Answer(error(400, "bad Content-Length")));
            };
            if lengths.any(|o| o != v) {
                return Err(End::Answer(error(400, "conflicting Content-Length")));
            }
            n
        }
    };
    if len > limit as u64 {
        return Err(End::Answer(error(
            413,
            &format!("request body over {limit} bytes"),
        )));
    }
    let len = len as usize;
    if head
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        && buf.len() < len
    {
        let _ = stream.set_write_timeout(WRITE_TIMEOUT);
        if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return Err(End::Quiet);
        }
    }
    let deadline = Instant::now() + BODY_TIMEOUT + Duration::from_secs(len as u64 / BODY_MIN_RATE);
    let mut body = Vec::new();
    loop {
        let take = buf.len().min(len - body.len());
        if take > 0 {
            if !budget.take(take) {
                return Err(End::Answer(
                    error(503, "too many request bodies at once; retry later")
                        .with_header("Retry-After", "5"),
                ));
            }
            body.extend(buf.drain(..take));
        }
        if body.len() == len {
            return Ok((body, budget));
        }
        read_more(stream, buf, len - body.len(), deadline)?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Writes `data` in pieces, each within [`WRITE_TIMEOUT`].
fn write_paced(stream: &mut Stream, data: &[u8]) -> io::Result<()> {
    for piece in data.chunks(WRITE_PIECE) {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut rest = piece;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            stream.set_write_timeout(left)?;
            match stream.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// A response's status line and headers (values already checked).
fn head_bytes(resp: &Response, chunked: bool, keep: bool) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    match &resp.body {
        Body::Bytes(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        Body::Stream(_) if chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
        Body::Stream(_) => {}
        Body::Sized(_, n) => head.push_str(&format!("Content-Length: {n}\r\n")),
    }
    head.push_str(if keep {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    head.into_bytes()
}

/// Whether the client takes gzip: `Accept-Encoding` names `gzip` (or
/// `x-gzip`, or `*`) with a quality other than 0 (RFC 9110 §12.5.3).
pub(crate) fn accepts_gzip(head: &Head) -> bool {
    let mut gzip = None;
    let mut star = None;
    for (_, v) in head.headers.iter().filter(|(k, _)| k == "accept-encoding") {
        for item in v.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let zero = parts.any(|p| {
                let p = p.trim();
                let q = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="));
                q.and_then(|q| q.trim().parse::<f32>().ok()) == Some(0.0)
            });
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(!zero),
                "*" => star = Some(!zero),
                _ => {}
            }
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// Whether answers of this type are worth compressing: text; not live
/// streams, and not what is compressed already.
fn compressible(content_type: &str) -> bool {
    let t = content_type.split(';').next().unwrap_or("").trim();
    (t.starts_with("text/") && t != "text/event-stream")
        || matches!(
            t,
            "application/json" | "application/javascript" | "image/svg+xml"
        )
}

/// The gzip form of the built-in assets, made once each: there are a
/// handful, all `&'static`, so the list stays that small.
static COMPRESSED_ASSETS: Mutex<Vec<(usize, Arc<[u8]>)>> = Mutex::new(Vec::new());

fn gzip_bytes(b: &[u8], level: u32) -> Option<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(
        Vec::with_capacity(b.len() / 3),
        flate2::Compression::new(level),
    );
    // Writing into a Vec does not fail; if it did, the body goes as it is.
    z.write_all(b).ok()?;
    z.finish().ok()
}

/// A built-in asset's gzip form, kept by its address: a `&'static` body is
/// the same asset for the life of the process.
fn asset_gzip(b: &'static [u8]) -> Option<Vec<u8>> {
    let key = b.as_ptr() as usize;
    let mut kept = COMPRESSED_ASSETS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, z)) = kept.iter().find(|(k, _)| *k == key) {
        return Some(z.to_vec());
    }
    let z = gzip_bytes(b, GZIP_ASSET_LEVEL)?;
    kept.push((key, z.as_slice().into()));
    Some(z)
}

/// `resp` gzip-compressed for a client that takes it (`gzip`), with
/// `Vary: Accept-Encoding` on every answer whose form depends on it.
pub(crate) fn compress(mut resp: Response, gzip: bool) -> Response {
    let ct = resp.header("Content-Type").unwrap_or("");
    if !compressible(ct) || resp.header("Content-Encoding").is_some() {
        return resp;
    }
    resp.headers.push(("Vary", "Accept-Encoding".to_string()));
    if !gzip {
        return resp;
    }
    resp.body = match std::mem::replace(&mut resp.body, Body::Bytes(Cow::Borrowed(&[]))) {
        Body::Stream(r) => Body::Stream(Box::new(flate2::read::GzEncoder::new(
            r,
            flate2::Compression::new(GZIP_LEVEL),
        ))),
        Body::Bytes(b) => {
            let z = match &b {
                _ if b.len() < GZIP_MIN => None,
                Cow::Borrowed(s) => asset_gzip(s),
                Cow::Owned(v) => gzip_bytes(v, GZIP_LEVEL),
            };
            let Some(z) = z else {
                resp.body = Body::Bytes(b);
                return resp;
            };
            Body::Bytes(Cow::Owned(z))
        }
        // Not compressible (`compressible` is false for what is sent so).
        sized @ Body::Sized(..) => {
            resp.body = sized;
            return resp;
        }
    };
    resp.headers.push(("Content-Encoding", "gzip".to_string()));
    resp
}

/// Writes a response; Ok(true) if the connection may carry another.
fn write_response(
    stream: &mut Stream,
    mut resp: Response,
    is_head: bool,
    http10: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    if let Some((name, _)) = resp.headers.iter().find(|(_, v)| !valid_header_value(v)) {
        log::error!("http: refusing to send a {name} header with control characters");
        resp = error(500, "internal error: a response header was refused");
    }
    let streamed = matches!(resp.body, Body::Stream(_));
    // A streamed body to an HTTP/1.0 client ends with the connection.
    let keep = keep_alive && !(streamed && http10) && !(streamed && is_head);
    let chunked = streamed && !http10 && !is_head;
    let mut out = head_bytes(&resp, chunked, keep);
    match resp.body {
        Body::Bytes(b) => {
            if !is_head {
                out.extend_from_slice(&b);
            }
            write_paced(stream, &out)?;
        }
        Body::Stream(mut r) => {
            write_paced(stream, &out)?;
            if !is_head {
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = r.read(&mut chunk)?;
                    if http10 {
                        if n == 0 {
                            break;
                        }
                        write_paced(stream, &chunk[..n])?;
                        continue;
                    }
                    let mut piece = format!("{n:x}\r\n").into_bytes();
                    piece.extend_from_slice(&chunk[..n]);
                    piece.extend_from_slice(b"\r\n");
                    if n == 0 {
                        write_paced(stream, &piece)?;
                        break;
                    }
                    write_paced(stream, &piece)?;
                }
            }
        }
        Body::Sized(mut r, len) => {
            write_paced(stream, &out)?;
            if !is_head {
                let mut chunk = vec![0u8; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let want = left.min(chunk.len() as u64) as usize;
                    let n = r.read(&mut chunk[..want])?;
                    if n == 0 {
                        // The file shrank under us: the length sent is
                        // wrong now, so this connection cannot go on.
                        stream.shutdown();
                        return Ok(false);
                    }
                    write_paced(stream, &chunk[..n])?;
                    left -= n as u64;
                }
            }
        }
    }
    if !keep {
        stream.shutdown();
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_with_control_characters_are_refused() {
        assert!(valid_header_value("/builders/x?page=2"));
        for bad in ["a\rb", "a\nb", "a\tb", "a\0b", "a\x7fb"] {
            assert!(!valid_header_value(bad), "{bad:?}");
        }
    }

    fn head_with(accept: &[&str]) -> Head {
        Head {
            method: Method::Get,
            target: "/".into(),
            headers: accept
                .iter()
                .map(|v| ("accept-encoding".to_string(), v.to_string()))
                .collect(),
            remote: None,
        }
    }

    #[test]
    fn gzip_is_taken_when_named_without_q_0() {
        for (ae, want) in [
            (&[][..], false),
            (&["gzip"][..], true),
            (&["deflate, gzip;q=0.5"][..], true),
            (&["x-gzip"][..], true),
            (&["GZip ; Q=1"][..], true),
            (&["gzip;q=0"][..], false),
            (&["gzip; q=0.000"][..], false),
            (&["br", "gzip"][..], true),
            (&["*"][..], true),
            (&["*;q=0"][..], false),
            (&["gzip;q=0, *"][..], false),
            (&["identity"][..], false),
        ] {
            assert_eq!(accepts_gzip(&head_with(ae)), want, "{ae:?}");
        }
    }

    #[test]
    fn compression_takes_text_of_some_size_and_nothing_encoded() {
        let page = "<p>hello</p>".repeat(200);
        let r = compress(
            Response::bytes(200, "text/html; charset=utf-8", page.clone().into()),
            true,
        );
        assert_eq!(r.header("Content-Encoding"), Some("gzip"));
        assert_eq!(r.header("Vary"), Some("Accept-Encoding"));
        let mut back = String::new();
        flate2::read::GzDecoder::new(r.body_bytes().unwrap())
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, page);
        // Not asked for: identity, and Vary all the same.
        let r = compress(
            Response::bytes(200, "application/json", page.clone().into()),
            false,
        );
        assert_eq!(r.header("Content-Encoding"), None);
        assert_eq!(r.header("Vary"), Some("Accept-Encoding"));
        assert_eq!(r.body_bytes(), Some(page.as_bytes()));
        // Small: identity.
        let r = compress(Response::bytes(200, "text/plain", b"short".to_vec()), true);
        assert_eq!(r.header("Content-Encoding"), None);
        assert_eq!(r.body_bytes(), Some(&b"short"[..]));
        // Already encoded, or not text: untouched, no Vary.
        for (ct, enc) in [
            ("application/gzip", None),
            ("text/plain", Some("br")),
            ("image/png", None),
        ] {
            let mut r = Response::bytes(200, ct, page.clone().into());
            if let Some(e) = enc {
                r = r.with_header("Content-Encoding", e);
            }
            let r = compress(r, true);
            assert_eq!(r.header("Vary"), None, "{ct}");
            assert_eq!(r.body_bytes(), Some(page.as_bytes()), "{ct}");
        }
        // A built-in asset: compressed once, the same bytes each time.
        static ASSET: &str = include_str!("assets/core.js");
        let a = compress(
            Response::asset(200, "text/javascript", ASSET.as_bytes()),
            true,
        );
        let b = compress(
            Response::asset(200, "text/javascript", ASSET.as_bytes()),
            true,
        );
        assert_eq!(a.body_bytes(), b.body_bytes());
        assert!(a.body_bytes().unwrap().len() * 2 < ASSET.len());
    }

    /// The figures behind [`GZIP_LEVEL`] (docs/performance.md): bytes and
    /// time of each level on the assets, or on the files named in
    /// `MINIBOT_GZIP_PAGES` (colon-separated). `cargo test --lib
    /// gzip_levels -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn gzip_levels() {
        let mut bodies: Vec<(String, Vec<u8>)> = vec![
            (
                "minibot.css".into(),
                include_bytes!("assets/minibot.css").to_vec(),
            ),
            ("core.js".into(), include_bytes!("assets/core.js").to_vec()),
        ];
        if let Ok(v) = std::env::var("MINIBOT_GZIP_PAGES") {
            bodies.clear();
            for p in v.split(':') {
                bodies.push((p.to_string(), std::fs::read(p).unwrap()));
            }
        }
        // For callgrind: one level, and a run with n = 0 to subtract.
        let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let levels: Vec<u32> = env("MINIBOT_GZIP_LEVELS", "1,3,6,9")
            .split(',')
            .filter_map(|l| l.parse().ok())
            .collect();
        let n: u32 = env("MINIBOT_GZIP_N", "400").parse().unwrap_or(400);
        for (name, b) in &bodies {
            for &level in &levels {
                let t = Instant::now();
                let mut len = 0;
                for _ in 0..n {
                    let mut z =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                    z.write_all(b).unwrap();
                    len = z.finish().unwrap().len();
                }
                let each = t.elapsed() / n.max(1);
                eprintln!(
                    "{name}: {} bytes, level {level}: {len} bytes, {each:?} each",
                    b.len()
                );
            }
        }
    }

    #[test]
    fn heads_are_checked_line_by_line_as_they_arrive() {
        let check = |text: &[u8]| {
            let mut scan = HeadScan::default();
            let mut buf = vec![];
            let mut out = Ok(false);
            for b in text.chunks(7) {
                buf.extend_from_slice(b);
                out = parse_head(&mut buf, &mut scan, None)
                    .map(|p| p.is_some())
                    .map_err(|r| r.status);
                if out != Ok(false) {
                    break;
                }
            }
            out
        };
        assert_eq!(check(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Ok(true));
        assert_eq!(check(b"\r\nGET / HTTP/1.1\nHost: x\n\n"), Ok(true));
        assert_eq!(check(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(false));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE));
        assert_eq!(check(long.as_bytes()), Err(414));
        let hdr = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_LINE));
        assert_eq!(check(hdr.as_bytes()), Err(431));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: a\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(check(many.as_bytes()), Err(431));
        let line = format!("X: {}\r\n", "a".repeat(8000));
        let big = format!("GET / HTTP/1.1\r\n{}", line.repeat(9));
        assert_eq!(check(big.as_bytes()), Err(431));
        assert_eq!(check(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), Err(400));
    }
}
