//! MeshServices generated from `kuma.io/service` tags, so a newcomer writes
//! only Dataplanes; VIPs from the IPAM range and hostnames from
//! HostnameGenerators go in their status.

use kuma_xds::MeshContext;
use kuma_xds::input::{PROTOCOL_TAG, SERVICE_TAG};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub const MANAGED_BY_LABEL: &str = "kuma.io/managed-by";
pub const MANAGED_BY_GENERATOR: &str = "meshservice-generator";

/// A MeshService the generator wants to exist.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedService {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
}

fn valid_name(s: &str) -> bool {
    kuma_model::ResourceName::new(s).is_ok()
}

/// The MeshServices implied by the mesh's Dataplanes: one per `kuma.io/service`
/// value, with a port per distinct inbound port.
pub fn desired(ctx: &MeshContext, zone: &str) -> BTreeMap<String, GeneratedService> {
    // Per service, the inbound ports of each of its dataplanes (in name order).
    let mut by_service: BTreeMap<String, Vec<BTreeMap<u32, String>>> = BTreeMap::new();
    for dp in ctx.dataplanes.values() {
        let mut mine: BTreeMap<String, BTreeMap<u32, String>> = BTreeMap::new();
        for inbound in &dp.spec.networking.inbound {
            let Some(service) = inbound.service() else {
                continue;
            };
            if !valid_name(service) {
                continue;
            }
            let protocol = inbound
                .tags
                .get(PROTOCOL_TAG)
                .cloned()
                .unwrap_or_else(|| "tcp".into());
            mine.entry(service.to_string())
                .or_default()
                .entry(inbound.port)
                .or_insert(protocol);
        }
        for (service, ports) in mine {
            by_service.entry(service).or_default().push(ports);
        }
    }
    by_service
        .into_iter()
        .map(|(name, instances)| {
            // As in Kuma, every instance must expose the same ports; the first
            // one decides and instances that differ do not join the service.
            let ports = instances.into_iter().next().unwrap_or_default();
            let labels: BTreeMap<String, String> = [
                (MANAGED_BY_LABEL, MANAGED_BY_GENERATOR),
                ("kuma.io/origin", "zone"),
                ("kuma.io/env", "universal"),
                ("kuma.io/zone", zone),
                ("kuma.io/display-name", name.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let spec = json!({
                "selector": { "dataplaneTags": { SERVICE_TAG: name } },
                "ports": ports.iter().map(|(p, proto)| json!({
                    "name": p.to_string(), "port": p, "targetPort": p, "appProtocol": proto
                })).collect::<Vec<_>>(),
                "state": "Available",
            });
            (name.clone(), GeneratedService { name, labels, spec })
        })
        .collect()
}

/// The first free address of `cidr` (skipping the network address).
pub fn allocate_vip(used: &BTreeSet<Ipv4Addr>, cidr: (Ipv4Addr, u8)) -> Option<Ipv4Addr> {
    let base = u32::from(cidr.0);
    let size = 1u64 << (32 - u32::from(cidr.1));
    (1..size.saturating_sub(1))
        .map(|i| Ipv4Addr::from(base + i as u32))
        .find(|ip| !used.contains(ip))
}

/// A HostnameGenerator's selector and template.
#[derive(Clone, Debug)]
pub struct HostnameTemplate {
    pub name: String,
    pub match_labels: BTreeMap<String, String>,
    pub template: String,
}

impl HostnameTemplate {
    pub fn from_spec(name: &str, spec: &Value) -> Option<Self> {
        let template = spec.get("template")?.as_str()?.to_string();
        let match_labels = spec["selector"]["meshService"]["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Some(HostnameTemplate {
            name: name.to_string(),
            match_labels,
            template,
        })
    }

    /// Kuma's default on universal: `local-mesh-service` for the zone's own services.
    pub fn default_local() -> Self {
        HostnameTemplate {
            name: "local-mesh-service".into(),
            match_labels: BTreeMap::new(),
            template: "{{ .DisplayName }}.svc.mesh.local".into(),
        }
    }

    /// Renders the template for a service, or `None` if its selector does not match.
    pub fn render(
        &self,
        service: &str,
        mesh: &str,
        zone: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<String> {
        if !self
            .match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            return None;
        }
        let display = labels
            .get("kuma.io/display-name")
            .map(String::as_str)
            .unwrap_or(service);
        let mut out = self.template.clone();
        for (pat, val) in [
            ("{{ .DisplayName }}", display),
            ("{{ .Mesh }}", mesh),
            ("{{ .Zone }}", zone),
            ("{{ .Name }}", service),
        ] {
            out = out.replace(pat, val);
        }
        let mut rest = out.clone();
        while let Some(start) = rest.find("{{ label \"") {
            let after = &rest[start + 10..];
            let Some(end) = after.find("\" }}") else {
                break;
            };
            let key = &after[..end];
            let value = labels.get(key)?.clone();
            rest = format!("{}{}{}", &rest[..start], value, &after[end + 4..]);
        }
        out = rest;
        (!out.contains("{{")).then_some(out)
    }
}

/// The status a generated (or user-written) MeshService should carry.
pub fn status(vip: Option<Ipv4Addr>, hostnames: &[(String, String)]) -> Value {
    json!({
        "vips": vip.map(|v| vec![json!({"ip": v.to_string()})]).unwrap_or_default(),
        "addresses": hostnames.iter().map(|(h, gen_name)| json!({
            "hostname": h, "origin": "HostnameGenerator", "hostnameGeneratorRef": {"coreName": gen_name}
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_xds::input::{DataplaneSpec, DataplaneView};
    use std::sync::Arc;

    fn mk_dp(
        name: &str,
        service: &str,
        port: u32,
        protocol: Option<&str>,
    ) -> (String, Arc<DataplaneView>) {
        let mut tags = json!({ SERVICE_TAG: service });
        if let Some(p) = protocol {
            tags[PROTOCOL_TAG] = json!(p);
        }
        let spec: DataplaneSpec = serde_json::from_value(json!({
            "networking": {"address": "10.0.0.1", "inbound": [{"port": port, "tags": tags}]}
        }))
        .unwrap();
        (
            name.into(),
            Arc::new(DataplaneView {
                name: name.into(),
                labels: BTreeMap::new(),
                spec,
            }),
        )
    }

    #[test]
    fn one_service_per_tag_with_the_first_instances_ports() {
        let ctx = MeshContext {
            mesh: "default".into(),
            dataplanes: [
                mk_dp("b1", "backend", 8080, Some("http")),
                mk_dp("b2", "backend", 9090, None),
                mk_dp("b3", "db", 5432, None),
                mk_dp("w", "web", 80, None),
                mk_dp("bad", "Bad_Name", 1, None),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let d = desired(&ctx, "zone-1");
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["backend", "db", "web"]);
        // b2 exposes another port than b1: it does not change the service.
        assert_eq!(
            d["backend"].spec["ports"],
            json!([{"name": "8080", "port": 8080, "targetPort": 8080, "appProtocol": "http"}])
        );
        assert_eq!(d["db"].spec["ports"][0]["appProtocol"], "tcp");
        assert_eq!(d["backend"].labels["kuma.io/zone"], "zone-1");
    }

    #[test]
    fn vips_skip_used_addresses() {
        let cidr = (Ipv4Addr::new(241, 0, 0, 0), 8);
        let mut used = BTreeSet::new();
        assert_eq!(allocate_vip(&used, cidr), Some(Ipv4Addr::new(241, 0, 0, 1)));
        used.insert(Ipv4Addr::new(241, 0, 0, 1));
        assert_eq!(allocate_vip(&used, cidr), Some(Ipv4Addr::new(241, 0, 0, 2)));
        let tiny = (Ipv4Addr::new(10, 0, 0, 0), 31);
        assert_eq!(allocate_vip(&BTreeSet::new(), tiny), None);
    }

    #[test]
    fn hostname_templates() {
        let labels: BTreeMap<String, String> = [
            ("kuma.io/display-name".to_string(), "backend".to_string()),
            ("team".into(), "a".into()),
        ]
        .into();
        assert_eq!(
            HostnameTemplate::default_local()
                .render("backend", "default", "z", &labels)
                .as_deref(),
            Some("backend.svc.mesh.local")
        );
        let t = HostnameTemplate::from_spec(
            "g",
            &json!({"template": "{{ .DisplayName }}.{{ label \"team\" }}.{{ .Mesh }}", "selector": {"meshService": {"matchLabels": {"team": "a"}}}}),
        )
        .unwrap();
        assert_eq!(
            t.render("backend", "default", "z", &labels).as_deref(),
            Some("backend.a.default")
        );
        assert_eq!(t.render("backend", "default", "z", &BTreeMap::new()), None);
    }
}
