//! Tables as Kuma's kumactl prints them: `get` (MESH NAME AGE, NAME AGE for
//! global kinds, dataplanes with TAGS and ADDRESS) and `inspect` (meshes,
//! dataplanes, zones, services). Pure: JSON from the REST API in, text out.

use chrono::{DateTime, Utc};
use kuma_model::{ResourceKind, Scope};
use serde_json::Value;

/// Left-aligned columns separated by three spaces, the last one unpadded, as
/// Go's `tabwriter` lays out Kuma's tables.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Kuma's readable duration: `42s`, `5m`, `3h`, `12d`, `2y`.
pub fn duration(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "never".into();
    }
    let secs = secs.max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s if s < 365 * 86_400 => format!("{}d", s / 86_400),
        s => format!("{}y", s / (365 * 86_400)),
    }
}

fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// `never` for a missing time, else the time since it.
fn ago(v: &Value, now: DateTime<Utc>) -> String {
    time_of(v)
        .map(|t| duration(now.signed_duration_since(t)))
        .unwrap_or_else(|| "never".into())
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

/// Labels merged with a gateway's tags: `k=v k2=v1,v2`, sorted, as Kuma's
/// `DisplayTags`.
pub fn display_tags(labels: &Value, networking: &Value) -> String {
    let mut tags: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for source in [labels, &networking["gateway"]["tags"]] {
        if let Some(map) = source.as_object() {
            for (k, v) in map {
                tags.entry(k.clone()).or_default().insert(s(v));
            }
        }
    }
    tags.iter()
        .map(|(k, vs)| format!("{k}={}", vs.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `get` table of one kind: Kuma's custom dataplane printer, else MESH
/// NAME AGE (mesh-scoped) or NAME AGE (global). AGE is since the last change.
pub fn resource_table(kind: ResourceKind, items: &[Value], now: DateTime<Utc>) -> String {
    let meshed = kind.scope() == Scope::Mesh;
    let dataplane = kind == ResourceKind::Dataplane;
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            let age = ago(&item["modificationTime"], now);
            let mut row = Vec::new();
            if meshed {
                row.push(s(&item["mesh"]));
            }
            row.push(s(&item["name"]));
            if dataplane {
                row.push(display_tags(&item["labels"], &item["networking"]));
                row.push(s(&item["networking"]["address"]));
            }
            row.push(age);
            row
        })
        .collect();
    let headers: &[&str] = match (meshed, dataplane) {
        (_, true) => &["MESH", "NAME", "TAGS", "ADDRESS", "AGE"],
        (true, false) => &["MESH", "NAME", "AGE"],
        (false, false) => &["NAME", "AGE"],
    };
    table(headers, &rows)
}

/// Kuma's footer when a list has more pages.
pub fn pagination_footer(next: Option<&str>) -> Option<String> {
    let next = next?;
    let offset = next
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("offset="))
        .unwrap_or(next);
    Some(format!(
        "\nRerun command with --offset={offset} argument to retrieve more resources\n"
    ))
}

fn items(page: &Value) -> &[Value] {
    page["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// `inspect meshes`: MESH DATAPLANES (online/total).
pub fn mesh_insights_table(page: &Value) -> String {
    let rows: Vec<Vec<String>> = items(page)
        .iter()
        .map(|i| {
            vec![
                s(&i["name"]),
                format!(
                    "{}/{}",
                    i["dataplanes"]["online"].as_u64().unwrap_or(0),
                    i["dataplanes"]["total"].as_u64().unwrap_or(0)
                ),
            ]
        })
        .collect();
    table(&["MESH", "DATAPLANES"], &rows)
}

/// `inspect services`: SERVICE STATUS DATAPLANES (online/total).
pub fn service_insights_table(page: &Value) -> String {
    let rows: Vec<Vec<String>> = items(page)
        .iter()
        .map(|i| {
            let status = match i["status"].as_str().unwrap_or("") {
                "online" => "Online",
                "offline" => "Offline",
                "partially_degraded" => "Partially degraded",
                other => other,
            };
            vec![
                s(&i["name"]),
                status.to_owned(),
                format!(
                    "{}/{}",
                    i["dataplanes"]["online"].as_u64().unwrap_or(0),
                    i["dataplanes"]["total"].as_u64().unwrap_or(0)
                ),
            ]
        })
        .collect();
    table(&["SERVICE", "STATUS", "DATAPLANES"], &rows)
}

fn last_subscription(insight: &Value) -> &Value {
    insight["subscriptions"]
        .as_array()
        .and_then(|a| a.last())
        .unwrap_or(&Value::Null)
}

fn sum(insight: &Value, field: &str) -> u64 {
    insight["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|sub| sub["status"]["total"][field].as_u64().unwrap_or(0))
        .sum()
}

fn is_online(insight: &Value) -> bool {
    let last = last_subscription(insight);
    last["connectTime"].is_string() && last["disconnectTime"].is_null()
}

/// Online, Offline or Partially degraded, and why, as Kuma's overview status.
fn dataplane_status(dataplane: &Value, insight: &Value) -> (&'static str, Vec<String>) {
    let inbounds = dataplane["networking"]["inbound"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut notes = Vec::new();
    let mut ready = 0;
    for inbound in inbounds {
        let state = inbound["state"].as_str().unwrap_or("Ready");
        if state == "Ready" {
            ready += 1;
        } else {
            notes.push(format!(
                "inbound[port={}] is not ready",
                inbound["port"].as_u64().unwrap_or(0)
            ));
        }
    }
    let status = if !is_online(insight) || (!inbounds.is_empty() && ready == 0) {
        "Offline"
    } else if ready < inbounds.len() {
        "Partially degraded"
    } else {
        "Online"
    };
    (status, notes)
}

/// `inspect dataplanes`: Kuma's columns, from `dataplanes+insights`.
pub fn dataplane_overviews_table(page: &Value, now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = items(page)
        .iter()
        .map(|i| {
            let dataplane = &i["dataplane"];
            let insight = &i["dataplaneInsight"];
            let last = last_subscription(insight);
            let (status, notes) = dataplane_status(dataplane, insight);
            let mtls = &insight["mTLS"];
            let cert_expiration = time_of(&mtls["certificateExpirationTime"])
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into());
            let mut deps: Vec<String> = last["version"]["dependencies"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}: {}", s(v)))
                .collect();
            deps.sort();
            vec![
                s(&i["mesh"]),
                s(&i["name"]),
                display_tags(&i["labels"], &dataplane["networking"]),
                status.to_owned(),
                ago(&last["connectTime"], now),
                ago(&last["status"]["lastUpdateTime"], now),
                sum(insight, "responsesSent").to_string(),
                sum(insight, "responsesRejected").to_string(),
                ago(&mtls["lastCertificateRegeneration"], now),
                cert_expiration,
                mtls["certificateRegenerations"]
                    .as_u64()
                    .unwrap_or(0)
                    .to_string(),
                if mtls.is_null() {
                    "-".into()
                } else {
                    s(&mtls["issuedBackend"])
                },
                mtls["supportedBackends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(s)
                    .collect::<Vec<_>>()
                    .join(","),
                s(&last["version"]["kumaDp"]["version"]),
                s(&last["version"]["envoy"]["version"]),
                if deps.is_empty() {
                    "-".into()
                } else {
                    deps.join(", ")
                },
                notes.join(";"),
            ]
        })
        .collect();
    table(
        &[
            "MESH",
            "NAME",
            "TAGS",
            "STATUS",
            "LAST CONNECTED AGO",
            "LAST UPDATED AGO",
            "TOTAL UPDATES",
            "TOTAL ERRORS",
            "CERT REGENERATED AGO",
            "CERT EXPIRATION",
            "CERT REGENERATIONS",
            "CERT BACKEND",
            "SUPPORTED CERT BACKENDS",
            "KUMA-DP VERSION",
            "ENVOY VERSION",
            "DEPENDENCIES VERSIONS",
            "NOTES",
        ],
        &rows,
    )
}

/// `inspect zones`: Kuma's columns, from `zones+insights`.
pub fn zone_overviews_table(page: &Value, now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = items(page)
        .iter()
        .map(|i| {
            let insight = &i["zoneInsight"];
            let last = last_subscription(insight);
            let enabled = i["zone"]["enabled"].as_bool().unwrap_or(true);
            let status = if is_online(insight) && enabled {
                "Online"
            } else {
                "Offline"
            };
            // The zone's config is a JSON string; only its store type is shown.
            let backend = last["config"]
                .as_str()
                .and_then(|c| serde_json::from_str::<Value>(c).ok())
                .map(|c| s(&c["store"]["type"]))
                .unwrap_or_default();
            vec![
                s(&i["name"]),
                status.to_owned(),
                ago(&last["connectTime"], now),
                ago(&last["status"]["lastUpdateTime"], now),
                sum(insight, "responsesSent").to_string(),
                sum(insight, "responsesRejected").to_string(),
                s(&last["version"]["kumaCp"]["version"]),
                backend,
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATUS",
            "LAST CONNECTED AGO",
            "LAST UPDATED AGO",
            "TOTAL UPDATES",
            "TOTAL ERRORS",
            "ZONE-CP VERSION",
            "BACKEND",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn tables_align_like_kumas() {
        let t = table(&["ACTIVE", "NAME"], &[vec!["*".into(), "a".into()]]);
        assert_eq!(t, "ACTIVE   NAME\n*        a\n");
        let kind = ResourceKind::from_name("MeshTimeout").unwrap();
        let items =
            [json!({"mesh": "default", "name": "t1", "modificationTime": "2025-01-01T00:00:00Z"})];
        assert_eq!(
            resource_table(kind, &items, at("2025-01-02T00:00:00Z")),
            "MESH      NAME   AGE\ndefault   t1     1d\n"
        );
    }

    #[test]
    fn durations_read_as_kumas() {
        let d = chrono::TimeDelta::seconds;
        assert_eq!(duration(d(59)), "59s");
        assert_eq!(duration(d(61)), "1m");
        assert_eq!(duration(d(3 * 3600 + 5)), "3h");
        assert_eq!(duration(d(50 * 3600)), "2d");
        assert_eq!(duration(d(800 * 86_400)), "2y");
        assert_eq!(duration(d(-5)), "never");
    }

    #[test]
    fn dataplanes_show_tags_and_address() {
        let items = [json!({
            "mesh": "default", "name": "gw", "modificationTime": "2025-01-01T00:00:00Z",
            "labels": {"app": "edge"},
            "networking": {"address": "10.0.0.1", "gateway": {"tags": {"kuma.io/service": "edge", "app": "gw"}}}
        })];
        assert_eq!(
            resource_table(ResourceKind::Dataplane, &items, at("2025-01-01T00:00:30Z")),
            "MESH      NAME   TAGS                               ADDRESS    AGE\n\
             default   gw     app=edge,gw kuma.io/service=edge   10.0.0.1   30s\n"
        );
    }

    #[test]
    fn overview_status_follows_the_last_subscription_and_inbounds() {
        let dp =
            json!({"networking": {"inbound": [{"port": 1}, {"port": 2, "state": "NotReady"}]}});
        let online = json!({"subscriptions": [{"connectTime": "2025-01-01T00:00:00Z"}]});
        let gone = json!({"subscriptions": [{"connectTime": "2025-01-01T00:00:00Z", "disconnectTime": "2025-01-01T00:01:00Z"}]});
        assert_eq!(
            dataplane_status(&dp, &online),
            (
                "Partially degraded",
                vec!["inbound[port=2] is not ready".into()]
            )
        );
        assert_eq!(dataplane_status(&dp, &gone).0, "Offline");
        assert_eq!(dataplane_status(&json!({}), &online).0, "Online");
    }

    #[test]
    fn footer_names_the_next_offset() {
        assert_eq!(
            pagination_footer(Some("http://x/meshes?offset=2&size=1")).as_deref(),
            Some("\nRerun command with --offset=2 argument to retrieve more resources\n")
        );
        assert_eq!(pagination_footer(None), None);
    }
}
