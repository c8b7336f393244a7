//! The Envoy resources a proxy gets, as plain data: what generation decides,
//! before it becomes protobuf. Versions are hashes of these values (never of
//! encoded protobuf, whose map order is unstable).

use crate::timeout::{ClusterTimeouts, Timeouts};
use serde::{Serialize, Serializer};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// The xDS resource types served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ResourceType {
    Cluster,
    Endpoints,
    Listener,
    Route,
}

impl ResourceType {
    /// Push order: clusters before their endpoints, both before listeners using them.
    pub const ORDER: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoints,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    /// Position in [`ResourceType::ORDER`] (for per-type arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoints => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ORDER.into_iter().find(|t| t.type_url() == url)
    }

    /// Whether a state-of-the-world response must list every resource of the type.
    pub fn is_wildcard(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Http,
    Http2,
    Grpc,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Protocol {
        match s.map(str::to_ascii_lowercase).as_deref() {
            Some("http") => Protocol::Http,
            Some("http2") => Protocol::Http2,
            Some("grpc") => Protocol::Grpc,
            _ => Protocol::Tcp,
        }
    }

    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SocketAddr {
    pub address: String,
    pub port: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterSource {
    /// One fixed address (the local application).
    Static(SocketAddr),
    /// Endpoints come over EDS.
    Eds,
    /// Wherever the connection was going (transparent-proxy passthrough).
    OriginalDst,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ClusterPlan {
    pub name: String,
    pub protocol: Protocol,
    pub source: ClusterSource,
    pub timeouts: ClusterTimeouts,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct EndpointsPlan {
    pub cluster: String,
    pub endpoints: EndpointSet,
}

/// A cluster's endpoints: computed once per mesh change and shared by every
/// proxy using the cluster, hashed through a digest taken when it is built
/// (a plan's version costs the same for 1 endpoint or 1 000).
#[derive(Clone, Debug)]
pub struct EndpointSet(Arc<EndpointSetInner>);

#[derive(Debug)]
struct EndpointSetInner {
    digest: u64,
    addrs: Vec<SocketAddr>,
}

impl EndpointSet {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        EndpointSet(Arc::new(EndpointSetInner {
            digest: digest_of(&addrs),
            addrs,
        }))
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0.addrs
    }
}

impl Default for EndpointSet {
    fn default() -> Self {
        EndpointSet::new(Vec::new())
    }
}

impl FromIterator<SocketAddr> for EndpointSet {
    fn from_iter<I: IntoIterator<Item = SocketAddr>>(iter: I) -> Self {
        EndpointSet::new(iter.into_iter().collect())
    }
}

impl PartialEq for EndpointSet {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.digest == other.0.digest && self.0.addrs == other.0.addrs)
    }
}

impl Eq for EndpointSet {}

impl Hash for EndpointSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.digest);
    }
}

impl Serialize for EndpointSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.addrs.serialize(s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FilterPlan {
    Http {
        cluster: String,
        protocol: Protocol,
        timeouts: Timeouts,
    },
    Tcp {
        cluster: String,
        idle_ms: u64,
    },
    /// A UDP DNS server answering the mesh's hostnames with their VIPs.
    Dns {
        records: std::collections::BTreeMap<String, Vec<String>>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerPlan {
    pub name: String,
    pub address: SocketAddr,
    pub inbound: bool,
    pub bind_to_port: bool,
    pub use_original_dst: bool,
    pub stat_prefix: String,
    pub filter: FilterPlan,
}

/// One resource to serve.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ResourcePlan {
    Cluster(ClusterPlan),
    Endpoints(EndpointsPlan),
    Listener(ListenerPlan),
}

/// A content digest: foldhash's quality variant with a fixed seed (the same
/// in every run of one build).
fn digest_of<T: Hash + ?Sized>(v: &T) -> u64 {
    foldhash::quality::FixedState::with_seed(0x6b75_6d61_2d78_6473).hash_one(v)
}

impl ResourcePlan {
    pub fn resource_type(&self) -> ResourceType {
        match self {
            ResourcePlan::Cluster(_) => ResourceType::Cluster,
            ResourcePlan::Endpoints(_) => ResourceType::Endpoints,
            ResourcePlan::Listener(_) => ResourceType::Listener,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ResourcePlan::Cluster(c) => &c.name,
            ResourcePlan::Endpoints(e) => &e.cluster,
            ResourcePlan::Listener(l) => &l.name,
        }
    }

    /// A 64-bit digest of the plan's content (name included): equal plans,
    /// equal digests. foldhash's quality variant with a fixed seed, so it is
    /// the same in every run of one build and a reconnecting Envoy's versions
    /// still match (a third of SipHash's cost, which was 3 % of a mesh-wide
    /// change at 10k proxies).
    pub fn digest(&self) -> u64 {
        digest_of(self)
    }
}
