//! Model -> plans: which listeners, clusters and endpoints one proxy gets.

use crate::input::{
    DataplaneView, Inbound, MeshContext, MeshServiceView, Outbound, SERVICE_TAG, ServicePort,
};
use crate::plan::{
    ClusterPlan, ClusterSource, EndpointSet, EndpointsPlan, FilterPlan, ListenerPlan, Protocol,
    ResourcePlan, SocketAddr,
};
use crate::timeout::{ClusterTimeouts, Timeouts};
use crate::wire::Decimal;
use kuma_policy::{DestinationRef, InboundRef, ProxyRef, ProxyRules};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything generated for one proxy.
#[derive(Clone, Debug, Default)]
pub struct ProxyPlan {
    /// Shared by `Arc` with the other proxies of a batch that get the
    /// same resource (see [`OutboundMemo`]).
    pub resources: Vec<Arc<ResourcePlan>>,
    /// MeshTimeout rules as merged for this proxy (for `_rules`).
    pub timeout_rules: std::sync::Arc<ProxyRules>,
    /// Problems that did not stop generation (unknown outbound targets, bad policies).
    pub warnings: Vec<String>,
}

/// Endpoints of every MeshService port in a mesh, computed once per mesh
/// change and shared by all its proxies.
#[derive(Clone, Debug, Default)]
pub struct MeshEndpoints {
    by_cluster: BTreeMap<String, EndpointSet>,
}

impl MeshEndpoints {
    pub fn compute(ctx: &MeshContext) -> Self {
        let mut by_cluster = BTreeMap::new();
        for svc in ctx.services.values() {
            for port in &svc.spec.ports {
                let mut eps = Vec::new();
                for dp in ctx.dataplanes.values() {
                    if ctx.offline.contains(&dp.name) || !svc.selects(dp) {
                        continue;
                    }
                    for inbound in &dp.spec.networking.inbound {
                        if inbound.is_ready() && inbound_serves(svc, port, dp, inbound) {
                            eps.push(SocketAddr {
                                address: endpoint_address(dp, inbound),
                                port: inbound.port,
                            });
                        }
                    }
                }
                eps.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
                eps.dedup();
                by_cluster.insert(
                    service_cluster_name(&ctx.mesh, &svc.name, port.port),
                    EndpointSet::new(eps),
                );
            }
        }
        MeshEndpoints { by_cluster }
    }

    /// Every cluster's endpoints (to tell which clusters a change touched).
    pub fn signature(&self) -> BTreeMap<String, EndpointSet> {
        self.by_cluster.clone()
    }

    /// A cluster's endpoints (shared, not copied); empty for an unknown cluster.
    pub fn get(&self, cluster: &str) -> EndpointSet {
        self.by_cluster.get(cluster).cloned().unwrap_or_default()
    }
}

fn inbound_serves(
    svc: &MeshServiceView,
    port: &ServicePort,
    _dp: &DataplaneView,
    inbound: &Inbound,
) -> bool {
    if let Some(want) = &svc.spec.selector.dataplane_tags
        && !want.iter().all(|(k, v)| inbound.tags.get(k) == Some(v))
    {
        return false;
    }
    match &port.target_port {
        Some(serde_json::Value::Number(n)) => n.as_u64() == Some(u64::from(inbound.port)),
        Some(serde_json::Value::String(s)) => inbound.name.as_deref() == Some(s.as_str()),
        _ => inbound.port == port.port,
    }
}

fn endpoint_address(dp: &DataplaneView, inbound: &Inbound) -> String {
    let n = &dp.spec.networking;
    inbound
        .address
        .clone()
        .or_else(|| n.advertised_address.clone())
        .unwrap_or_else(|| n.address.clone())
}

/// Kuma's cluster name for one port of a MeshService of the local zone.
pub fn service_cluster_name(mesh: &str, service: &str, port: u32) -> String {
    format!("{mesh}_{service}___msvc_{port}")
}

const PASSTHROUGH: &str = "outbound:passthrough:ipv4";

/// What a proxy told the control plane about itself when it connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyMeta {
    /// kuma-dp's DNS port: Envoy answers the mesh's hostnames there.
    pub dns_port: Option<u32>,
}

/// Generates the resources of `dp`.
pub fn generate(ctx: &MeshContext, endpoints: &MeshEndpoints, dp: &DataplaneView) -> ProxyPlan {
    generate_with(ctx, endpoints, dp, ProxyMeta::default())
}

/// Generates the resources of `dp`, with what its proxy reported.
pub fn generate_with(
    ctx: &MeshContext,
    endpoints: &MeshEndpoints,
    dp: &DataplaneView,
    meta: ProxyMeta,
) -> ProxyPlan {
    generate_memo(ctx, endpoints, dp, meta, &mut OutboundMemo::default())
}

/// What was generated already while regenerating the proxies of one mesh,
/// for the next proxy that gets the same: the policy merge of an outbound
/// target, and the resources that do not depend on the proxy (an
/// outbound's listener, its EDS cluster and endpoints, the DNS listener,
/// the passthrough). Shared by `Arc`, they are built, and interned by
/// [`crate::SnapshotCache::build_shared`], once per batch instead of once
/// per proxy. Keys are the addresses of the rules (kept alive by the
/// entry) and of the MeshService port in the [`MeshContext`], which the
/// memo borrows for its lifetime.
#[derive(Default)]
pub struct OutboundMemo<'a> {
    targets: foldhash::HashMap<TargetKey, Target>,
    /// By target, port and whether the listener binds: (address, listener).
    listeners: foldhash::HashMap<(TargetKey, u32, bool), Vec<Listener>>,
    /// By DNS port.
    dns: foldhash::HashMap<u32, Arc<ResourcePlan>>,
    /// By redirect port: the passthrough cluster and listener.
    passthrough: foldhash::HashMap<u32, [Arc<ResourcePlan>; 2]>,
    ctx: std::marker::PhantomData<&'a MeshContext>,
}

/// The rules' and the MeshService port's addresses.
type TargetKey = (usize, usize);

/// A listener's address, and the listener.
type Listener = (String, Arc<ResourcePlan>);

/// Where an outbound goes (its cluster, timeouts and protocol), and that
/// cluster with its endpoints.
struct Target {
    _rules: Arc<ProxyRules>,
    cluster: String,
    timeouts: Timeouts,
    protocol: Protocol,
    eds: [Arc<ResourcePlan>; 2],
}

impl<'a> OutboundMemo<'a> {
    /// The listener on `address:listen_port` to `port` of `svc`, and the
    /// EDS cluster and endpoints it uses.
    #[allow(clippy::too_many_arguments)]
    fn outbound(
        &mut self,
        ctx: &'a MeshContext,
        endpoints: &MeshEndpoints,
        rules: &Arc<ProxyRules>,
        svc: &'a MeshServiceView,
        port: &'a ServicePort,
        address: &str,
        listen_port: u32,
        bind: bool,
    ) -> (Arc<ResourcePlan>, [Arc<ResourcePlan>; 2]) {
        let key = (
            Arc::as_ptr(rules) as usize,
            port as *const ServicePort as usize,
        );
        let t = self.targets.entry(key).or_insert_with(|| {
            let (cluster, timeouts, protocol) = outbound_target(ctx, rules, svc, port);
            let eds = [
                Arc::new(ResourcePlan::Cluster(ClusterPlan {
                    name: cluster.clone(),
                    protocol,
                    source: ClusterSource::Eds,
                    timeouts: timeouts.for_cluster(),
                })),
                Arc::new(ResourcePlan::Endpoints(EndpointsPlan {
                    endpoints: endpoints.get(&cluster),
                    cluster: cluster.clone(),
                })),
            ];
            Target {
                _rules: rules.clone(),
                cluster,
                timeouts,
                protocol,
                eds,
            }
        });
        let same = self.listeners.entry((key, listen_port, bind)).or_default();
        if let Some((_, l)) = same.iter().find(|(a, _)| a == address) {
            return (l.clone(), t.eds.clone());
        }
        let (name, stat_prefix) = listener_names("outbound", address, listen_port);
        let l = Arc::new(ResourcePlan::Listener(ListenerPlan {
            stat_prefix,
            name,
            address: SocketAddr {
                address: address.to_string(),
                port: listen_port,
            },
            inbound: false,
            bind_to_port: bind,
            use_original_dst: false,
            filter: filter(t.protocol, t.cluster.clone(), t.timeouts),
        }));
        same.push((address.to_string(), l.clone()));
        (l, t.eds.clone())
    }
}

/// [`generate_with`], sharing `memo` with the other proxies of the mesh
/// generated from the same `ctx`.
pub fn generate_memo<'a>(
    ctx: &'a MeshContext,
    endpoints: &MeshEndpoints,
    dp: &DataplaneView,
    meta: ProxyMeta,
    memo: &mut OutboundMemo<'a>,
) -> ProxyPlan {
    let net = &dp.spec.networking;
    let mut plan = ProxyPlan {
        // Each inbound: a listener and a cluster; each outbound: a listener,
        // and a cluster and its endpoints; a few more.
        resources: Vec::with_capacity(2 * net.inbound.len() + 3 * net.outbound.len() + 4),
        ..Default::default()
    };
    let proxy = ProxyRef {
        name: &dp.name,
        labels: &dp.labels,
        inbounds: net
            .inbound
            .iter()
            .map(|i| InboundRef {
                name: i.name.as_deref(),
                port: i.port,
                tags: &i.tags,
            })
            .collect(),
    };
    let selection = ctx.timeouts.rules_for(&proxy);
    let rules = &*selection.rules;
    plan.warnings
        .extend(selection.errors.iter().map(ToString::to_string));

    // Inbounds: the proxy's address -> the local application.
    for (inbound, iref) in net.inbound.iter().zip(&proxy.inbounds) {
        let protocol = Protocol::parse(
            inbound
                .tags
                .get(crate::input::PROTOCOL_TAG)
                .map(String::as_str),
        );
        let timeouts = Timeouts::from_conf(rules.inbound_conf(iref).as_ref().map(|c| &c.conf));
        let service_port = inbound.service_port.unwrap_or(inbound.port);
        let service_address = inbound
            .service_address
            .clone()
            .unwrap_or_else(|| "127.0.0.1".into());
        let cluster = name_of("localhost", None, service_port);
        // Inbounds are few: the plan so far is where to look.
        let seen = plan
            .resources
            .iter()
            .any(|r| matches!(&**r, ResourcePlan::Cluster(c) if c.name == cluster));
        if !seen {
            plan.resources
                .push(Arc::new(ResourcePlan::Cluster(ClusterPlan {
                    name: cluster.clone(),
                    protocol,
                    source: ClusterSource::Static(SocketAddr {
                        address: service_address,
                        port: service_port,
                    }),
                    timeouts: timeouts.for_cluster(),
                })));
        }
        let address = inbound
            .address
            .clone()
            .unwrap_or_else(|| net.address.clone());
        let (name, stat_prefix) = listener_names("inbound", &address, inbound.port);
        plan.resources
            .push(Arc::new(ResourcePlan::Listener(ListenerPlan {
                stat_prefix,
                name,
                address: SocketAddr {
                    address,
                    port: inbound.port,
                },
                inbound: true,
                bind_to_port: true,
                use_original_dst: false,
                filter: filter(protocol, cluster, timeouts),
            })));
    }

    // Outbounds listed in the Dataplane: a local port -> a MeshService port.
    // The EDS clusters and endpoints the listeners use.
    let mut used: Vec<[Arc<ResourcePlan>; 2]> = Vec::new();
    for outbound in &net.outbound {
        let Some((svc, port)) = resolve_outbound(ctx, outbound) else {
            plan.warnings.push(format!(
                "outbound {}: no MeshService matches {}",
                outbound.port,
                describe(outbound)
            ));
            continue;
        };
        let address = outbound.address.as_deref().unwrap_or("127.0.0.1");
        let (listener, eds) = memo.outbound(
            ctx,
            endpoints,
            &selection.rules,
            svc,
            port,
            address,
            outbound.port,
            true,
        );
        plan.resources.push(listener);
        used.push(eds);
    }

    // With transparent proxying every reachable MeshService gets a listener on its VIP.
    if let Some(tp) = &net.transparent_proxying {
        for svc in ctx.services.values() {
            for vip in &svc.status.vips {
                for port in &svc.spec.ports {
                    let (listener, eds) = memo.outbound(
                        ctx,
                        endpoints,
                        &selection.rules,
                        svc,
                        port,
                        &vip.ip,
                        port.port,
                        false,
                    );
                    plan.resources.push(listener);
                    used.push(eds);
                }
            }
        }
        let [cluster, listener] = memo
            .passthrough
            .entry(tp.redirect_port_outbound)
            .or_insert_with(|| passthrough(tp.redirect_port_outbound))
            .clone();
        plan.resources.push(cluster);
        plan.resources.push(listener);
    }

    // The mesh's hostnames, answered with their VIPs on kuma-dp's DNS port.
    if let Some(port) = meta.dns_port.filter(|p| *p != 0) {
        let dns = memo
            .dns
            .entry(port)
            .or_insert_with(|| dns_listener(ctx, port))
            .clone();
        plan.resources.push(dns);
    }

    // One EDS cluster and its endpoints per MeshService port used, by name
    // (the same plan whatever the order of the outbounds).
    used.sort_by(|a, b| a[0].name().cmp(b[0].name()));
    used.dedup_by(|a, b| a[0].name() == b[0].name());
    for [cluster, endpoints] in used {
        plan.resources.push(cluster);
        plan.resources.push(endpoints);
    }
    plan.timeout_rules = selection.rules;
    plan
}

/// The transparent proxy's passthrough: a cluster to wherever the
/// connection was going, and the listener that takes what is redirected.
fn passthrough(redirect_port: u32) -> [Arc<ResourcePlan>; 2] {
    [
        Arc::new(ResourcePlan::Cluster(ClusterPlan {
            name: PASSTHROUGH.into(),
            protocol: Protocol::Tcp,
            source: ClusterSource::OriginalDst,
            timeouts: ClusterTimeouts::default(),
        })),
        Arc::new(ResourcePlan::Listener(ListenerPlan {
            name: PASSTHROUGH.into(),
            address: SocketAddr {
                address: "0.0.0.0".into(),
                port: redirect_port,
            },
            inbound: false,
            bind_to_port: true,
            use_original_dst: true,
            stat_prefix: PASSTHROUGH.replace(':', "_"),
            filter: FilterPlan::Tcp {
                cluster: PASSTHROUGH.into(),
                idle_ms: Timeouts::default().idle_ms,
            },
        })),
    ]
}

/// The DNS listener on `port`: every hostname of the mesh's MeshServices
/// with their VIPs.
fn dns_listener(ctx: &MeshContext, port: u32) -> Arc<ResourcePlan> {
    let mut records: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for svc in ctx.services.values() {
        let ips: Vec<String> = svc.status.vips.iter().map(|v| v.ip.clone()).collect();
        if ips.is_empty() {
            continue;
        }
        for a in &svc.status.addresses {
            records
                .entry(a.hostname.clone())
                .or_default()
                .extend(ips.iter().cloned());
        }
    }
    Arc::new(ResourcePlan::Listener(ListenerPlan {
        name: "kuma:dns".into(),
        address: SocketAddr {
            address: "127.0.0.1".into(),
            port,
        },
        inbound: false,
        bind_to_port: true,
        use_original_dst: false,
        stat_prefix: "kuma_dns".into(),
        filter: FilterPlan::Dns { records },
    }))
}

/// `kind:address:port` (`kind:port` without an address), written without
/// the formatting machinery: three of these per proxy and change add up
/// over 10k proxies.
fn name_of(kind: &str, address: Option<&str>, port: u32) -> String {
    let digits = Decimal::new(u64::from(port));
    let digits = digits.as_str();
    let mut name =
        String::with_capacity(kind.len() + address.map_or(0, |a| a.len() + 1) + 1 + digits.len());
    name.push_str(kind);
    name.push(':');
    if let Some(address) = address {
        name.push_str(address);
        name.push(':');
    }
    name.push_str(digits);
    name
}

/// A listener's name (`kind:address:port`) and its stats prefix (the same
/// with `_` for every `:`, as Kuma names them).
fn listener_names(kind: &str, address: &str, port: u32) -> (String, String) {
    let name = name_of(kind, Some(address), port);
    let stat_prefix = name.replace(':', "_");
    (name, stat_prefix)
}

fn filter(protocol: Protocol, cluster: String, timeouts: Timeouts) -> FilterPlan {
    if protocol.is_http() {
        FilterPlan::Http {
            cluster,
            protocol,
            timeouts,
        }
    } else {
        FilterPlan::Tcp {
            cluster,
            idle_ms: timeouts.idle_ms,
        }
    }
}

fn outbound_target(
    ctx: &MeshContext,
    rules: &ProxyRules,
    svc: &MeshServiceView,
    port: &ServicePort,
) -> (String, Timeouts, Protocol) {
    let dest = DestinationRef {
        name: &svc.name,
        labels: &svc.labels,
        port: port.port,
        port_name: port.name.as_deref(),
    };
    let timeouts = Timeouts::from_conf(rules.to_conf(&dest).as_ref().map(|c| &c.conf));
    (
        service_cluster_name(&ctx.mesh, &svc.name, port.port),
        timeouts,
        Protocol::parse(port.app_protocol.as_deref()),
    )
}

fn describe(o: &Outbound) -> String {
    match (&o.backend_ref, o.tags.get(SERVICE_TAG)) {
        (Some(b), _) => format!("backendRef {} {}", b.kind, b.name.as_deref().unwrap_or("")),
        (None, Some(s)) => format!("kuma.io/service {s}"),
        (None, None) => "nothing".into(),
    }
}

/// Finds the MeshService port an outbound points at: by `backendRef`, or by
/// the `kuma.io/service` tag the MeshService was generated from.
fn resolve_outbound<'a>(
    ctx: &'a MeshContext,
    o: &Outbound,
) -> Option<(&'a MeshServiceView, &'a ServicePort)> {
    let pick_port = |svc: &'a MeshServiceView,
                     want: Option<u32>|
     -> Option<(&'a MeshServiceView, &'a ServicePort)> {
        let port = match want {
            Some(p) => svc.spec.ports.iter().find(|sp| sp.port == p)?,
            None => svc.spec.ports.first()?,
        };
        Some((svc, port))
    };
    if let Some(b) = &o.backend_ref {
        if b.kind != "MeshService" {
            return None;
        }
        let svc = match &b.name {
            Some(n) => ctx.services.get(n)?,
            None => ctx
                .services
                .values()
                .find(|s| b.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))?,
        };
        return pick_port(svc, b.port);
    }
    let service = o.tags.get(SERVICE_TAG)?;
    let selects = |s: &MeshServiceView| {
        s.spec
            .selector
            .dataplane_tags
            .as_ref()
            .is_some_and(|t| t.len() == 1 && t.get(SERVICE_TAG) == Some(service))
    };
    // The MeshService generated from a tag is named after it: found without
    // a scan of the mesh's services; any other that selects the tag otherwise.
    let svc = match ctx.services.get(service) {
        Some(s) if selects(s) => s,
        _ => ctx.services.values().find(|s| selects(s))?,
    };
    pick_port(svc, None)
}

#[cfg(test)]
mod tests {
    use super::{listener_names, name_of};

    #[test]
    fn names_are_what_formatting_would_write() {
        assert_eq!(name_of("localhost", None, 8080), "localhost:8080");
        assert_eq!(name_of("localhost", None, 0), "localhost:0");
        for (address, port) in [("10.0.0.1", 10001), ("fd00::1", 80), ("::", u32::MAX)] {
            let (name, stat) = listener_names("outbound", address, port);
            assert_eq!(name, format!("outbound:{address}:{port}"));
            assert_eq!(stat, format!("outbound:{address}:{port}").replace(':', "_"));
        }
    }
}
