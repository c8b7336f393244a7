//! The ADS gRPC service and the delta response as it goes on the wire.
//!
//! A resource shared by thousands of proxies is encoded once, as the delta
//! `Resource` message (name, version, `Any`), when its snapshot entry is
//! built ([`encode_resource`]). A delta response is then those encoded
//! entries, shared by reference, plus a type URL, a nonce and removed names
//! ([`EncodedDelta`]): no per-proxy copy of a resource, no re-encoding.
//!
//! [`AdsService`] serves both ADS methods: state of the world with the
//! generated message types, delta with [`EncodedDelta`].

use crate::server::{AdsServer, DeltaBody};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use prost::Message;
use prost::encoding::{self, WireType};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Status, Streaming};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The largest request a proxy may send (a NACK carries Envoy's error text).
const MAX_REQUEST: usize = 16 * 1024 * 1024;

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// The path of the delta ADS method.
pub const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

// DeltaDiscoveryResponse field numbers (envoy/service/discovery/v3/discovery.proto).
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;
const REMOVED_RESOURCES: u32 = 6;

/// The delta `Resource` message for one resource, encoded.
pub fn encode_resource(name: &str, version: &str, any: &Any) -> Bytes {
    Resource {
        name: name.to_string(),
        version: version.to_string(),
        resource: Some(any.clone()),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// A `DeltaDiscoveryResponse` whose resources are already encoded: the
/// same bytes as the generated message with those fields, written by
/// [`Outgoing::put_delta`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedDelta {
    pub type_url: &'static str,
    /// Encoded `Resource` messages ([`encode_resource`]).
    pub resources: Vec<Bytes>,
    pub removed_resources: Vec<String>,
    /// Sent as its decimal digits, as Envoy echoes it back.
    pub nonce: u64,
}

impl EncodedDelta {
    /// The length of the encoded message.
    pub fn encoded_len(&self) -> usize {
        let resources: usize = self
            .resources
            .iter()
            .map(|r| {
                encoding::key_len(RESOURCES)
                    + encoding::encoded_len_varint(r.len() as u64)
                    + r.len()
            })
            .sum();
        let string = |tag: u32, len: usize| {
            if len == 0 {
                0
            } else {
                encoding::key_len(tag) + encoding::encoded_len_varint(len as u64) + len
            }
        };
        resources
            + string(TYPE_URL, self.type_url.len())
            + string(NONCE, Decimal::new(self.nonce).as_bytes().len())
            + encoding::string::encoded_len_repeated(REMOVED_RESOURCES, &self.removed_resources)
    }
}

/// A nonce's decimal digits, without an allocation.
pub(crate) struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub(crate) fn new(mut n: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }

    pub(crate) fn as_str(&self) -> &str {
        // ASCII digits: always UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or("0")
    }
}

/// gRPC messages written since the last DATA frame.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    buf: BytesMut,
}

impl Outgoing {
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything written so far, as one DATA frame's bytes. The buffer
    /// goes with them: a stream mostly sits idle, and a buffer split off
    /// would keep its whole allocation (at first, the proxy's first push of
    /// everything) for as long as the stream runs.
    pub(crate) fn take(&mut self) -> Bytes {
        std::mem::take(&mut self.buf).freeze()
    }

    /// Appends `msg` as one gRPC message: an uncompressed flag, the length
    /// (4 bytes, big endian), the message. Returns the message's length.
    pub(crate) fn put_delta(&mut self, msg: &EncodedDelta) -> usize {
        let len = msg.encoded_len();
        let out = &mut self.buf;
        out.reserve(5 + len);
        out.put_u8(0);
        out.put_u32(len as u32);
        for r in &msg.resources {
            encoding::encode_key(RESOURCES, WireType::LengthDelimited, out);
            encoding::encode_varint(r.len() as u64, out);
            out.put_slice(r);
        }
        let mut string = |tag: u32, value: &[u8]| {
            if !value.is_empty() {
                encoding::encode_key(tag, WireType::LengthDelimited, out);
                encoding::encode_varint(value.len() as u64, out);
                out.put_slice(value);
            }
        };
        string(TYPE_URL, msg.type_url.as_bytes());
        string(NONCE, Decimal::new(msg.nonce).as_bytes());
        for name in &msg.removed_resources {
            encoding::string::encode(REMOVED_RESOURCES, name, out);
        }
        len
    }
}

/// A request message from its bytes; bytes that do not decode are
/// INVALID_ARGUMENT, saying why.
pub(crate) fn decode_message<M: Message + Default>(raw: &[u8]) -> Result<M, Status> {
    M::decode(raw)
        .map_err(|e| Status::invalid_argument(format!("the request does not decode: {e}")))
}

/// gRPC messages read from a request body as they complete, without a
/// task or buffer of their own beyond the bytes of a message not yet
/// whole.
pub(crate) struct MessageReader<B> {
    body: B,
    partial: BytesMut,
    ended: bool,
}

impl<B> MessageReader<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    pub(crate) fn new(body: B) -> Self {
        MessageReader {
            body,
            partial: BytesMut::new(),
            ended: false,
        }
    }

    /// The request body, to hand it frames directly ([`crate::conn`]).
    pub(crate) fn body_mut(&mut self) -> &mut B {
        &mut self.body
    }

    /// The next message; `None` once the client ended its side cleanly.
    /// A malformed or oversized message is an error naming what is wrong.
    pub(crate) fn poll_message<M: Message + Default>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<M, Status>>> {
        self.poll_raw(cx)
            .map(|next| next.map(|raw| decode_message(&raw?)))
    }

    /// The next message's bytes, as [`MessageReader::poll_message`] reads it.
    pub(crate) fn poll_raw(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BytesMut, Status>>> {
        loop {
            if let Some(message) = self.take()? {
                return Poll::Ready(Some(Ok(message)));
            }
            if self.ended {
                return Poll::Ready(if self.partial.is_empty() {
                    None
                } else {
                    Some(Err(Status::invalid_argument(
                        "the request stream ended inside a gRPC message",
                    )))
                });
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.ended = true,
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(Err(Status::cancelled(format!(
                        "reading the request stream failed: {error}"
                    )))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers from a client carry nothing for ADS.
                    if let Ok(data) = frame.into_data() {
                        self.partial.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// A whole message at the front of the buffer, if one is there.
    fn take(&mut self) -> Result<Option<BytesMut>, Status> {
        let Some(header) = self.partial.get(..5) else {
            return Ok(None);
        };
        if header[0] != 0 {
            // A compressed message on a stream without `grpc-encoding`
            // (one with it is refused before it starts).
            return Err(Status::internal(
                "a compressed gRPC message, but the stream named no grpc-encoding",
            ));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_REQUEST {
            return Err(Status::resource_exhausted(format!(
                "a request of {len} bytes is over the limit of {MAX_REQUEST}"
            )));
        }
        if self.partial.len() < 5 + len {
            // Room for what is announced, a bounded step at a time: a
            // header alone does not get 16 MB from us.
            self.partial
                .reserve((5 + len - self.partial.len()).min(64 * 1024));
            return Ok(None);
        }
        self.partial.advance(5);
        let message = self.partial.split_to(len);
        if self.partial.is_empty() && self.partial.capacity() > 1024 {
            // A connected proxy mostly sits idle: keep no large buffer
            // after a large message (a NACK with Envoy's error text).
            self.partial = BytesMut::new();
        }
        Ok(Some(message))
    }
}

/// A stream's gRPC codec buffers start at 1 KB instead of tonic's 8 KB
/// each: every connected proxy holds two for as long as it is connected,
/// most messages (ACKs, a proxy's changes) are far smaller, and a buffer
/// grows when a message needs it. Up to 32 KB of responses are written at
/// once, as by default.
struct AdsCodec<T, U>(std::marker::PhantomData<fn(T) -> U>);

impl<T, U> Default for AdsCodec<T, U> {
    fn default() -> Self {
        AdsCodec(std::marker::PhantomData)
    }
}

fn buffers() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

impl<T, U> Codec for AdsCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffers())
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `envoy.service.discovery.v3.AggregatedDiscoveryService` over an [`AdsServer`].
#[derive(Clone)]
pub struct AdsService {
    server: Arc<AdsServer>,
}

impl AdsService {
    pub(crate) fn new(server: AdsServer) -> Self {
        AdsService {
            server: Arc::new(server),
        }
    }

    /// A delta ADS stream ([`DELTA_PATH`]) served without tonic's layers:
    /// for a server that routes HTTP/2 requests itself and hands its
    /// request bodies over as they are.
    pub fn delta<B>(&self, request: http::Request<B>) -> http::Response<DeltaBody<B>>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        self.server.delta(request)
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE;
}

struct StateOfTheWorld(Arc<AdsServer>);

impl StreamingService<DiscoveryRequest> for StateOfTheWorld {
    type Response = DiscoveryResponse;
    type ResponseStream = BoxStream<DiscoveryResponse>;
    type Future = BoxFuture<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move { Ok(server.state_of_the_world(request)) })
    }
}

impl tower::Service<http::Request<Body>> for AdsService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let server = self.server.clone();
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let mut grpc =
                    Grpc::new(AdsCodec::<DiscoveryResponse, DiscoveryRequest>::default())
                        .max_decoding_message_size(MAX_REQUEST);
                Ok(grpc.streaming(StateOfTheWorld(server), req).await)
            }),
            DELTA_PATH => {
                let response = server.delta(req).map(Body::new);
                Box::pin(async move { Ok(response) })
            }
            _ => {
                Box::pin(async move { Ok(Status::unimplemented("no such ADS method").into_http()) })
            }
        }
    }
}

/// Refuses a request whose messages are compressed (`grpc-encoding` other
/// than identity): the delta stream reads them as they are.
pub(crate) fn unsupported_encoding(headers: &http::HeaderMap) -> Option<Status> {
    let encoding = headers.get("grpc-encoding")?;
    if encoding.as_bytes() == b"identity" {
        return None;
    }
    let mut status = Status::unimplemented(format!(
        "messages compressed with {} are not supported; send them uncompressed",
        String::from_utf8_lossy(encoding.as_bytes())
    ));
    status
        .metadata_mut()
        .insert("grpc-accept-encoding", "identity".parse().ok()?);
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;

    fn any(n: u8) -> Any {
        Any {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            value: vec![n; 300],
        }
    }

    fn generated() -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            resources: (0..3)
                .map(|i| Resource {
                    name: format!("c-{i}"),
                    version: format!("v{i}"),
                    resource: Some(any(i)),
                    ..Default::default()
                })
                .collect(),
            removed_resources: vec!["gone-1".into(), "gone-2".into()],
            nonce: "17".into(),
            ..Default::default()
        }
    }

    fn encoded() -> EncodedDelta {
        EncodedDelta {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            resources: (0..3)
                .map(|i| encode_resource(&format!("c-{i}"), &format!("v{i}"), &any(i)))
                .collect(),
            removed_resources: vec!["gone-1".into(), "gone-2".into()],
            nonce: 17,
        }
    }

    #[test]
    fn same_bytes_as_the_generated_message() {
        let mut out = Outgoing::default();
        let len = out.put_delta(&encoded());
        assert_eq!(out.len(), 5 + len);
        assert_eq!(len, encoded().encoded_len());
        let bytes = out.take();
        assert!(out.is_empty());
        let expected = generated().encode_to_vec();
        assert_eq!(bytes[0], 0);
        assert_eq!(bytes[1..5], (expected.len() as u32).to_be_bytes());
        assert_eq!(bytes[5..], expected[..]);
        assert_eq!(
            DeltaDiscoveryResponse::decode(&bytes[5..]).unwrap(),
            generated()
        );
    }

    #[test]
    fn messages_follow_each_other() {
        let mut first = encoded();
        first.resources = vec![encode_resource("c", "v", &Any::default())];
        first.nonce = 0;
        first.removed_resources.clear();
        let mut out = Outgoing::default();
        out.put_delta(&first);
        out.put_delta(&encoded());
        let bytes = out.take();
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        let one = DeltaDiscoveryResponse::decode(&bytes[5..5 + len]).unwrap();
        assert_eq!(one.nonce, "0");
        assert_eq!(one.resources.len(), 1);
        let two = DeltaDiscoveryResponse::decode(&bytes[10 + len..]).unwrap();
        assert_eq!(two, generated());
    }

    #[test]
    fn nonces_are_decimal() {
        for n in [0, 7, 10, 17, 1234567890, u64::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
            assert_eq!(Decimal::new(n).as_str(), n.to_string());
        }
    }
}
