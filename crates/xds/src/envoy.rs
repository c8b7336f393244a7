//! Plans -> Envoy protobuf. Mechanical: every decision was made in `generate`.

use crate::plan::{
    ClusterPlan, ClusterSource, EndpointsPlan, FilterPlan, ListenerPlan, Protocol, ResourcePlan,
    SocketAddr,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Http1ProtocolOptions,
    Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options, http_protocol_options::explicit_http_config,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration};
use envoy_types::util::pack_any;

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Encodes one plan as the `Any` Envoy receives.
pub fn to_any(plan: &ResourcePlan) -> Any {
    match plan {
        ResourcePlan::Cluster(c) => pack_any(cluster(c)),
        ResourcePlan::Endpoints(e) => pack_any(endpoints(e)),
        ResourcePlan::Listener(l) => pack_any(listener(l)),
    }
}

pub fn duration(ms: u64) -> Duration {
    Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn socket(a: &SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: a.address.clone(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(a.port)),
            ..Default::default()
        })),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn lb_endpoints(cluster_name: &str, eps: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: eps
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(a)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn cluster(c: &ClusterPlan) -> Cluster {
    let mut out = Cluster {
        name: c.name.clone(),
        connect_timeout: Some(duration(c.timeouts.connection_ms)),
        ..Default::default()
    };
    match &c.source {
        ClusterSource::Static(a) => {
            out.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            ));
            out.load_assignment = Some(lb_endpoints(&c.name, std::slice::from_ref(a)));
        }
        ClusterSource::Eds => {
            out.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            ));
            out.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: c.name.clone(),
            });
        }
        ClusterSource::OriginalDst => {
            out.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32,
            ));
            out.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
        }
    }
    if c.protocol.is_http() {
        let protocol_config = match c.protocol {
            Protocol::Http2 | Protocol::Grpc => {
                explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )
            }
            Protocol::Http | Protocol::Tcp => {
                explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )
            }
        };
        let opts = HttpProtocolOptions {
            common_http_protocol_options: Some(CommonHttpOptions {
                idle_timeout: Some(duration(c.timeouts.idle_ms)),
                max_connection_duration: Some(duration(c.timeouts.max_connection_duration_ms)),
                max_stream_duration: Some(duration(c.timeouts.max_stream_duration_ms)),
                ..Default::default()
            }),
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(protocol_config),
                    },
                ),
            ),
            ..Default::default()
        };
        out.typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack_any(opts));
    }
    out
}

pub fn endpoints(e: &EndpointsPlan) -> ClusterLoadAssignment {
    lb_endpoints(&e.cluster, e.endpoints.addrs())
}

fn dns_listener(
    l: &ListenerPlan,
    records: &std::collections::BTreeMap<String, Vec<String>>,
) -> Listener {
    use envoy_types::pb::envoy::config::core::v3::socket_address::Protocol as SocketProtocol;
    use envoy_types::pb::envoy::config::listener::v3::{
        ListenerFilter, UdpListenerConfig, listener_filter,
    };
    use envoy_types::pb::envoy::data::dns::v3::{DnsTable, dns_table};
    use envoy_types::pb::envoy::extensions::filters::udp::dns_filter::v3::{
        DnsFilterConfig, dns_filter_config,
    };
    let table = DnsTable {
        virtual_domains: records
            .iter()
            .map(|(name, ips)| dns_table::DnsVirtualDomain {
                name: name.clone(),
                endpoint: Some(dns_table::DnsEndpoint {
                    endpoint_config: Some(dns_table::dns_endpoint::EndpointConfig::AddressList(
                        dns_table::AddressList {
                            address: ips.clone(),
                        },
                    )),
                }),
                answer_ttl: Some(duration(30_000)),
            })
            .collect(),
        ..Default::default()
    };
    let config = DnsFilterConfig {
        stat_prefix: l.stat_prefix.clone(),
        server_config: Some(dns_filter_config::ServerContextConfig {
            config_source: Some(
                dns_filter_config::server_context_config::ConfigSource::InlineDnsTable(table),
            ),
        }),
        ..Default::default()
    };
    let mut address = socket(&l.address);
    if let Some(address::Address::SocketAddress(sa)) = &mut address.address {
        sa.protocol = SocketProtocol::Udp as i32;
    }
    Listener {
        name: l.name.clone(),
        address: Some(address),
        stat_prefix: l.stat_prefix.clone(),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.udp.dns_filter".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(config))),
            ..Default::default()
        }],
        udp_listener_config: Some(UdpListenerConfig::default()),
        traffic_direction: 2,
        ..Default::default()
    }
}

pub fn listener(l: &ListenerPlan) -> Listener {
    let network_filter = match &l.filter {
        FilterPlan::Dns { records } => return dns_listener(l, records),
        FilterPlan::Tcp { cluster, idle_ms } => Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(TcpProxy {
                stat_prefix: l.stat_prefix.clone(),
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.clone())),
                idle_timeout: Some(duration(*idle_ms)),
                ..Default::default()
            }))),
        },
        FilterPlan::Http {
            cluster,
            protocol,
            timeouts,
        } => {
            let route = Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.clone(),
                    )),
                    timeout: Some(duration(timeouts.request_ms)),
                    idle_timeout: Some(duration(timeouts.stream_idle_ms)),
                    ..Default::default()
                })),
                ..Default::default()
            };
            let hcm = HttpConnectionManager {
                stat_prefix: l.stat_prefix.clone(),
                codec_type: match protocol {
                    Protocol::Http2 | Protocol::Grpc => {
                        http_connection_manager::CodecType::Http2 as i32
                    }
                    _ => http_connection_manager::CodecType::Auto as i32,
                },
                route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
                    RouteConfiguration {
                        name: l.name.clone(),
                        validate_clusters: Some(BoolValue { value: false }),
                        virtual_hosts: vec![VirtualHost {
                            name: cluster.clone(),
                            domains: vec!["*".into()],
                            routes: vec![route],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )),
                http_filters: vec![HttpFilter {
                    name: "envoy.filters.http.router".into(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                        Router::default(),
                    ))),
                    ..Default::default()
                }],
                request_headers_timeout: Some(duration(timeouts.request_headers_ms)),
                // MeshTimeout's idle timeout lives on the cluster; the listener side is off.
                common_http_protocol_options: Some(CommonHttpOptions {
                    idle_timeout: Some(duration(0)),
                    ..Default::default()
                }),
                ..Default::default()
            };
            Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }
        }
    };
    Listener {
        name: l.name.clone(),
        address: Some(socket(&l.address)),
        stat_prefix: l.stat_prefix.clone(),
        filter_chains: vec![FilterChain {
            filters: vec![network_filter],
            ..Default::default()
        }],
        bind_to_port: if l.bind_to_port {
            None
        } else {
            Some(BoolValue { value: false })
        },
        use_original_dst: if l.use_original_dst {
            Some(BoolValue { value: true })
        } else {
            None
        },
        traffic_direction: if l.inbound { 1 } else { 2 },
        ..Default::default()
    }
}
