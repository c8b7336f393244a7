//! MeshPassthrough: which destinations outside the mesh proxies may reach
//! directly when outbound passthrough is restricted.

use super::common::{TOP_MESH_DP, TargetRef, is_ip};
use super::policy::top_level;
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Passthrough rules for the selected proxies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshPassthrough {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub default: MeshPassthroughConf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PassthroughMode {
    /// Any destination is reachable.
    All,
    /// Only destinations in `appendMatch`.
    Matched,
    /// No destination outside the mesh.
    None,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshPassthroughConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough_mode: Option<PassthroughMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_match: Option<Vec<PassthroughMatch>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PassthroughMatchType {
    Domain,
    IP,
    CIDR,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PassthroughProtocol {
    Tcp,
    Tls,
    Grpc,
    Http,
    Http2,
    Mysql,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassthroughMatch {
    #[serde(rename = "type")]
    pub type_: PassthroughMatchType,
    /// A domain (`api.example.com`, `*.example.com`), an IP or a CIDR.
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default = "default_protocol")]
    pub protocol: PassthroughProtocol,
}

fn default_protocol() -> PassthroughProtocol {
    PassthroughProtocol::Tcp
}

fn valid_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

impl Spec for MeshPassthrough {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(&self.target_ref, TOP_MESH_DP, false, path, errs);
        let base = path.field("default").field("appendMatch");
        let mut seen: HashMap<(u32, PassthroughProtocol), Vec<&str>> = HashMap::new();
        let mut port_protocols: HashMap<u32, PassthroughProtocol> = HashMap::new();
        for (i, m) in self.default.append_match.iter().flatten().enumerate() {
            let p = base.index(i);
            if m.protocol == PassthroughProtocol::Mysql && m.port.is_none() {
                errs.at(&p.field("port"), "port must be defined for Mysql protocol");
            }
            if let Some(port) = m.port {
                if port == 0 || port > 65535 {
                    errs.at(&p.field("port"), "port must be a valid (1-65535)");
                }
                let l7 = |proto: PassthroughProtocol| {
                    matches!(
                        proto,
                        PassthroughProtocol::Http
                            | PassthroughProtocol::Http2
                            | PassthroughProtocol::Grpc
                    )
                };
                match port_protocols.get(&port) {
                    Some(prev) if *prev != m.protocol && (l7(*prev) || l7(m.protocol)) => errs.at(
                        &p.field("port"),
                        "using the same port in multiple matches requires the same protocol for the following protocols: [http http2 grpc]",
                    ),
                    _ => {
                        port_protocols.insert(port, m.protocol);
                    }
                }
            }
            let values = seen.entry((m.port.unwrap_or(0), m.protocol)).or_default();
            if values.contains(&m.value.as_str()) {
                errs.at(
                    &p.field("value"),
                    format!(
                        "value {} is already defiend for this port and protocol",
                        m.value
                    ),
                );
            }
            values.push(&m.value);
            match m.type_ {
                PassthroughMatchType::CIDR if !valid_cidr(&m.value) => {
                    errs.at(&p.field("value"), "provided CIDR has incorrect value")
                }
                PassthroughMatchType::IP if !is_ip(&m.value) => {
                    errs.at(&p.field("value"), "provided IP has incorrect value")
                }
                PassthroughMatchType::Domain => {
                    if m.protocol == PassthroughProtocol::Mysql {
                        errs.at(
                            &p.field("protocol"),
                            "protocol mysql is not supported for a domain",
                        );
                    }
                    if let Some(rest) = m.value.strip_prefix("*.") {
                        if !super::common::is_domain(rest) {
                            errs.at(&p.field("value"), "provided DNS has incorrect value");
                        }
                    } else if m.value.contains('*') {
                        errs.at(&p.field("value"), "provided DNS has incorrect value, partial wildcard is currently not supported");
                    } else if !super::common::is_domain(&m.value) {
                        errs.at(&p.field("value"), "provided DNS has incorrect value");
                    }
                }
                _ => {}
            }
        }
    }
}
