//! Dataplane: one data plane proxy, its inbounds (what it serves), outbounds
//! (what it consumes), and how traffic reaches it. An inline kind: fields sit
//! at the top level, so paths start at `networking`.
//!
//! Kuma 3.x identifies inbounds by `name`/port and outbounds by `backendRef`;
//! the 2.x `tags` form (with `kuma.io/service`) is still accepted, and when
//! tags are given they must carry `kuma.io/service`.

use super::common::{
    ProtoDuration, SERVICE_TAG, TargetRefKind, is_dns_name, is_ip, is_known_protocol, port, tags,
};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A data plane proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dataplane {
    /// Addresses and ports of the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    /// IP address or hostname other proxies reach this one at.
    #[serde(default)]
    pub address: String,
    /// Set for a delegated gateway (a proxy such as Kong in front of the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// Traffic this proxy accepts for its application.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<Inbound>,
    /// Destinations the application reaches through the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<Outbound>,
    /// Transparent proxying (iptables redirection) settings.
    #[serde(
        default,
        alias = "transparent_proxying",
        skip_serializing_if = "Option::is_none"
    )]
    pub transparent_proxying: Option<TransparentProxying>,
    /// Envoy admin interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<EnvoyAdmin>,
    /// Zone ingress / egress listeners served by this proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

/// State of an inbound for load balancing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InboundState {
    /// Receives traffic.
    #[default]
    Ready,
    /// Excluded from load balancing.
    NotReady,
    /// Not exposed to the mesh at all.
    Ignored,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    /// Port the proxy listens on for this inbound.
    #[serde(default)]
    pub port: u32,
    /// Port of the application; defaults to `port`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub service_port: u32,
    /// Address of the application; defaults to 127.0.0.1.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_address: String,
    /// Address the proxy listens on; defaults to `networking.address`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Kuma 2.x tags of the inbound; must include `kuma.io/service` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Health as reported by an external checker (Kubernetes readiness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Probe the proxy runs against the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_probe: Option<ServiceProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InboundState>,
    /// Name of the inbound, usable as a targetRef `sectionName`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Application protocol: http, http2, grpc or tcp.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Inbound {
    /// The name policies use to select this inbound: its name or its port.
    pub fn section_name(&self) -> String {
        if self.name.is_empty() {
            self.port.to_string()
        } else {
            self.name.clone()
        }
    }

    /// The `kuma.io/service` tag, when the inbound is in the tag form.
    pub fn service(&self) -> Option<&str> {
        self.tags
            .as_ref()
            .and_then(|t| t.get(SERVICE_TAG))
            .map(String::as_str)
    }

    /// The application port (`servicePort`, else `port`).
    pub fn workload_port(&self) -> u32 {
        if self.service_port == 0 {
            self.port
        } else {
            self.service_port
        }
    }

    /// The application address (`serviceAddress`, else 127.0.0.1).
    pub fn workload_address(&self) -> &str {
        if self.service_address.is_empty() {
            "127.0.0.1"
        } else {
            &self.service_address
        }
    }

    /// Whether the inbound should receive traffic: state `Ready` (the default)
    /// and not reported unhealthy.
    pub fn is_ready(&self) -> bool {
        let state_ready = self.state.unwrap_or_default() == InboundState::Ready;
        state_ready && self.health.as_ref().is_none_or(|h| h.ready)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    #[serde(default)]
    pub ready: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<ProtoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ProtoDuration>,
    #[serde(
        default,
        alias = "unhealthy_threshold",
        skip_serializing_if = "Option::is_none"
    )]
    pub unhealthy_threshold: Option<u32>,
    #[serde(
        default,
        alias = "healthy_threshold",
        skip_serializing_if = "Option::is_none"
    )]
    pub healthy_threshold: Option<u32>,
    /// A TCP connect probe (the only kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outbound {
    /// Local address the application connects to; defaults to 127.0.0.1.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default)]
    pub port: u32,
    /// Kuma 2.x form: the destination service as `kuma.io/service` tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// The destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<OutboundBackendRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundBackendRef {
    /// MeshService, MeshExternalService or MeshMultiZoneService.
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GatewayType {
    #[default]
    #[serde(rename = "DELEGATED")]
    Delegated,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// Tags of the gateway; must include `kuma.io/service` when set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<GatewayType>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IpFamilyMode {
    #[default]
    UnSpecified,
    DualStack,
    IPv4,
    IPv6,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransparentProxying {
    /// Port inbound traffic is redirected to.
    #[serde(
        default,
        alias = "redirect_port_inbound",
        skip_serializing_if = "is_zero"
    )]
    pub redirect_port_inbound: u32,
    /// Port outbound traffic is redirected to.
    #[serde(
        default,
        alias = "redirect_port_outbound",
        skip_serializing_if = "is_zero"
    )]
    pub redirect_port_outbound: u32,
    /// Services reached directly, bypassing the mesh (`*` for all).
    #[serde(
        default,
        alias = "direct_access_services",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub direct_access_services: Vec<String>,
    #[serde(
        default,
        alias = "ip_family_mode",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_family_mode: Option<IpFamilyMode>,
    /// Limits the outbounds generated for this proxy to these backends.
    #[serde(
        default,
        alias = "reachable_backends",
        skip_serializing_if = "Option::is_none"
    )]
    pub reachable_backends: Option<ReachableBackends>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReachableBackends {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<ReachableBackendRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReachableBackendRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyAdmin {
    /// Port of Envoy's admin interface (on 127.0.0.1).
    #[serde(default)]
    pub port: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ListenerType {
    #[default]
    Unspecified,
    ZoneIngress,
    ZoneEgress,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ListenerState {
    #[default]
    Ready,
    NotReady,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    #[serde(default, rename = "type")]
    pub type_: ListenerType,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ListenerState>,
}

const BACKEND_KINDS: &[TargetRefKind] = &[
    TargetRefKind::MeshExternalService,
    TargetRefKind::MeshMultiZoneService,
    TargetRefKind::MeshService,
];

fn backend_kind_ok(kind: &str) -> bool {
    BACKEND_KINDS.iter().any(|k| k.as_str() == kind)
}

const BACKEND_KINDS_HINT: &str =
    "invalid value. Available values are: MeshExternalService,MeshMultiZoneService,MeshService";

impl Dataplane {
    /// True for a delegated gateway proxy.
    pub fn is_delegated_gateway(&self) -> bool {
        self.networking
            .as_ref()
            .and_then(|n| n.gateway.as_ref())
            .is_some()
    }

    /// True when the proxy serves zone ingress or egress listeners.
    pub fn is_zone_proxy(&self) -> bool {
        self.networking
            .as_ref()
            .is_some_and(|n| !n.listeners.is_empty())
    }

    /// Inbounds that take part in the mesh (not `Ignored`).
    pub fn active_inbounds(&self) -> impl Iterator<Item = &Inbound> {
        self.networking
            .iter()
            .flat_map(|n| n.inbound.iter())
            .filter(|i| i.state != Some(InboundState::Ignored))
    }
}

impl Networking {
    /// The address the proxy listens on for `inbound`.
    pub fn inbound_address<'a>(&'a self, inbound: &'a Inbound) -> &'a str {
        if inbound.address.is_empty() {
            &self.address
        } else {
            &inbound.address
        }
    }
}

impl Outbound {
    /// The local address the application connects to (127.0.0.1 by default).
    pub fn effective_address(&self) -> &str {
        if self.address.is_empty() {
            "127.0.0.1"
        } else {
            &self.address
        }
    }
}

impl Spec for Dataplane {
    fn validate(&self, _: &Context<'_>, root: &Path, errs: &mut Violations) {
        let path = root.field("networking");
        let Some(net) = &self.networking else {
            errs.at(&path, "must be defined");
            return;
        };
        if let Some(admin) = &net.admin {
            // Envoy's admin listens on 127.0.0.1: only listeners on loopback
            // (or every interface) can clash with it.
            let clashes = |addr: &str| addr == "127.0.0.1" || addr == "0.0.0.0";
            let p = path.field("admin").field("port");
            if net.inbound.iter().any(|i| {
                i.port == admin.port
                    && clashes(if i.address.is_empty() {
                        &net.address
                    } else {
                        &i.address
                    })
            }) {
                errs.at(&p, "must differ from inbound");
            }
            if net.outbound.iter().any(|o| {
                o.port == admin.port
                    && clashes(if o.address.is_empty() {
                        "127.0.0.1"
                    } else {
                        &o.address
                    })
            }) {
                errs.at(&p, "must differ from outbound");
            }
        }
        address(&net.address, &path.field("address"), errs);
        if let Some(gw) = &net.gateway {
            if !net.inbound.is_empty() {
                errs.at(
                    &path.field("inbound"),
                    "inbound cannot be defined for delegated gateways",
                );
            }
            if !net.listeners.is_empty() {
                errs.at(
                    &path.field("listeners"),
                    "listeners cannot be defined for delegated gateways",
                );
            }
            let p = path.field("gateway").field("tags");
            tags(&gw.tags, !gw.tags.is_empty(), &p, errs);
            if let Some(proto) = gw.tags.get(super::common::PROTOCOL_TAG)
                && !proto.eq_ignore_ascii_case("tcp")
            {
                errs.at(
                    &p.key(super::common::PROTOCOL_TAG),
                    format!("other values than tcp are not allowed, provided value {proto:?}"),
                );
            }
        }
        for (i, inbound) in net.inbound.iter().enumerate() {
            validate_inbound(inbound, &net.address, &path.field("inbound").index(i), errs);
        }
        for (i, outbound) in net.outbound.iter().enumerate() {
            validate_outbound(outbound, &path.field("outbound").index(i), errs);
        }
        if let Some(tp) = &net.transparent_proxying {
            validate_transparent_proxying(tp, &path.field("transparentProxying"), errs);
        }
        if net.gateway.is_none() {
            validate_listeners(net, &path.field("listeners"), errs);
        }
    }
}

fn address(addr: &str, path: &Path, errs: &mut Violations) {
    if addr.is_empty() {
        errs.at(path, "address can't be empty");
        return;
    }
    if addr == "0.0.0.0" || addr == "::" {
        errs.at(path, "must not be 0.0.0.0 or ::");
    }
    if !is_ip(addr) && !is_dns_name(addr) {
        errs.at(path, "address has to be valid IP address or domain name");
    }
}

fn validate_inbound(inbound: &Inbound, dp_address: &str, path: &Path, errs: &mut Violations) {
    port(inbound.port, &path.field("port"), errs);
    if inbound.service_port != 0 {
        port(inbound.service_port, &path.field("servicePort"), errs);
    }
    let same_port = inbound.service_port == 0 || inbound.service_port == inbound.port;
    if !inbound.service_address.is_empty() {
        if !is_ip(&inbound.service_address) {
            errs.at(
                &path.field("serviceAddress"),
                "serviceAddress has to be valid IP address",
            );
        }
        if inbound.service_address == dp_address && same_port {
            errs.at(
                &path.field("serviceAddress"),
                "serviceAddress and servicePort has to differ from address and port",
            );
        }
    }
    if !inbound.address.is_empty() {
        if !is_ip(&inbound.address) {
            errs.at(&path.field("address"), "address has to be valid IP address");
        }
        if inbound.address == inbound.service_address && same_port {
            errs.at(
                &path.field("serviceAddress"),
                "serviceAddress and servicePort has to differ from address and port",
            );
        }
    }
    if !inbound.protocol.is_empty() && !is_known_protocol(&inbound.protocol) {
        errs.at(
            &path.field("protocol"),
            format!(
                "has an invalid value {:?}. Allowed values: {}",
                inbound.protocol,
                super::common::PROTOCOLS.join(", ")
            ),
        );
    }
    if let Some(t) = &inbound.tags {
        tags(t, true, &path.field("tags"), errs);
        if let Some(proto) = t.get(super::common::PROTOCOL_TAG)
            && !is_known_protocol(proto)
        {
            errs.at(
                &path.field("tags").key(super::common::PROTOCOL_TAG),
                format!(
                    "tag {:?} has an invalid value {proto:?}. Allowed values: {}",
                    super::common::PROTOCOL_TAG,
                    super::common::PROTOCOLS.join(", ")
                ),
            );
        }
    }
    if let Some(probe) = &inbound.service_probe {
        let p = path.field("serviceProbe");
        for (name, d) in [("interval", &probe.interval), ("timeout", &probe.timeout)] {
            if let Some(d) = d
                && d.nanos() <= 0
            {
                errs.at(&p.field(name), "must have a positive value");
            }
        }
        for (name, t) in [
            ("unhealthyThreshold", probe.unhealthy_threshold),
            ("healthyThreshold", probe.healthy_threshold),
        ] {
            if t == Some(0) {
                errs.at(&p.field(name), "must have a positive value");
            }
        }
    }
}

fn validate_outbound(outbound: &Outbound, path: &Path, errs: &mut Violations) {
    port(outbound.port, &path.field("port"), errs);
    if !outbound.address.is_empty() && !is_ip(&outbound.address) {
        errs.at(&path.field("address"), "address has to be valid IP address");
    }
    match (&outbound.backend_ref, &outbound.tags) {
        (None, None) => errs.at(&path.field("backendRef"), "must be defined"),
        (None, Some(t)) => tags(t, true, &path.field("tags"), errs),
        (Some(_), Some(_)) => errs.at(
            &path.field("tags"),
            "must not be set when backendRef is defined",
        ),
        (Some(r), None) => {
            let p = path.field("backendRef");
            if !backend_kind_ok(&r.kind) {
                errs.at(&p.field("kind"), BACKEND_KINDS_HINT);
            }
            if r.name.is_empty() && r.labels.is_empty() {
                errs.at(&p, "either 'name' or 'labels' should be specified");
            }
            // A MeshExternalService's port comes from its endpoints.
            if r.kind != "MeshExternalService" {
                port(r.port, &p.field("port"), errs);
            }
        }
    }
}

fn validate_transparent_proxying(tp: &TransparentProxying, path: &Path, errs: &mut Violations) {
    if tp.redirect_port_inbound > 65535 {
        errs.at(
            &path.field("redirectPortInbound"),
            "port must be in the range [1, 65535]",
        );
    }
    if tp.redirect_port_outbound > 65535 {
        errs.at(
            &path.field("redirectPortOutbound"),
            "port must be in the range [1, 65535]",
        );
    }
    let Some(rb) = &tp.reachable_backends else {
        return;
    };
    for (i, r) in rb.refs.iter().enumerate() {
        let p = path.field("reachableBackends").field("refs").index(i);
        if !backend_kind_ok(&r.kind) {
            errs.at(&p.field("kind"), BACKEND_KINDS_HINT);
        }
        if !r.name.is_empty() && crate::names::ResourceName::new(r.name.clone()).is_err() {
            errs.at(
                &p.field("name"),
                "invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            );
        }
        if r.name.is_empty() && r.namespace.is_empty() && r.labels.is_empty() {
            errs.at(&p.field("name"), "name or labels are required");
        }
        if r.name.is_empty() && !r.namespace.is_empty() {
            errs.at(
                &p.field("name"),
                "name is required, when namespace is defined",
            );
        }
        if (!r.name.is_empty() || !r.namespace.is_empty()) && !r.labels.is_empty() {
            errs.at(
                &p.field("labels"),
                "labels cannot be defined when name is specified",
            );
        }
    }
}

fn validate_listeners(net: &Networking, path: &Path, errs: &mut Violations) {
    let mut names: HashSet<String> = net
        .inbound
        .iter()
        .filter(|i| !i.name.is_empty())
        .map(|i| i.name.clone())
        .collect();
    let mut by_addr: HashMap<String, ListenerType> = HashMap::new();
    for (i, l) in net.listeners.iter().enumerate() {
        let p = path.index(i);
        if l.type_ == ListenerType::Unspecified {
            errs.at(&p.field("type"), "type must be ZoneIngress or ZoneEgress");
        }
        address(&l.address, &p.field("address"), errs);
        port(l.port, &p.field("port"), errs);
        if !l.name.is_empty() && !names.insert(l.name.clone()) {
            errs.at(
                &p.field("name"),
                format!(
                    "name {:?} must be unique across inbounds and listeners",
                    l.name
                ),
            );
        }
        let key = format!("{}:{}", l.address, l.port);
        match by_addr.get(&key) {
            Some(t) if *t == l.type_ => errs.at(
                &p,
                format!("address:port {key} is already used by another listener"),
            ),
            Some(_) => errs.at(
                &p,
                format!("address:port {key} is used by listeners of different types"),
            ),
            None => {
                by_addr.insert(key.clone(), l.type_);
            }
        }
        let collides = net.inbound.iter().any(|ib| {
            let a = if ib.address.is_empty() {
                &net.address
            } else {
                &ib.address
            };
            format!("{a}:{}", ib.port) == key
        });
        if collides {
            errs.at(
                &p,
                format!("address:port {key} collides with an inbound listener"),
            );
        }
    }
}
