//! MeshTimeout: what a merged `default` means, with Kuma's defaults.

use serde::Serialize;
use serde_json::Value;

/// Timeouts in milliseconds; 0 disables one, as in Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    pub connection_ms: u64,
    pub idle_ms: u64,
    pub request_ms: u64,
    pub stream_idle_ms: u64,
    pub max_stream_duration_ms: u64,
    pub max_connection_duration_ms: u64,
    pub request_headers_ms: u64,
}

impl Default for Timeouts {
    /// Kuma's defaults when no MeshTimeout applies.
    fn default() -> Self {
        Timeouts {
            connection_ms: 5_000,
            idle_ms: 3_600_000,
            request_ms: 15_000,
            stream_idle_ms: 1_800_000,
            max_stream_duration_ms: 0,
            max_connection_duration_ms: 0,
            request_headers_ms: 0,
        }
    }
}

/// The part of [`Timeouts`] a cluster carries. A cluster plan holds only
/// this, so a change to a listener-only timeout (`http.requestTimeout`,
/// `streamIdleTimeout`, `requestHeadersTimeout`) leaves clusters at their
/// version: Envoy would get nothing new, and their endpoints need no resend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTimeouts {
    pub connection_ms: u64,
    pub idle_ms: u64,
    pub max_stream_duration_ms: u64,
    pub max_connection_duration_ms: u64,
}

impl Default for ClusterTimeouts {
    fn default() -> Self {
        Timeouts::default().for_cluster()
    }
}

impl Timeouts {
    pub fn for_cluster(self) -> ClusterTimeouts {
        ClusterTimeouts {
            connection_ms: self.connection_ms,
            idle_ms: self.idle_ms,
            max_stream_duration_ms: self.max_stream_duration_ms,
            max_connection_duration_ms: self.max_connection_duration_ms,
        }
    }

    /// Applies a merged MeshTimeout `default` on top of Kuma's defaults.
    /// Unparseable durations keep the default (validation refuses them on write).
    pub fn from_conf(conf: Option<&Value>) -> Self {
        let mut t = Timeouts::default();
        let Some(conf) = conf else { return t };
        let get = |v: Option<&Value>| v.and_then(Value::as_str).and_then(parse_duration_ms);
        if let Some(ms) = get(conf.get("connectionTimeout")) {
            t.connection_ms = ms;
        }
        if let Some(ms) = get(conf.get("idleTimeout")) {
            t.idle_ms = ms;
        }
        if let Some(http) = conf.get("http") {
            if let Some(ms) = get(http.get("requestTimeout")) {
                t.request_ms = ms;
            }
            if let Some(ms) = get(http.get("streamIdleTimeout")) {
                t.stream_idle_ms = ms;
            }
            if let Some(ms) = get(http.get("maxStreamDuration")) {
                t.max_stream_duration_ms = ms;
            }
            if let Some(ms) = get(http.get("maxConnectionDuration")) {
                t.max_connection_duration_ms = ms;
            }
            if let Some(ms) = get(http.get("requestHeadersTimeout")) {
                t.request_headers_ms = ms;
            }
        }
        t
    }
}

/// Parses a Go duration (`1h30m`, `500ms`, `2.5s`, `0`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_end..];
    }
    Some(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("2.5s"), Some(2_500));
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("0s"), Some(0));
        assert_eq!(parse_duration_ms("5"), None);
        assert_eq!(parse_duration_ms("1x"), None);
    }

    #[test]
    fn conf_overrides_defaults_field_by_field() {
        let t = Timeouts::from_conf(Some(
            &json!({"idleTimeout": "20s", "http": {"requestTimeout": "3s"}}),
        ));
        assert_eq!(t.idle_ms, 20_000);
        assert_eq!(t.request_ms, 3_000);
        assert_eq!(t.connection_ms, 5_000);
        assert_eq!(t.stream_idle_ms, 1_800_000);
    }
}
