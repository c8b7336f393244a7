//! `POST /bootstrap`: Kuma's request and response, and the Envoy bootstrap
//! (JSON, which Envoy reads as YAML) that points Envoy's ADS at this server.

use crate::config::AdsApi;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Kuma's bootstrap request (the fields we use; unknown ones are ignored).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BootstrapRequest {
    pub mesh: String,
    pub name: String,
    pub proxy_type: String,
    pub dataplane_token: String,
    /// The Dataplane resource (JSON or YAML text) for universal lifecycle.
    pub dataplane_resource: String,
    pub version: Value,
    /// PEM CA the proxy used to verify this server; Envoy gets it too.
    pub ca_cert: String,
    pub dns_port: u32,
    pub readiness_port: u32,
    pub workdir: String,
    pub operating_system: String,
    pub features: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapResponse {
    /// The Envoy bootstrap; base64 on the wire, as Go encodes `[]byte`.
    #[serde(with = "b64")]
    pub bootstrap: Vec<u8>,
    pub kuma_sidecar_configuration: SidecarConfiguration,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SidecarConfiguration {
    pub networking: SidecarNetworking,
    pub metrics: Value,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SidecarNetworking {
    pub address: String,
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Node metadata keys (Kuma's).
pub const META_DATAPLANE_RESOURCE: &str = "dataplane.resource";
pub const META_ADMIN_PORT: &str = "dataplane.admin.port";
pub const META_VERSION: &str = "version";
pub const META_PROXY_TYPE: &str = "dataplane.proxyType";
pub const META_DNS_PORT: &str = "dataplane.dns.port";

/// Kuma's node id: `<mesh>.<name>`.
pub fn node_id(mesh: &str, name: &str) -> String {
    format!("{mesh}.{name}")
}

/// Splits a node id into mesh and name (at the first dot: names may hold dots).
pub fn parse_node_id(id: &str) -> Option<(&str, &str)> {
    let (mesh, name) = id.split_once('.')?;
    (!mesh.is_empty() && !name.is_empty()).then_some((mesh, name))
}

/// Everything the bootstrap is made from.
#[derive(Clone, Debug)]
pub struct BootstrapParams<'a> {
    pub node_id: String,
    pub service: String,
    pub admin_port: u32,
    pub xds_host: &'a str,
    pub xds_port: u16,
    pub ca_cert: &'a str,
    pub token: &'a str,
    pub ads: AdsApi,
    pub dataplane_resource: &'a str,
    pub version: &'a Value,
    pub proxy_type: &'a str,
    /// kuma-dp's DNS port (0: no DNS).
    pub dns_port: u32,
}

/// The Envoy bootstrap.
pub fn envoy_bootstrap(p: &BootstrapParams<'_>) -> Value {
    let mut grpc_service = json!({ "envoy_grpc": { "cluster_name": "ads_cluster" } });
    if !p.token.is_empty() {
        grpc_service["initial_metadata"] = json!([{ "key": "authorization", "value": p.token }]);
    }
    let mut tls = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": { "alpn_protocols": ["h2"] }
    });
    // SNI carries host names only, never addresses.
    if p.xds_host.parse::<std::net::IpAddr>().is_err() {
        tls["sni"] = Value::String(p.xds_host.to_string());
    }
    if !p.ca_cert.is_empty() {
        tls["common_tls_context"]["validation_context"] =
            json!({ "trusted_ca": { "inline_string": p.ca_cert } });
    }
    let mut metadata = json!({
        META_ADMIN_PORT: p.admin_port.to_string(),
        META_VERSION: p.version,
    });
    if !p.dataplane_resource.is_empty() {
        metadata[META_DATAPLANE_RESOURCE] = Value::String(p.dataplane_resource.to_string());
    }
    if p.dns_port != 0 {
        metadata[META_DNS_PORT] = Value::String(p.dns_port.to_string());
    }
    if !p.proxy_type.is_empty() {
        metadata[META_PROXY_TYPE] = Value::String(p.proxy_type.to_string());
    }
    json!({
        "node": { "id": p.node_id, "cluster": p.service, "metadata": metadata },
        "admin": {
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": p.admin_port } }
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": match p.ads { AdsApi::Delta => "DELTA_GRPC", AdsApi::StateOfTheWorld => "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [grpc_service]
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" }
        },
        "static_resources": {
            "clusters": [{
                "name": "ads_cluster",
                "type": "STRICT_DNS",
                "dns_lookup_family": "V4_PREFERRED",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": "ads_cluster",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                        "socket_address": { "address": p.xds_host, "port_value": p.xds_port }
                    } } }] }]
                },
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                },
                "upstream_connection_options": { "tcp_keepalive": {} },
                "transport_socket": { "name": "envoy.transport_sockets.tls", "typed_config": tls }
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_split_at_the_first_dot() {
        assert_eq!(
            parse_node_id("default.web-1.zone"),
            Some(("default", "web-1.zone"))
        );
        assert_eq!(parse_node_id("nodot"), None);
        assert_eq!(node_id("m", "n"), "m.n");
    }

    #[test]
    fn bootstrap_speaks_http2_to_ads_and_carries_the_token() {
        let version = json!({});
        let b = envoy_bootstrap(&BootstrapParams {
            node_id: "default.web-1".into(),
            service: "web".into(),
            admin_port: 9902,
            xds_host: "localhost",
            xds_port: 5678,
            ca_cert: "PEM",
            token: "tok",
            ads: AdsApi::Delta,
            dataplane_resource: "",
            version: &version,
            proxy_type: "dataplane",
            dns_port: 0,
        });
        let cluster = &b["static_resources"]["clusters"][0];
        assert!(
            cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                ["explicit_http_config"]["http2_protocol_options"]
                .is_object()
        );
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"][0]["value"],
            "tok"
        );
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 9902);
        assert_eq!(
            cluster["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
                ["trusted_ca"]["inline_string"],
            "PEM"
        );
    }

    #[test]
    fn response_bootstrap_is_base64_like_go() {
        let r = BootstrapResponse {
            bootstrap: b"{}".to_vec(),
            kuma_sidecar_configuration: Default::default(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["bootstrap"], "e30=");
        let back: BootstrapResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back.bootstrap, b"{}");
    }
}
