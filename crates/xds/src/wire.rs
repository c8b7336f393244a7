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

use crate::server::AdsServer;
use bytes::{Buf, BufMut, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
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
const DELTA_PATH: &str =
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
/// same bytes as the generated message with those fields, without copying
/// the resources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedDelta {
    pub type_url: String,
    /// Encoded `Resource` messages ([`encode_resource`]).
    pub resources: Vec<Bytes>,
    pub removed_resources: Vec<String>,
    pub nonce: String,
}

impl Message for EncodedDelta {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for r in &self.resources {
            encoding::encode_key(RESOURCES, WireType::LengthDelimited, buf);
            encoding::encode_varint(r.len() as u64, buf);
            buf.put_slice(r);
        }
        if !self.type_url.is_empty() {
            encoding::string::encode(TYPE_URL, &self.type_url, buf);
        }
        if !self.nonce.is_empty() {
            encoding::string::encode(NONCE, &self.nonce, buf);
        }
        encoding::string::encode_repeated(REMOVED_RESOURCES, &self.removed_resources, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            RESOURCES => {
                let mut r = Bytes::new();
                encoding::bytes::merge(wire_type, &mut r, buf, ctx)?;
                self.resources.push(r);
                Ok(())
            }
            TYPE_URL => encoding::string::merge(wire_type, &mut self.type_url, buf, ctx),
            NONCE => encoding::string::merge(wire_type, &mut self.nonce, buf, ctx),
            REMOVED_RESOURCES => {
                encoding::string::merge_repeated(wire_type, &mut self.removed_resources, buf, ctx)
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let resources: usize = self
            .resources
            .iter()
            .map(|r| {
                encoding::key_len(RESOURCES)
                    + encoding::encoded_len_varint(r.len() as u64)
                    + r.len()
            })
            .sum();
        let string = |tag: u32, s: &String| {
            if s.is_empty() {
                0
            } else {
                encoding::string::encoded_len(tag, s)
            }
        };
        resources
            + string(TYPE_URL, &self.type_url)
            + string(NONCE, &self.nonce)
            + encoding::string::encoded_len_repeated(REMOVED_RESOURCES, &self.removed_resources)
    }

    fn clear(&mut self) {
        self.type_url.clear();
        self.resources.clear();
        self.removed_resources.clear();
        self.nonce.clear();
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

struct Delta(Arc<AdsServer>);

impl StreamingService<DeltaDiscoveryRequest> for Delta {
    type Response = EncodedDelta;
    type ResponseStream = BoxStream<EncodedDelta>;
    type Future = BoxFuture<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move { Ok(server.delta(request)) })
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
            DELTA_PATH => Box::pin(async move {
                let mut grpc =
                    Grpc::new(AdsCodec::<EncodedDelta, DeltaDiscoveryRequest>::default())
                        .max_decoding_message_size(MAX_REQUEST);
                Ok(grpc.streaming(Delta(server), req).await)
            }),
            _ => {
                Box::pin(async move { Ok(Status::unimplemented("no such ADS method").into_http()) })
            }
        }
    }
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
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            resources: (0..3)
                .map(|i| encode_resource(&format!("c-{i}"), &format!("v{i}"), &any(i)))
                .collect(),
            removed_resources: vec!["gone-1".into(), "gone-2".into()],
            nonce: "17".into(),
        }
    }

    #[test]
    fn same_bytes_as_the_generated_message() {
        let ours = encoded().encode_to_vec();
        assert_eq!(ours.len(), encoded().encoded_len());
        assert_eq!(ours, generated().encode_to_vec());
        assert_eq!(DeltaDiscoveryResponse::decode(&*ours).unwrap(), generated());
    }

    #[test]
    fn decodes_what_the_generated_message_encodes() {
        let bytes = generated().encode_to_vec();
        assert_eq!(EncodedDelta::decode(&*bytes).unwrap(), encoded());
        let empty = DeltaDiscoveryResponse::default().encode_to_vec();
        assert_eq!(
            EncodedDelta::decode(&*empty).unwrap(),
            EncodedDelta::default()
        );
        assert!(EncodedDelta::decode(&[0x12, 0x05, 0x01][..]).is_err());
    }
}
