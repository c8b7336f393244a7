//! The dp-server's HTTP/2 connections, each served by one task: delta ADS
//! streams inline, every other request by a handler.
//!
//! An Envoy holds one HTTP/2 connection with one delta ADS stream for as
//! long as it runs, and a mesh-wide change costs every connection a
//! response out and an ACK in. Served by hyper and h2, each of those went
//! through two tasks (the connection's and the stream's) and h2's general
//! stream bookkeeping; here the connection's task reads the frames, hands
//! ACKs straight to the stream's [`DeltaBody`], and writes what it answers
//! (docs/benchmarks/ads-delta.md, seventh session). Requests other than
//! delta ADS (`/bootstrap`, state-of-the-world ADS) go to the handler
//! given to [`serve`], as they would on any HTTP/2 server, so a client may
//! mix them on one connection.
//!
//! What is implemented of RFC 9113: the preface and SETTINGS exchange,
//! HEADERS with CONTINUATION, padding and priority, DATA, flow control in
//! both directions, PING, RST_STREAM, WINDOW_UPDATE and GOAWAY; PRIORITY
//! and unknown frame types are ignored, PUSH_PROMISE from a client is a
//! protocol error. Header blocks are decoded with HPACK (dynamic table
//! included); responses are encoded without the dynamic table.

use crate::hpack::{self, put_int, put_literal};
use crate::server::DeltaBody;
use crate::wire::{AdsService, DELTA_PATH};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::task::AtomicWaker;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

thread_local! {
    /// What the connections of a thread read into (see `poll_read`).
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

mod frame {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const INTERNAL_ERROR: u32 = 0x2;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// The largest frame we take: the protocol's default, which we do not raise.
const MAX_FRAME: usize = 16_384;
/// Our receive window, per stream and for the connection (hyper's default).
const WINDOW: u32 = 1 << 20;
/// The window every peer starts with, until its SETTINGS say otherwise.
const DEFAULT_WINDOW: i64 = 65_535;
/// Streams one connection may have open at once (announced).
const MAX_STREAMS: u32 = 1024;
/// A request's header block, CONTINUATIONs included.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// A request's headers decoded (RFC 9113's size: name, value and 32 per
/// field), as announced; a larger request is answered 431.
const MAX_HEADER_LIST: usize = 64 * 1024;
/// Streams the client may reset, or we refuse, per 10 s before the
/// connection is closed with ENHANCE_YOUR_CALM (each costs us work: the
/// "rapid reset" attack).
const MAX_RESETS: u32 = 200;
/// Frames buffered for writing before no more responses are taken.
const WRITE_HIGH: usize = 256 * 1024;

/// A connection ended by a protocol error (after a GOAWAY saying so), or
/// by its transport.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("HTTP/2 protocol error {code:#x}: {reason}")]
    Protocol { code: u32, reason: &'static str },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn protocol(code: u32, reason: &'static str) -> ConnectionError {
    ConnectionError::Protocol { code, reason }
}

/// The request body a handler gets (see [`serve`]): DATA frames as they
/// arrive, ending with the client's END_STREAM, or with an error if the
/// client resets the stream first.
pub struct RequestBody {
    inflow: Arc<Mutex<Inflow>>,
}

#[derive(Default)]
struct Inflow {
    data: BytesMut,
    ended: bool,
    /// The client reset the stream before it ended its side.
    reset: bool,
    /// Bytes the handler took since the connection last gave them back
    /// to the client's window.
    taken: u32,
    /// The handler's, to wake when frames come in.
    waker: Option<Waker>,
    /// The stream's, to have the connection give what was taken back to
    /// the window.
    stream: Option<Waker>,
}

fn lock(inflow: &Mutex<Inflow>) -> std::sync::MutexGuard<'_, Inflow> {
    inflow.lock().unwrap_or_else(|p| p.into_inner())
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let mut inflow = lock(&self.inflow);
        if !inflow.data.is_empty() {
            let data = std::mem::take(&mut inflow.data).freeze();
            if inflow.taken == 0
                && let Some(stream) = &inflow.stream
            {
                // The window is given back by the connection's task.
                stream.wake_by_ref();
            }
            inflow.taken = inflow.taken.saturating_add(data.len() as u32);
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        if inflow.reset {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the client reset the stream",
            ))));
        }
        if inflow.ended {
            return Poll::Ready(None);
        }
        inflow.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let inflow = lock(&self.inflow);
        inflow.ended && inflow.data.is_empty()
    }
}

/// A delta stream's request body: its [`DeltaBody`] is polled by the
/// connection's task, right after the connection puts the frames in.
#[derive(Default)]
pub(crate) struct Inbox {
    data: BytesMut,
    ended: bool,
    taken: u32,
}

impl http_body::Body for Inbox {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if !this.data.is_empty() {
            let data = std::mem::take(&mut this.data).freeze();
            this.taken = this.taken.saturating_add(data.len() as u32);
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        if this.ended {
            Poll::Ready(None)
        } else {
            // The connection polls the stream again when frames come in.
            Poll::Pending
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.data.is_empty()
    }
}

/// Wakes the connection's task and marks its stream (or its socket) to be
/// polled.
struct StreamWake {
    ready: AtomicBool,
    connection: Arc<AtomicWaker>,
}

impl StreamWake {
    /// Marks the stream to be polled, from the connection's own task. A
    /// read-modify-write, not a store: a wake from another thread just
    /// before (a new snapshot) stays in the flag's release sequence, so the
    /// poll that takes the flag also sees what that thread wrote before
    /// waking (the snapshot watch's fast path relies on it).
    fn mark(&self) {
        self.ready.fetch_or(true, Ordering::Relaxed);
    }
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A read-modify-write too (see `mark`): two threads waking the
        // stream at once both stay in the release sequence.
        self.ready.fetch_or(true, Ordering::Release);
        self.connection.wake();
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

enum Handler<B> {
    Delta(Box<DeltaBody<Inbox>>),
    Call {
        inflow: Arc<Mutex<Inflow>>,
        response: Option<BoxFuture<http::Response<B>>>,
        body: Option<Pin<Box<B>>>,
    },
}

struct Stream<B> {
    id: u32,
    handler: Handler<B>,
    wake: Arc<StreamWake>,
    waker: Waker,
    /// What the client's window for this stream still takes from us.
    send_window: i64,
    /// What our window for this stream still takes from the client.
    recv_window: i64,
    /// Taken by the handler and not given back to the window yet.
    recv_unacked: u32,
    /// Response bytes waiting for window.
    queued: VecDeque<Bytes>,
    /// How the response ends, once the handler said.
    end: Option<End>,
    remote_closed: bool,
    finished: bool,
}

/// How a response ends.
enum End {
    /// With trailers (gRPC's status).
    Trailers(http::HeaderMap),
    /// With its last DATA.
    Data,
    /// With RST_STREAM and this code: the response body failed.
    Reset(u32),
}

impl<B> Drop for Stream<B> {
    fn drop(&mut self) {
        // A handler still reading the request learns it ends here.
        if let Handler::Call { inflow, .. } = &self.handler {
            let mut inflow = lock(inflow);
            inflow.reset |= !inflow.ended;
            inflow.ended = true;
            if let Some(w) = inflow.waker.take() {
                w.wake();
            }
        }
    }
}

/// Frames on their way out, and the connection's send window.
struct Out {
    buf: BytesMut,
    window: i64,
    max_frame: usize,
}

impl Out {
    fn head(&mut self, len: usize, ty: u8, flags: u8, stream: u32) {
        self.buf.reserve(9 + len);
        self.buf.put_uint(len as u64, 3);
        self.buf.put_u8(ty);
        self.buf.put_u8(flags);
        self.buf.put_u32(stream & 0x7fff_ffff);
    }

    fn settings(&mut self) {
        // MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_HEADER_LIST_SIZE.
        self.head(18, frame::SETTINGS, 0, 0);
        self.buf.put_u16(0x3);
        self.buf.put_u32(MAX_STREAMS);
        self.buf.put_u16(0x4);
        self.buf.put_u32(WINDOW);
        self.buf.put_u16(0x6);
        self.buf.put_u32(MAX_HEADER_LIST as u32);
    }

    fn window_update(&mut self, stream: u32, increment: u32) {
        self.head(4, frame::WINDOW_UPDATE, 0, stream);
        self.buf.put_u32(increment);
    }

    fn rst_stream(&mut self, stream: u32, code: u32) {
        self.head(4, frame::RST_STREAM, 0, stream);
        self.buf.put_u32(code);
    }

    fn goaway(&mut self, last: u32, code: u32, reason: &str) {
        self.head(8 + reason.len(), frame::GOAWAY, 0, 0);
        self.buf.put_u32(last);
        self.buf.put_u32(code);
        self.buf.put_slice(reason.as_bytes());
    }

    /// A header block: one HEADERS frame, CONTINUATIONs if it is larger
    /// than the client takes in one frame.
    fn headers(&mut self, stream: u32, block: &[u8], end_stream: bool) {
        let mut chunks = block.chunks(self.max_frame.max(1)).peekable();
        let mut ty = frame::HEADERS;
        let mut flags = if end_stream { flag::END_STREAM } else { 0 };
        if chunks.peek().is_none() {
            self.head(0, ty, flags | flag::END_HEADERS, stream);
            return;
        }
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_none() {
                flags |= flag::END_HEADERS;
            }
            self.head(chunk.len(), ty, flags, stream);
            self.buf.put_slice(chunk);
            ty = frame::CONTINUATION;
            flags = 0;
        }
    }

    /// As much of `s`'s queued response as the windows let out, then its
    /// end once nothing is left (a reset at once).
    fn send<B>(&mut self, s: &mut Stream<B>) {
        while let Some(front) = s.queued.front_mut() {
            let room = self.window.min(s.send_window);
            if room <= 0 || matches!(s.end, Some(End::Reset(_))) {
                break;
            }
            let n = front.len().min(room as usize).min(self.max_frame);
            self.head(n, frame::DATA, 0, s.id);
            self.buf.put_slice(&front[..n]);
            front.advance(n);
            self.window -= n as i64;
            s.send_window -= n as i64;
            if front.is_empty() {
                s.queued.pop_front();
            }
        }
        if !s.queued.is_empty() && !matches!(s.end, Some(End::Reset(_))) {
            return;
        }
        if let Some(end) = s.end.take() {
            match end {
                End::Trailers(trailers) => {
                    let mut block = Vec::with_capacity(64);
                    for (name, value) in &trailers {
                        put_literal(&mut block, name.as_str().as_bytes(), value.as_bytes());
                    }
                    self.headers(s.id, &block, true);
                }
                End::Data => self.head(0, frame::DATA, flag::END_STREAM, s.id),
                End::Reset(code) => {
                    s.queued.clear();
                    self.rst_stream(s.id, code);
                    s.finished = true;
                    return;
                }
            }
            if !s.remote_closed {
                // The response is whole: nothing the client still sends matters.
                self.rst_stream(s.id, code::NO_ERROR);
            }
            s.finished = true;
        }
    }
}

/// A response's header block: `:status` and the headers.
fn response_block(status: http::StatusCode, headers: &http::HeaderMap) -> Vec<u8> {
    let mut block = Vec::with_capacity(64);
    if status == http::StatusCode::OK {
        // Indexed: static table entry 8.
        block.push(0x88);
    } else {
        // Literal without indexing, name from static table entry 8.
        put_int(&mut block, 4, 0, 8);
        put_int(&mut block, 7, 0, 3);
        block.extend_from_slice(status.as_str().as_bytes());
    }
    for (name, value) in headers {
        // Connection-specific headers have no place in HTTP/2.
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
        ) {
            continue;
        }
        put_literal(&mut block, name.as_str().as_bytes(), value.as_bytes());
    }
    block
}

/// A delta stream's response headers: `:status: 200`, then
/// `content-type: application/grpc` (a literal with the name of static
/// table entry 31).
const DELTA_RESPONSE_BLOCK: &[u8] = b"\x88\x0f\x10\x10application/grpc";

/// A frame: type, flags, stream, payload.
type Frame<'a> = (u8, u8, u32, &'a [u8]);

/// One frame at the front of `buf`, and what follows it. `None` until the
/// whole frame is there.
fn split_frame(buf: &[u8]) -> Option<(Frame<'_>, &[u8])> {
    let head = buf.get(..9)?;
    let len = announced_len(head)?;
    let payload = buf.get(9..9 + len)?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(((head[3], head[4], stream, payload), &buf[9 + len..]))
}

/// The length a frame announces (to refuse it before it is all in).
fn announced_len(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..3)?;
    Some((usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]))
}

/// A frame's payload without its padding (and a HEADERS frame's priority).
fn unpadded(flags: u8, payload: &[u8], priority: bool) -> Result<&[u8], ConnectionError> {
    let mut p = payload;
    let mut pad = 0;
    if flags & flag::PADDED != 0 {
        let (&n, rest) = p
            .split_first()
            .ok_or_else(|| protocol(code::FRAME_SIZE_ERROR, "a padded frame without its length"))?;
        pad = usize::from(n);
        p = rest;
    }
    if priority && flags & flag::PRIORITY != 0 {
        p = p.get(5..).ok_or_else(|| {
            protocol(code::FRAME_SIZE_ERROR, "HEADERS too short for its priority")
        })?;
    }
    if pad > p.len() {
        return Err(protocol(
            code::PROTOCOL_ERROR,
            "padding longer than the frame",
        ));
    }
    Ok(&p[..p.len() - pad])
}

struct Connection<IO, F, B> {
    io: IO,
    ads: AdsService,
    handle: F,
    received: BytesMut,
    preface: bool,
    out: Out,
    flush: bool,
    decoder: hpack::Decoder,
    /// A header block still waiting for its CONTINUATIONs: stream,
    /// END_STREAM, bytes so far.
    block: Option<(u32, bool, Vec<u8>)>,
    /// The initial window the client gives each stream.
    peer_window: i64,
    /// What our connection window still takes from the client.
    recv_window: i64,
    /// Received on the connection and not given back yet.
    recv_unacked: u32,
    last_stream: u32,
    streams: Vec<Stream<B>>,
    waker: Arc<AtomicWaker>,
    /// The waker reads register with the socket: it marks the socket
    /// readable and wakes the connection's task.
    read_wake: Arc<StreamWake>,
    read_waker: Waker,
    /// The last read ended `Pending`: the socket will wake `read_wake`.
    read_armed: bool,
    goaway: bool,
    read_closed: bool,
    /// Streams reset by the client or refused by us since `resets_since`.
    resets: u32,
    resets_since: tokio::time::Instant,
}

/// Serves one HTTP/2 connection (after TLS and ALPN): delta ADS streams
/// ([`DELTA_PATH`]) with `ads`, every other request with `handle`.
/// Returns when the client closes the connection, or with the error that
/// ended it.
pub async fn serve<IO, F, Fut, B>(
    ads: &AdsService,
    io: IO,
    handle: F,
) -> Result<(), ConnectionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(http::Request<RequestBody>) -> Fut,
    Fut: Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let waker = Arc::new(AtomicWaker::new());
    let read_wake = Arc::new(StreamWake {
        ready: AtomicBool::new(false),
        connection: waker.clone(),
    });
    let mut c = Connection {
        io,
        ads: ads.clone(),
        handle,
        received: BytesMut::new(),
        preface: false,
        out: Out {
            buf: BytesMut::new(),
            window: DEFAULT_WINDOW,
            max_frame: MAX_FRAME,
        },
        flush: false,
        decoder: hpack::Decoder::default(),
        block: None,
        peer_window: DEFAULT_WINDOW,
        recv_window: i64::from(WINDOW),
        recv_unacked: 0,
        last_stream: 0,
        streams: Vec::new(),
        waker: waker.clone(),
        read_waker: Waker::from(read_wake.clone()),
        read_wake,
        read_armed: false,
        goaway: false,
        read_closed: false,
        resets: 0,
        resets_since: tokio::time::Instant::now(),
    };
    c.out.settings();
    c.out.window_update(0, WINDOW - DEFAULT_WINDOW as u32);
    let served = std::future::poll_fn(|cx| c.poll(cx)).await;
    if let Err(ConnectionError::Protocol { code, reason }) = &served {
        debug!(code, reason, "HTTP/2 connection refused");
        c.out.goaway(c.last_stream, *code, reason);
        c.flush = true;
        // Written and shut down (TLS close_notify): a close with unread
        // input pending would reset the TCP connection and could lose it.
        let said = async {
            std::future::poll_fn(|cx| c.poll_write(cx)).await?;
            std::future::poll_fn(|cx| Pin::new(&mut c.io).poll_shutdown(cx)).await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), said).await;
    }
    served
}

impl<IO, F, Fut, B> Connection<IO, F, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(http::Request<RequestBody>) -> Fut,
    Fut: Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        self.waker.register(cx.waker());
        loop {
            let mut again = false;
            // Nothing more is read while the client does not read what
            // it is sent (PINGs and SETTINGS are answered in `out`).
            // Read when the socket woke us, or when no read is waiting on
            // it: a stream's wake (a snapshot to push) costs no read.
            let due = self.read_wake.ready.swap(false, Ordering::Acquire) || !self.read_armed;
            if due && !self.read_closed && self.out.buf.len() < WRITE_HIGH {
                self.read_armed = false;
                let waker = self.read_waker.clone();
                match self.poll_read(&mut Context::from_waker(&waker)) {
                    Poll::Ready(Ok(0)) => self.read_closed = true,
                    Poll::Ready(Ok(_)) => again = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => self.read_armed = true,
                }
            } else if due {
                // Not read now (output backed up), and the socket's wake is
                // spent: read once the output drains (see below).
                self.read_armed = false;
            }
            if self.read_closed {
                // The client is gone (or half-closed its side, which
                // HTTP/2 has no use for): so are its streams.
                return Poll::Ready(Ok(()));
            }
            again |= self.poll_streams();
            match self.poll_write(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Ready(Ok(())) => {}
                Poll::Pending => again = false,
            }
            if self.goaway && self.streams.is_empty() && self.out.buf.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if !again {
                // Never parked without a read waiting on the socket, unless
                // the client is not reading what it is sent (the write
                // waits then, and wakes us).
                if !self.read_armed && !self.read_closed && self.out.buf.len() < WRITE_HIGH {
                    continue;
                }
                return Poll::Pending;
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.buf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out.buf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.out.buf.advance(n);
                    self.flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.out.buf.capacity() > 16 * 1024 {
            // Written: a connection keeps no large buffer after a large response.
            self.out.buf = BytesMut::new();
        }
        if self.flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads what the client sent and handles every whole frame of it.
    /// A connection keeps a buffer only for a frame not yet whole; the
    /// rest is read into its thread's scratch buffer.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ConnectionError>> {
        if !self.received.is_empty() {
            let mut received = std::mem::take(&mut self.received);
            let read = self.read_into(cx, &mut received);
            if !received.is_empty() {
                self.received = received;
            }
            return read;
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                let read = self.read_into(cx, &mut buf);
                if !buf.is_empty() {
                    self.received = BytesMut::from(&buf[..]);
                }
                read
            }
            // Not while another connection's read is under way on this
            // thread (it is not: reads do not nest), but never a panic.
            Err(_) => {
                let mut received = BytesMut::new();
                let read = self.read_into(cx, &mut received);
                self.received = received;
                read
            }
        })
    }

    /// One read into `buf`, then the frames in it; what is left of `buf`
    /// is the start of a frame not yet whole.
    fn read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<Result<usize, ConnectionError>> {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let n = match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, buf) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Pending => return Poll::Pending,
        };
        let used = self.frames(buf)?;
        buf.advance(used);
        Poll::Ready(Ok(n))
    }

    /// Handles every whole frame in `received`; returns the bytes used.
    fn frames(&mut self, received: &[u8]) -> Result<usize, ConnectionError> {
        let mut rest = received;
        if !self.preface {
            let n = rest.len().min(PREFACE.len());
            if rest[..n] != PREFACE[..n] {
                return Err(protocol(
                    code::PROTOCOL_ERROR,
                    "not the HTTP/2 client preface",
                ));
            }
            if n < PREFACE.len() {
                return Ok(0);
            }
            rest = &rest[PREFACE.len()..];
            self.preface = true;
        }
        loop {
            if announced_len(rest).is_some_and(|len| len > MAX_FRAME) {
                return Err(protocol(code::FRAME_SIZE_ERROR, "a frame over 16384 bytes"));
            }
            let Some(((ty, flags, stream, payload), next)) = split_frame(rest) else {
                return Ok(received.len() - rest.len());
            };
            self.frame(ty, flags, stream, payload)?;
            rest = next;
        }
    }

    fn frame(
        &mut self,
        ty: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> Result<(), ConnectionError> {
        if let Some((open, _, _)) = &self.block
            && (ty != frame::CONTINUATION || stream != *open)
        {
            return Err(protocol(
                code::PROTOCOL_ERROR,
                "a header block interrupted before its END_HEADERS",
            ));
        }
        match ty {
            frame::DATA => self.data(flags, stream, payload),
            frame::HEADERS => {
                if stream == 0 {
                    return Err(protocol(code::PROTOCOL_ERROR, "HEADERS on stream 0"));
                }
                let fragment = unpadded(flags, payload, true)?;
                let end_stream = flags & flag::END_STREAM != 0;
                if flags & flag::END_HEADERS != 0 {
                    self.header_block(stream, end_stream, fragment)
                } else {
                    self.block = Some((stream, end_stream, fragment.to_vec()));
                    Ok(())
                }
            }
            frame::CONTINUATION => {
                let Some((open, end_stream, mut block)) = self.block.take() else {
                    return Err(protocol(
                        code::PROTOCOL_ERROR,
                        "CONTINUATION without HEADERS",
                    ));
                };
                block.extend_from_slice(payload);
                if block.len() > MAX_HEADER_BLOCK {
                    return Err(protocol(code::PROTOCOL_ERROR, "a header block over 64 KB"));
                }
                if flags & flag::END_HEADERS != 0 {
                    self.header_block(open, end_stream, &block)
                } else {
                    self.block = Some((open, end_stream, block));
                    Ok(())
                }
            }
            frame::RST_STREAM => {
                if stream == 0 {
                    return Err(protocol(code::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
                }
                if payload.len() != 4 {
                    return Err(protocol(
                        code::FRAME_SIZE_ERROR,
                        "a RST_STREAM not 4 bytes long",
                    ));
                }
                // Dropped: a delta stream announces its disconnect, a
                // handler's request body ends with an error.
                let Some(i) = self.streams.iter().position(|s| s.id == stream) else {
                    return Ok(());
                };
                self.streams.remove(i);
                self.count_reset()
            }
            frame::SETTINGS => self.settings(flags, stream, payload),
            frame::PUSH_PROMISE => {
                Err(protocol(code::PROTOCOL_ERROR, "PUSH_PROMISE from a client"))
            }
            frame::PING => {
                if stream != 0 {
                    return Err(protocol(code::PROTOCOL_ERROR, "PING on a stream"));
                }
                if payload.len() != 8 {
                    return Err(protocol(code::FRAME_SIZE_ERROR, "a PING not 8 bytes long"));
                }
                if flags & flag::ACK == 0 {
                    self.out.head(8, frame::PING, flag::ACK, 0);
                    self.out.buf.put_slice(payload);
                }
                Ok(())
            }
            frame::GOAWAY => {
                self.goaway = true;
                Ok(())
            }
            frame::WINDOW_UPDATE => {
                let Ok(raw) = <[u8; 4]>::try_from(payload) else {
                    return Err(protocol(
                        code::FRAME_SIZE_ERROR,
                        "a malformed WINDOW_UPDATE",
                    ));
                };
                let increment = i64::from(u32::from_be_bytes(raw) & 0x7fff_ffff);
                if increment == 0 {
                    return Err(protocol(code::PROTOCOL_ERROR, "a WINDOW_UPDATE of 0"));
                }
                let window = if stream == 0 {
                    &mut self.out.window
                } else if let Some(s) = self.streams.iter_mut().find(|s| s.id == stream) {
                    &mut s.send_window
                } else {
                    return Ok(());
                };
                *window += increment;
                if *window > i64::from(i32::MAX) {
                    return Err(protocol(
                        code::FLOW_CONTROL_ERROR,
                        "a window over 2^31-1 bytes",
                    ));
                }
                Ok(())
            }
            // PRIORITY, and types this side does not know: ignored.
            _ => Ok(()),
        }
    }

    fn settings(&mut self, flags: u8, stream: u32, payload: &[u8]) -> Result<(), ConnectionError> {
        if stream != 0 {
            return Err(protocol(code::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if flags & flag::ACK != 0 {
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(protocol(
                    code::FRAME_SIZE_ERROR,
                    "a SETTINGS ACK with a payload",
                ))
            };
        }
        if !payload.len().is_multiple_of(6) {
            return Err(protocol(
                code::FRAME_SIZE_ERROR,
                "a SETTINGS frame of a broken length",
            ));
        }
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                // INITIAL_WINDOW_SIZE: every open stream's window moves by the difference.
                0x4 => {
                    if value > i32::MAX as u32 {
                        return Err(protocol(
                            code::FLOW_CONTROL_ERROR,
                            "an INITIAL_WINDOW_SIZE over 2^31-1",
                        ));
                    }
                    let delta = i64::from(value) - self.peer_window;
                    self.peer_window = i64::from(value);
                    for s in &mut self.streams {
                        s.send_window += delta;
                    }
                }
                // MAX_FRAME_SIZE.
                0x5 => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(protocol(
                            code::PROTOCOL_ERROR,
                            "a MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.out.max_frame = value as usize;
                }
                // ENABLE_PUSH must be 0 or 1; this side never pushes.
                0x2 if value > 1 => {
                    return Err(protocol(
                        code::PROTOCOL_ERROR,
                        "an ENABLE_PUSH other than 0 or 1",
                    ));
                }
                // HEADER_TABLE_SIZE (responses use no dynamic table),
                // MAX_CONCURRENT_STREAMS (this side opens none), the rest.
                _ => {}
            }
        }
        self.out.head(0, frame::SETTINGS, flag::ACK, 0);
        Ok(())
    }

    fn data(&mut self, flags: u8, stream: u32, payload: &[u8]) -> Result<(), ConnectionError> {
        if stream == 0 {
            return Err(protocol(code::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        // The whole frame counts against the windows, padding included.
        // What a handler gets is given back once it took it; the rest (the
        // padding, frames of streams already gone) at once.
        let len = payload.len() as u32;
        self.recv_window -= i64::from(len);
        if self.recv_window < 0 {
            return Err(protocol(
                code::FLOW_CONTROL_ERROR,
                "DATA over the connection window",
            ));
        }
        let data = unpadded(flags, payload, false)?;
        let padding = len - data.len() as u32;
        let end_stream = flags & flag::END_STREAM != 0;
        let Some(i) = self.streams.iter().position(|s| s.id == stream) else {
            if stream > self.last_stream {
                return Err(protocol(
                    code::PROTOCOL_ERROR,
                    "DATA on a stream never opened",
                ));
            }
            // A stream this side ended or reset: what was in flight is dropped.
            self.give_back(len);
            return Ok(());
        };
        let s = &mut self.streams[i];
        s.recv_window -= i64::from(len);
        if s.remote_closed || s.recv_window < 0 {
            let code = if s.remote_closed {
                code::STREAM_CLOSED
            } else {
                code::FLOW_CONTROL_ERROR
            };
            self.out.rst_stream(stream, code);
            self.streams.remove(i);
            self.give_back(len);
            return Ok(());
        }
        s.recv_unacked += padding;
        s.remote_closed = end_stream;
        match &mut s.handler {
            Handler::Delta(body) => {
                let inbox = body.request_body_mut();
                inbox.data.extend_from_slice(data);
                inbox.ended |= end_stream;
                s.wake.mark();
            }
            Handler::Call { inflow, .. } => {
                let mut inflow = lock(inflow);
                inflow.data.extend_from_slice(data);
                inflow.ended |= end_stream;
                if let Some(w) = inflow.waker.take() {
                    w.wake();
                }
            }
        }
        self.give_back(padding);
        Ok(())
    }

    /// Gives `n` received bytes back to the client's connection window,
    /// once half the window is due (a WINDOW_UPDATE per ACK would cost
    /// a write each).
    fn give_back(&mut self, n: u32) {
        self.recv_unacked += n;
        if self.recv_unacked >= WINDOW / 2 {
            self.out.window_update(0, self.recv_unacked);
            self.recv_window += i64::from(self.recv_unacked);
            self.recv_unacked = 0;
        }
    }

    /// Counts a stream reset by the client or refused by us; too many in
    /// 10 s end the connection.
    fn count_reset(&mut self) -> Result<(), ConnectionError> {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.resets_since) > std::time::Duration::from_secs(10) {
            self.resets = 0;
            self.resets_since = now;
        }
        self.resets += 1;
        if self.resets > MAX_RESETS {
            return Err(protocol(
                code::ENHANCE_YOUR_CALM,
                "too many streams reset or refused",
            ));
        }
        Ok(())
    }

    fn header_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnectionError> {
        // Decoded whatever the stream: the block moves the HPACK table.
        let mut method = None;
        let mut path = None;
        let mut authority = None;
        let mut scheme = None;
        let mut headers = http::HeaderMap::new();
        let mut malformed = false;
        // Past the announced size, fields are decoded (the table must move
        // on) and dropped.
        let mut list_size = 0usize;
        self.decoder
            .decode(block, |name, value| {
                list_size += name.len() + value.len() + 32;
                if list_size > MAX_HEADER_LIST {
                    return;
                }
                let value_str = || String::from_utf8(value.to_vec()).ok();
                match name {
                    b":method" => method = value_str(),
                    b":path" => path = value_str(),
                    b":authority" => authority = value_str(),
                    b":scheme" => scheme = value_str(),
                    n if n.starts_with(b":") => malformed = true,
                    n => match (
                        http::HeaderName::from_bytes(n),
                        http::HeaderValue::from_bytes(value),
                    ) {
                        (Ok(n), Ok(v)) => {
                            headers.append(n, v);
                        }
                        _ => malformed = true,
                    },
                }
            })
            .map_err(|hpack::Error(reason)| protocol(code::COMPRESSION_ERROR, reason))?;

        if let Some(s) = self.streams.iter_mut().find(|s| s.id == stream) {
            // Trailers: they end the client's side; gRPC puts nothing in them.
            if !end_stream {
                return Err(protocol(
                    code::PROTOCOL_ERROR,
                    "a second HEADERS without END_STREAM",
                ));
            }
            s.remote_closed = true;
            match &mut s.handler {
                Handler::Delta(body) => body.request_body_mut().ended = true,
                Handler::Call { inflow, .. } => {
                    let mut inflow = lock(inflow);
                    inflow.ended = true;
                    if let Some(w) = inflow.waker.take() {
                        w.wake();
                    }
                }
            }
            s.wake.mark();
            return Ok(());
        }
        if stream.is_multiple_of(2) || stream <= self.last_stream {
            if !stream.is_multiple_of(2) {
                // A stream this side already ended.
                self.out.rst_stream(stream, code::STREAM_CLOSED);
                return Ok(());
            }
            return Err(protocol(
                code::PROTOCOL_ERROR,
                "a client stream with an even id",
            ));
        }
        self.last_stream = stream;
        if self.goaway || self.streams.len() >= MAX_STREAMS as usize {
            self.out.rst_stream(stream, code::REFUSED_STREAM);
            return self.count_reset();
        }
        if list_size > MAX_HEADER_LIST {
            let block = response_block(
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &http::HeaderMap::new(),
            );
            self.out.headers(stream, &block, true);
            if !end_stream {
                self.out.rst_stream(stream, code::NO_ERROR);
            }
            return Ok(());
        }
        let uri = match (method.as_ref(), path, malformed) {
            (Some(_), Some(path), false) if path.starts_with('/') => {
                let uri = http::Uri::builder().path_and_query(path);
                match (scheme, authority) {
                    (Some(scheme), Some(authority)) => {
                        uri.scheme(scheme.as_str()).authority(authority)
                    }
                    _ => uri,
                }
                .build()
            }
            _ => {
                self.out.rst_stream(stream, code::PROTOCOL_ERROR);
                return Ok(());
            }
        };
        let (Some(method), Ok(uri)) = (method, uri) else {
            self.out.rst_stream(stream, code::PROTOCOL_ERROR);
            return Ok(());
        };
        let delta = method == "POST" && uri.path() == DELTA_PATH;
        let request = http::Request::builder()
            .method(method.as_str())
            .uri(uri)
            .version(http::Version::HTTP_2);
        let wake = Arc::new(StreamWake {
            ready: AtomicBool::new(true),
            connection: self.waker.clone(),
        });
        let handler = if delta {
            let inbox = Inbox {
                ended: end_stream,
                ..Default::default()
            };
            let Ok(mut request) = request.body(inbox) else {
                self.out.rst_stream(stream, code::PROTOCOL_ERROR);
                return Ok(());
            };
            *request.headers_mut() = headers;
            self.out.headers(stream, DELTA_RESPONSE_BLOCK, false);
            Handler::Delta(Box::new(self.ads.delta(request).into_body()))
        } else {
            let inflow = Arc::new(Mutex::new(Inflow {
                ended: end_stream,
                stream: Some(Waker::from(wake.clone())),
                ..Default::default()
            }));
            let body = RequestBody {
                inflow: inflow.clone(),
            };
            let Ok(mut request) = request.body(body) else {
                self.out.rst_stream(stream, code::PROTOCOL_ERROR);
                return Ok(());
            };
            *request.headers_mut() = headers;
            Handler::Call {
                inflow,
                response: Some(Box::pin((self.handle)(request))),
                body: None,
            }
        };
        self.streams.push(Stream {
            id: stream,
            handler,
            waker: Waker::from(wake.clone()),
            wake,
            send_window: self.peer_window,
            recv_window: i64::from(WINDOW),
            recv_unacked: 0,
            queued: VecDeque::new(),
            end: None,
            remote_closed: end_stream,
            finished: false,
        });
        Ok(())
    }

    /// Polls the streams that were woken or got frames, and writes what
    /// they answer as far as the windows let it. Returns whether a stream
    /// was left unpolled for want of room in the write buffer.
    fn poll_streams(&mut self) -> bool {
        let mut deferred = false;
        let mut given = 0;
        for s in &mut self.streams {
            if s.finished {
                continue;
            }
            // Window first: a stream with a response still queued takes
            // no more from its handler.
            self.out.send(s);
            if !s.queued.is_empty() || s.end.is_some() || s.finished {
                continue;
            }
            if !s.wake.ready.swap(false, Ordering::Acquire) {
                continue;
            }
            if self.out.buf.len() >= WRITE_HIGH {
                s.wake.mark();
                deferred = true;
                continue;
            }
            let mut cx = Context::from_waker(&s.waker);
            let taken = match &mut s.handler {
                Handler::Delta(body) => {
                    poll_body(Pin::new(&mut **body), &mut cx, &mut s.queued, &mut s.end);
                    std::mem::take(&mut body.request_body_mut().taken)
                }
                Handler::Call {
                    inflow,
                    response,
                    body,
                } => {
                    if let Some(fut) = response
                        && let Poll::Ready(resp) = fut.as_mut().poll(&mut cx)
                    {
                        *response = None;
                        let (parts, b) = resp.into_parts();
                        let block = response_block(parts.status, &parts.headers);
                        // An empty body ends the stream with the headers
                        // (gRPC's trailers-only responses).
                        let whole = http_body::Body::is_end_stream(&b);
                        self.out.headers(s.id, &block, whole);
                        if whole {
                            if !s.remote_closed {
                                self.out.rst_stream(s.id, code::NO_ERROR);
                            }
                            s.finished = true;
                        } else {
                            *body = Some(Box::pin(b));
                        }
                    }
                    if let Some(b) = body {
                        poll_body(b.as_mut(), &mut cx, &mut s.queued, &mut s.end);
                    }
                    std::mem::take(&mut lock(inflow).taken)
                }
            };
            // What the handler took, given back to the client's windows
            // once it is half the window (ACKs are small: most never
            // cost a WINDOW_UPDATE).
            given += taken;
            s.recv_unacked += taken;
            if s.recv_unacked >= WINDOW / 2 && !s.remote_closed {
                s.recv_window += i64::from(s.recv_unacked);
                self.out.window_update(s.id, s.recv_unacked);
                s.recv_unacked = 0;
            }
            self.out.send(s);
        }
        self.streams.retain(|s| !s.finished);
        self.give_back(given);
        deferred
    }
}

/// Takes frames from a response body until it has nothing ready, up to
/// 32 KB at a time, or its end.
fn poll_body<Bd>(
    mut body: Pin<&mut Bd>,
    cx: &mut Context<'_>,
    queued: &mut VecDeque<Bytes>,
    end: &mut Option<End>,
) where
    Bd: http_body::Body<Data = Bytes> + ?Sized,
    Bd::Error: std::fmt::Display,
{
    let mut taken = 0;
    while taken < 32 * 1024 {
        match body.as_mut().poll_frame(cx) {
            Poll::Pending => return,
            Poll::Ready(None) => {
                *end = Some(End::Data);
                return;
            }
            Poll::Ready(Some(Err(error))) => {
                // Not a clean end: the client must not take what it got
                // for the whole response.
                debug!(%error, "response body failed");
                *end = Some(End::Reset(code::INTERNAL_ERROR));
                return;
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    taken += data.len();
                    if !data.is_empty() {
                        queued.push_back(data);
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        *end = Some(End::Trailers(trailers));
                        return;
                    }
                }
            },
        }
    }
    // More may be ready: look again on the next turn.
    cx.waker().wake_by_ref();
}
