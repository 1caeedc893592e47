//! Accepts the HTTP/2 `:authority` that etcdctl 3.4 sends on per-endpoint calls.
//!
//! etcdctl 3.4 dials maintenance calls (`endpoint status`, also with `--cluster`, which takes
//! the endpoints from the members' client URLs) with the target `passthrough:///http://h:p`,
//! so grpc-go sends `http://h:p` as `:authority`. etcd's Go server ignores that; hyper's h2
//! rejects it as a malformed header and resets the stream. [`AuthorityFix`] sits between the
//! socket and the gRPC server: it reads the client's frames up to its first header block and,
//! if that block's authority carries a scheme, rewrites every header block of the connection
//! (HPACK-decoded and re-encoded, since the compression state spans the connection) with the
//! authority reduced to `h:p`. Every other connection is passed through untouched after its
//! first header block, at no further cost.
//!
//! This module only transforms bytes; it must not interpret requests beyond the authority.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of an HTTP/2 frame header.
const FRAME_HEADER: usize = 9;
/// HTTP/2's default maximum frame payload; re-encoded blocks are split to fit it.
const MAX_FRAME: usize = 16_384;
/// A larger frame is not buffered for inspection; the connection is passed through instead.
const MAX_INSPECTED_FRAME: usize = 1 << 20;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The accepted connections of `listener`, each wrapped in an [`AuthorityFix`].
pub(crate) fn fix_authority(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = io::Result<AuthorityFix<tokio::net::TcpStream>>> {
    crate::tcp::incoming_nodelay(listener).map(|conn| conn.map(AuthorityFix::new))
}

/// What the fixer does with the client's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Waiting for the connection preface.
    Preface,
    /// Forwarding frames until the first header block decides.
    Inspect,
    /// Re-encoding every header block with a fixed authority.
    Rewrite,
    /// Forwarding everything as it comes.
    Passthrough,
}

/// A header block being collected from a HEADERS frame and its CONTINUATION frames.
struct Block {
    /// The frames as received.
    raw: Vec<u8>,
    /// The concatenated header block fragment.
    fragment: Vec<u8>,
    stream_id: u32,
    /// END_STREAM of the HEADERS frame.
    end_stream: bool,
    /// The priority fields of the HEADERS frame, if it had them.
    priority: Option<[u8; 5]>,
}

/// The byte transformation, separate from the I/O so it can be tested on its own.
struct Fixer {
    mode: Mode,
    /// Received, not yet processed.
    input: Vec<u8>,
    /// Processed, not yet handed to the server.
    output: Vec<u8>,
    block: Option<Block>,
    decoder: fluke_hpack::Decoder<'static>,
    encoder: fluke_hpack::Encoder<'static>,
}

impl Fixer {
    fn new() -> Self {
        Fixer {
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            block: None,
            decoder: fluke_hpack::Decoder::new(),
            encoder: fluke_hpack::Encoder::new(),
        }
    }

    /// Takes `bytes` from the client and moves what can be decided to the output.
    fn push(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        self.process();
    }

    /// The client closed its side: whatever is pending goes out as it is.
    fn finish(&mut self) {
        self.pass_through();
    }

    fn pass_through(&mut self) {
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.raw);
        }
        self.output.append(&mut self.input);
        self.mode = Mode::Passthrough;
    }

    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    self.output.append(&mut self.input);
                    return;
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        // Not HTTP/2 with prior knowledge: nothing to fix.
                        self.pass_through();
                        return;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.output.extend(self.input.drain(..PREFACE.len()));
                    self.mode = Mode::Inspect;
                }
                Mode::Inspect | Mode::Rewrite => {
                    if self.input.len() < FRAME_HEADER {
                        return;
                    }
                    let len = usize::from(self.input[0]) << 16
                        | usize::from(self.input[1]) << 8
                        | usize::from(self.input[2]);
                    if len > MAX_INSPECTED_FRAME {
                        self.pass_through();
                        return;
                    }
                    if self.input.len() < FRAME_HEADER + len {
                        return;
                    }
                    let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
                    self.frame(frame);
                }
            }
        }
    }

    fn frame(&mut self, frame: Vec<u8>) {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        if let Some(mut block) = self.block.take() {
            if kind != CONTINUATION || stream_id != block.stream_id {
                // A protocol error the server will report; stop interfering.
                block.raw.extend_from_slice(&frame);
                self.block = Some(block);
                self.pass_through();
                return;
            }
            block.fragment.extend_from_slice(payload);
            block.raw.extend_from_slice(&frame);
            return self.collect(block, flags & END_HEADERS != 0);
        }
        if kind != HEADERS {
            self.output.extend_from_slice(&frame);
            return;
        }
        let Some((priority, fragment)) = split_headers_payload(flags, payload) else {
            self.output.extend_from_slice(&frame);
            self.pass_through();
            return;
        };
        let block = Block {
            fragment: fragment.to_vec(),
            raw: frame.clone(),
            stream_id,
            end_stream: flags & END_STREAM != 0,
            priority,
        };
        self.collect(block, flags & END_HEADERS != 0);
    }

    fn collect(&mut self, block: Block, complete: bool) {
        if complete {
            self.finish_block(block);
        } else {
            self.block = Some(block);
        }
    }

    fn finish_block(&mut self, block: Block) {
        let Ok(mut headers) = self.decoder.decode(&block.fragment) else {
            // The server's decoder will fail the same way and close the connection.
            self.block = Some(block);
            self.pass_through();
            return;
        };
        let fixed = fix_authority_header(&mut headers);
        if self.mode == Mode::Inspect && !fixed {
            // The server decodes exactly what the client encoded: stay out of the way.
            self.output.extend_from_slice(&block.raw);
            self.pass_through();
            return;
        }
        if self.mode == Mode::Inspect {
            tracing::debug!("rewriting a client's HTTP/2 authority that carries a URL scheme");
        }
        self.mode = Mode::Rewrite;
        let mut encoded = Vec::new();
        let pairs = headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
        if self.encoder.encode_into(pairs, &mut encoded).is_err() {
            // Writing into a Vec cannot fail; keep the original if it ever does.
            self.output.extend_from_slice(&block.raw);
            return;
        }
        write_block(&mut self.output, &block, &encoded);
    }
}

/// Splits a HEADERS payload into its priority fields and header block fragment (without
/// padding); `None` if the lengths do not add up.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, tail) = rest.split_first()?;
        pad = usize::from(n);
        rest = tail;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let fields: [u8; 5] = rest.get(..5)?.try_into().ok()?;
        priority = Some(fields);
        rest = &rest[5..];
    }
    let end = rest.len().checked_sub(pad)?;
    Some((priority, &rest[..end]))
}

/// Reduces an `:authority` of the form `scheme://host:port[/...]` to `host:port`; whether it
/// changed anything.
fn fix_authority_header(headers: &mut [(Vec<u8>, Vec<u8>)]) -> bool {
    let Some((_, value)) = headers.iter_mut().find(|(n, _)| n == b":authority") else {
        return false;
    };
    let Some(pos) = value.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let rest = &value[pos + 3..];
    let host = rest.split(|b| *b == b'/').next().unwrap_or(rest).to_vec();
    *value = host;
    true
}

/// Writes `encoded` as a HEADERS frame plus CONTINUATION frames for `block`'s stream.
fn write_block(out: &mut Vec<u8>, block: &Block, encoded: &[u8]) {
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let first_room = MAX_FRAME - priority.len();
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = 0;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(
        out,
        priority.len() + first.len(),
        HEADERS,
        flags,
        block.stream_id,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), CONTINUATION, flags, block.stream_id);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream_id: u32) {
    // `len` is at most MAX_FRAME, so it fits the 24-bit length.
    let len = u32::try_from(len).unwrap_or(0).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// A server-side connection whose incoming header blocks get their authority fixed (see the
/// module docs); writes go straight to the socket.
pub(crate) struct AuthorityFix<S> {
    inner: S,
    fixer: Fixer,
    /// How much of `fixer.output` was already handed out.
    taken: usize,
}

impl<S> AuthorityFix<S> {
    /// Wraps an accepted connection.
    pub(crate) fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            fixer: Fixer::new(),
            taken: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let pending = &this.fixer.output[this.taken..];
            if !pending.is_empty() {
                let n = pending.len().min(buf.remaining());
                buf.put_slice(&pending[..n]);
                this.taken += n;
                if this.taken == this.fixer.output.len() {
                    this.fixer.output.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.fixer.mode == Mode::Passthrough {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.fixer.finish();
                if this.fixer.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            } else {
                this.fixer.push(read.filled());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    fn request(authority: &str, path: &str) -> Headers {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
        ]
        .into_iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// A client connection: preface, a SETTINGS frame, then HEADERS + DATA per request, encoded
    /// with one HPACK context as a real client does.
    fn client_bytes(requests: &[Headers]) -> Vec<u8> {
        let mut encoder = fluke_hpack::Encoder::new();
        let mut out = PREFACE.to_vec();
        frame_header(&mut out, 0, 0x4, 0, 0);
        for (i, headers) in requests.iter().enumerate() {
            let stream_id = u32::try_from(2 * i + 1).unwrap_or(1);
            let pairs = headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
            let block = encoder.encode(pairs);
            let b = Block {
                raw: Vec::new(),
                fragment: Vec::new(),
                stream_id,
                end_stream: false,
                priority: None,
            };
            write_block(&mut out, &b, &block);
            frame_header(&mut out, 5, 0x0, END_STREAM, stream_id);
            out.extend_from_slice(&[0, 0, 0, 0, 0]);
        }
        out
    }

    /// Decodes every header block of a client byte stream, as the server would.
    fn server_view(bytes: &[u8]) -> Vec<Headers> {
        let mut decoder = fluke_hpack::Decoder::new();
        let mut rest = &bytes[PREFACE.len()..];
        let mut blocks = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (frame, tail) = rest.split_at(FRAME_HEADER + len);
            if frame[3] == HEADERS {
                let decoded = decoder.decode(&frame[FRAME_HEADER..]);
                blocks.push(decoded.unwrap_or_default());
            }
            rest = tail;
        }
        blocks
    }

    /// Feeds `bytes` through a fixer in small pieces, as a socket would deliver them.
    fn through_fixer(bytes: &[u8]) -> Vec<u8> {
        let mut fixer = Fixer::new();
        for piece in bytes.chunks(7) {
            fixer.push(piece);
        }
        fixer.finish();
        fixer.output
    }

    fn authority(headers: &Headers) -> String {
        headers
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn an_authority_with_a_scheme_is_reduced_to_host_and_port_on_every_request() {
        let requests = vec![
            request("http://127.0.0.1:2379", "/etcdserverpb.Maintenance/Status"),
            request("http://127.0.0.1:2379", "/etcdserverpb.Cluster/MemberList"),
        ];
        let fixed = server_view(&through_fixer(&client_bytes(&requests)));
        assert_eq!(fixed.len(), 2);
        for (block, original) in fixed.iter().zip(&requests) {
            assert_eq!(authority(block), "127.0.0.1:2379");
            // Everything else is as the client sent it.
            let others = |h: &Headers| -> Headers {
                h.iter()
                    .filter(|(n, _)| n != b":authority")
                    .cloned()
                    .collect()
            };
            assert_eq!(others(block), others(original));
        }
    }

    #[test]
    fn a_well_formed_connection_passes_through_byte_for_byte() {
        let bytes = client_bytes(&[
            request("127.0.0.1:2379", "/etcdserverpb.KV/Range"),
            request("127.0.0.1:2379", "/etcdserverpb.KV/Put"),
        ]);
        assert_eq!(through_fixer(&bytes), bytes);
        let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through_fixer(&http1), http1);
    }

    #[test]
    fn padded_and_prioritised_headers_frames_are_understood() {
        let mut encoder = fluke_hpack::Encoder::new();
        let headers = request("http://h:1", "/p");
        let block = encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut bytes = PREFACE.to_vec();
        let payload_len = 1 + 5 + block.len() + 3;
        frame_header(
            &mut bytes,
            payload_len,
            HEADERS,
            END_HEADERS | PADDED | PRIORITY,
            1,
        );
        bytes.push(3);
        bytes.extend_from_slice(&[0, 0, 0, 0, 16]);
        bytes.extend_from_slice(&block);
        bytes.extend_from_slice(&[0, 0, 0]);
        let out = through_fixer(&bytes);
        let blocks = server_view(&out);
        // The re-encoded frame keeps the priority fields and drops the padding.
        let first = &out[PREFACE.len()..];
        assert_eq!(first[4], END_HEADERS | PRIORITY);
        assert_eq!(&first[FRAME_HEADER..FRAME_HEADER + 5], &[0, 0, 0, 0, 16]);
        let mut decoder = fluke_hpack::Decoder::new();
        let len = usize::from(first[1]) << 8 | usize::from(first[2]);
        let decoded = decoder
            .decode(&first[FRAME_HEADER + 5..FRAME_HEADER + len])
            .unwrap_or_default();
        assert_eq!(authority(&decoded), "h:1");
        assert_eq!(blocks.len(), 1);
    }
}
