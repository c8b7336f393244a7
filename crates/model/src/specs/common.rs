//! Building blocks shared by the policy specs: targetRefs, durations,
//! percentages, matches, tags, and the checks Kuma applies to them.

use crate::validate::{Path, Violations};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

pub const MUST_BE_DEFINED: &str = "must be defined";
pub const MUST_NOT_BE_EMPTY: &str = "must not be empty";
pub const NOT_NEGATIVE: &str = "must not be negative when defined";
pub const GREATER_THAN_ZERO: &str = "must be greater than zero when defined";
pub const PERCENT_RANGE: &str = "must be in inclusive range [0.0, 100.0]";

fn regex(re: &str) -> regex::Regex {
    regex::Regex::new(re).expect("static regex")
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// A Kubernetes-style duration (`10s`, `1m30s`, `500ms`, `1h`). The string the
/// user wrote is kept and written back unchanged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Duration {
    raw: String,
    nanos: i128,
}

impl Duration {
    /// Parses Go's `time.ParseDuration` syntax.
    pub fn parse(s: &str) -> Result<Duration, String> {
        parse_go_duration(s).map(|nanos| Duration {
            raw: s.to_string(),
            nanos,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Signed length in nanoseconds.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The length, or `None` when negative.
    pub fn as_std(&self) -> Option<std::time::Duration> {
        u64::try_from(self.nanos)
            .ok()
            .map(std::time::Duration::from_nanos)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({:?})", self.raw)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as `10s`, `1m30s`, `500ms` or `1h` (units: ns, us, ms, s, m, h).",
            "pattern": r"^-?(0|([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$"
        })
    }
}

fn parse_go_duration(input: &str) -> Result<i128, String> {
    let bad = || {
        format!(
            "invalid duration {input:?}: expected a number with a unit, like 10s, 1m30s or 500ms"
        )
    };
    let (neg, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let num = &s[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        s = &s[num_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit = &s[..unit_end];
        s = &s[unit_end..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: i128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut value = int.checked_mul(scale).ok_or_else(bad)?;
        let mut div = 1i128;
        for c in frac.chars().take(18) {
            div *= 10;
            value += i128::from(c.to_digit(10).unwrap_or(0)) * scale / div;
        }
        total = total.checked_add(value).ok_or_else(bad)?;
    }
    // Go's Duration is an int64 of nanoseconds.
    if total > i128::from(i64::MAX) {
        return Err(format!("invalid duration {input:?}: out of range"));
    }
    Ok(if neg { -total } else { total })
}

/// A protobuf `Duration` in its JSON form: seconds with an `s` suffix
/// (`1s`, `1.5s`, `0.000000001s`). The user's string is kept.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProtoDuration {
    raw: String,
    nanos: i128,
}

impl ProtoDuration {
    pub fn parse(s: &str) -> Result<ProtoDuration, String> {
        let bad = || {
            format!("invalid duration {s:?}: expected seconds with an 's' suffix, like 1s or 1.5s")
        };
        let body = s.strip_suffix('s').ok_or_else(bad)?;
        let (neg, body) = match body.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, body),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 9
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let secs: i128 = int.parse().map_err(|_| bad())?;
        if secs > 315_576_000_000 {
            return Err(format!("invalid duration {s:?}: out of range"));
        }
        let frac_nanos: i128 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<9}").parse().map_err(|_| bad())?
        };
        let nanos = secs * 1_000_000_000 + frac_nanos;
        Ok(ProtoDuration {
            raw: s.to_string(),
            nanos: if neg { -nanos } else { nanos },
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    pub fn as_std(&self) -> Option<std::time::Duration> {
        u64::try_from(self.nanos)
            .ok()
            .map(std::time::Duration::from_nanos)
    }
}

impl fmt::Debug for ProtoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProtoDuration({:?})", self.raw)
    }
}

impl Serialize for ProtoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for ProtoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ProtoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ProtoDuration {
    fn schema_name() -> Cow<'static, str> {
        "ProtoDuration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A protobuf duration: seconds with an `s` suffix, such as `1s` or `1.5s`.",
            "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"
        })
    }
}

pub fn duration_not_negative(d: &Option<Duration>, path: &Path, errs: &mut Violations) {
    if let Some(d) = d
        && d.is_negative()
    {
        errs.at(path, NOT_NEGATIVE);
    }
}

pub fn duration_positive(d: &Option<Duration>, path: &Path, errs: &mut Violations) {
    if let Some(d) = d
        && d.nanos() <= 0
    {
        errs.at(path, GREATER_THAN_ZERO);
    }
}

/// `must be defined and greater than zero` for a required duration.
pub fn duration_required_positive(d: &Option<Duration>, path: &Path, errs: &mut Violations) {
    match d {
        None => errs.at(path, MUST_BE_DEFINED),
        Some(d) if d.nanos() <= 0 => errs.at(path, "must be defined and greater than zero"),
        Some(_) => {}
    }
}

// ---------------------------------------------------------------------------
// Numbers given as int or string
// ---------------------------------------------------------------------------

/// A number written either as a JSON integer or as a decimal string
/// (`50`, `"50"`, `"0.5"`), as Kubernetes' IntOrString. Kept as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl IntOrString {
    /// The numeric value, or `None` when the string is not a decimal number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            IntOrString::Int(i) => Some(*i as f64),
            IntOrString::String(s) => {
                static NUM: LazyLock<regex::Regex> =
                    LazyLock::new(|| regex(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$"));
                if NUM.is_match(s) {
                    s.parse().ok()
                } else {
                    None
                }
            }
        }
    }
}

/// Validates a percentage: a number in [0, 100]; `allow_zero` as Kuma's flag.
pub fn percentage(
    p: &Option<IntOrString>,
    required: bool,
    allow_zero: bool,
    path: &Path,
    errs: &mut Violations,
) {
    let Some(p) = p else {
        if required {
            errs.at(path, MUST_BE_DEFINED);
        }
        return;
    };
    match p.as_f64() {
        None => errs.at(path, "string must be a valid number"),
        Some(v) if !(0.0..=100.0).contains(&v) => errs.at(path, PERCENT_RANGE),
        Some(v) if v == 0.0 && !allow_zero => errs.at(path, "must be greater than 0"),
        Some(_) => {}
    }
}

// ---------------------------------------------------------------------------
// targetRef
// ---------------------------------------------------------------------------

/// What a targetRef points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
pub enum TargetRefKind {
    /// Every proxy (top level) or every destination (`to`) in the mesh.
    Mesh,
    /// Proxies selected by labels; `sectionName` picks one inbound.
    Dataplane,
    MeshService,
    MeshExternalService,
    MeshMultiZoneService,
    MeshHTTPRoute,
}

impl TargetRefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetRefKind::Mesh => "Mesh",
            TargetRefKind::Dataplane => "Dataplane",
            TargetRefKind::MeshService => "MeshService",
            TargetRefKind::MeshExternalService => "MeshExternalService",
            TargetRefKind::MeshMultiZoneService => "MeshMultiZoneService",
            TargetRefKind::MeshHTTPRoute => "MeshHTTPRoute",
        }
    }
}

impl<'de> Deserialize<'de> for TargetRefKind {
    // Kuma reports unknown kinds (including 2.x kinds such as MeshSubset) in
    // its own words rather than serde's.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let all = [
            TargetRefKind::Mesh,
            TargetRefKind::Dataplane,
            TargetRefKind::MeshService,
            TargetRefKind::MeshExternalService,
            TargetRefKind::MeshMultiZoneService,
            TargetRefKind::MeshHTTPRoute,
        ];
        match all.into_iter().find(|k| k.as_str() == s) {
            Some(k) => Ok(k),
            None if s.is_empty() => Err(serde::de::Error::custom(MUST_BE_DEFINED)),
            None => Err(serde::de::Error::custom(format!(
                "value '{s}' is not supported"
            ))),
        }
    }
}

impl fmt::Display for TargetRefKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to the resources a policy or one of its sections applies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// Kind of the referenced resource.
    pub kind: TargetRefKind,
    /// Selects resources by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// A section of the referenced resource: an inbound of a Dataplane, a port
    /// of a MeshService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

impl TargetRef {
    pub fn mesh() -> TargetRef {
        TargetRef {
            kind: TargetRefKind::Mesh,
            labels: None,
            section_name: None,
        }
    }

    fn has_labels(&self) -> bool {
        self.labels.as_ref().is_some_and(|l| !l.is_empty())
    }

    fn has_section(&self) -> bool {
        self.section_name.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// The kind, treating an absent top-level targetRef as `Mesh`.
    pub fn kind_or_mesh(r: &Option<TargetRef>) -> TargetRefKind {
        r.as_ref().map_or(TargetRefKind::Mesh, |r| r.kind)
    }
}

/// How a targetRef is checked.
#[derive(Clone, Copy, Debug)]
pub struct RefRules<'a> {
    pub kinds: &'a [TargetRefKind],
    /// `sectionName` on a Dataplane ref is only meaningful for inbound policies.
    pub inbound: bool,
}

pub const TOP_MESH_DP: &[TargetRefKind] = &[TargetRefKind::Mesh, TargetRefKind::Dataplane];
pub const TO_ALL: &[TargetRefKind] = &[
    TargetRefKind::Mesh,
    TargetRefKind::MeshService,
    TargetRefKind::MeshExternalService,
    TargetRefKind::MeshMultiZoneService,
    TargetRefKind::MeshHTTPRoute,
];
pub const TO_SERVICES: &[TargetRefKind] = &[
    TargetRefKind::Mesh,
    TargetRefKind::MeshService,
    TargetRefKind::MeshExternalService,
    TargetRefKind::MeshMultiZoneService,
];

/// Kinds a route's `backendRefs` may point at.
pub const BACKEND_KINDS: &[TargetRefKind] = &[
    TargetRefKind::MeshService,
    TargetRefKind::MeshExternalService,
    TargetRefKind::MeshMultiZoneService,
];

/// Kuma's targetRef rules: the kind must be one the section supports, and
/// `labels`/`sectionName` must be set or unset as the kind requires.
pub fn validate_target_ref(r: &TargetRef, rules: RefRules<'_>, path: &Path, errs: &mut Violations) {
    if !rules.kinds.contains(&r.kind) {
        errs.at(
            &path.field("kind"),
            format!("value '{}' is not supported", r.kind),
        );
        return;
    }
    let disallow_labels = |errs: &mut Violations| {
        if r.has_labels() {
            errs.at(
                &path.field("labels"),
                format!("must not be set with kind {}", r.kind),
            );
        }
    };
    let disallow_section = |errs: &mut Violations| {
        if r.has_section() {
            errs.at(
                &path.field("sectionName"),
                format!("must not be set with kind {}", r.kind),
            );
        }
    };
    let require_labels = |errs: &mut Violations| {
        if !r.has_labels() {
            errs.at(
                &path.field("labels"),
                format!("must be set when kind is {}", r.kind),
            );
        }
    };
    match r.kind {
        TargetRefKind::Mesh => {
            disallow_labels(errs);
            disallow_section(errs);
        }
        TargetRefKind::Dataplane => {
            if !rules.inbound && r.has_section() {
                errs.at(
                    &path.field("sectionName"),
                    "can only be used with inbound policies",
                );
            }
        }
        TargetRefKind::MeshService | TargetRefKind::MeshMultiZoneService => require_labels(errs),
        TargetRefKind::MeshHTTPRoute | TargetRefKind::MeshExternalService => {
            disallow_section(errs);
            require_labels(errs);
        }
    }
    if let Some(labels) = &r.labels {
        label_selector(labels, &path.field("labels"), errs);
    }
}

/// Keys and values of a label selector follow Kubernetes label syntax.
pub fn label_selector(labels: &BTreeMap<String, String>, path: &Path, errs: &mut Violations) {
    for v in crate::resource::validate_labels(labels).into_vec() {
        // validate_labels names the field `labels["k"]`; re-root it here.
        let key = v.field.strip_prefix("labels").unwrap_or(&v.field);
        errs.add(format!("{}{key}", path.as_str()), v.reason);
    }
}

// ---------------------------------------------------------------------------
// Backend references (routes, passthrough)
// ---------------------------------------------------------------------------

/// A destination traffic is sent to, with an optional weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    pub kind: TargetRefKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Relative share of traffic; defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Port of the destination, for kinds with several ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl BackendRef {
    pub fn target_ref(&self) -> TargetRef {
        TargetRef {
            kind: self.kind,
            labels: self.labels.clone(),
            section_name: self.section_name.clone(),
        }
    }
}

pub fn validate_backend_ref(r: &BackendRef, path: &Path, errs: &mut Violations) {
    validate_target_ref(
        &r.target_ref(),
        RefRules {
            kinds: BACKEND_KINDS,
            inbound: false,
        },
        path,
        errs,
    );
    if let Some(p) = r.port
        && (p == 0 || p > 65535)
    {
        errs.at(&path.field("port"), "port must be a valid (1-65535)");
    }
}

// ---------------------------------------------------------------------------
// Inbound rule matches
// ---------------------------------------------------------------------------

/// A predicate selecting inbound traffic by its source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Matches the client's SPIFFE ID.
    #[serde(rename = "spiffeID", default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<SpiffeIdMatch>,
    /// Matches the SNI carried on the TLS connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<SniMatch>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SpiffeIdMatchType {
    Exact,
    Prefix,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpiffeIdMatch {
    #[serde(rename = "type")]
    pub type_: SpiffeIdMatchType,
    /// The client's SPIFFE ID, e.g. `spiffe://trust-domain/ns/default/sa/web`.
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SniMatchType {
    Exact,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SniMatch {
    #[serde(rename = "type")]
    pub type_: SniMatchType,
    pub value: String,
}

/// Checks each match of a rule; every match needs `spiffeID` or `sni`.
pub fn validate_matches(matches: &Option<Vec<Match>>, path: &Path, errs: &mut Violations) {
    for (i, m) in matches.iter().flatten().enumerate() {
        let p = path.index(i);
        if m.spiffe_id.is_none() && m.sni.is_none() {
            errs.at(&p, "must specify at least one of 'spiffeID' or 'sni'");
        }
        if let Some(s) = &m.spiffe_id {
            let valid = match s.type_ {
                SpiffeIdMatchType::Exact => spiffe_id(&s.value),
                // A prefix may stop at the trust domain or a path segment.
                SpiffeIdMatchType::Prefix => spiffe_id(s.value.trim_end_matches('/')),
            };
            if let Err(e) = valid {
                errs.at(
                    &p.field("spiffeID"),
                    format!("must be a valid Spiffe ID: {e}"),
                );
            }
        }
        if let Some(s) = &m.sni {
            if s.value.is_empty() {
                errs.at(&p.field("sni").field("value"), "must be set");
            } else if let Err(e) = dns1123_subdomain(&s.value) {
                errs.at(&p.field("sni").field("value"), e);
            }
        }
    }
}

pub fn has_spiffe_match(matches: &Option<Vec<Match>>) -> bool {
    matches.iter().flatten().any(|m| m.spiffe_id.is_some())
}

/// Checks a SPIFFE ID (`spiffe://<trust-domain>[/<path>]`) as go-spiffe does.
pub fn spiffe_id(id: &str) -> Result<(), String> {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return Err(if id.is_empty() {
            "cannot be empty".into()
        } else {
            "scheme is missing or invalid".into()
        });
    };
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    spiffe_trust_domain(td)?;
    if path.is_empty() {
        return Ok(());
    }
    for seg in path[1..].split('/') {
        match seg {
            "" => return Err("path cannot contain empty segments".into()),
            "." | ".." => return Err("path cannot contain dot segments".into()),
            s if !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
            {
                return Err("path segment characters are limited to letters, numbers, dots, dashes, and underscores".into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`.
pub fn spiffe_trust_domain(td: &str) -> Result<(), String> {
    if td.is_empty() {
        return Err("trust domain is missing".into());
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err("trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

static DNS1123_LABEL: LazyLock<regex::Regex> =
    LazyLock::new(|| regex(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static DNS1035_LABEL: LazyLock<regex::Regex> =
    LazyLock::new(|| regex(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"));

/// A DNS-1123 subdomain, as Kubernetes checks it.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if s.split('.').all(|l| DNS1123_LABEL.is_match(l)) {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into())
    }
}

/// A DNS-1035 label, as Kubernetes checks it.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if DNS1035_LABEL.is_match(s) {
        Ok(())
    } else {
        Err("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character".into())
    }
}

/// A hostname (`example.com`) or wildcard hostname (`*.example.com`).
pub fn hostname(s: &str, allow_wildcard: bool, path: &Path, errs: &mut Violations) {
    if allow_wildcard && s == "*" {
        return;
    }
    if s.len() > 253 {
        errs.at(path, "must be at most 253 characters");
    }
    if let Some(rest) = s.strip_prefix("*.")
        && allow_wildcard
    {
        if !is_domain(rest) {
            errs.at(path, "invalid wildcard domain");
        }
        return;
    }
    if !is_domain(s) {
        errs.at(path, "invalid hostname");
    }
}

pub fn is_domain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|l| DNS1123_LABEL.is_match(l))
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// A DNS name as govalidator accepts it (labels of letters, digits, `-`, `_`).
pub fn is_dns_name(s: &str) -> bool {
    static LABEL: LazyLock<regex::Regex> =
        LazyLock::new(|| regex(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$"));
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty() && s.len() <= 253 && !is_ip(s) && s.split('.').all(|l| LABEL.is_match(l))
}

pub fn port(p: u32, path: &Path, errs: &mut Violations) {
    if p == 0 || p > 65535 {
        errs.at(path, "port must be in the range [1, 65535]");
    }
}

// ---------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------

pub const SERVICE_TAG: &str = "kuma.io/service";
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";

static TAG_NAME: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"^[a-zA-Z0-9.\-_:/]*$"));
static TAG_VALUE: LazyLock<regex::Regex> = LazyLock::new(|| regex(r"^[a-zA-Z0-9.\-_:]*$"));

/// Kuma's tag rules: names and values non-empty, from a restricted alphabet;
/// optionally `kuma.io/service` required.
pub fn tags(
    tags: &BTreeMap<String, String>,
    require_service: bool,
    path: &Path,
    errs: &mut Violations,
) {
    for (k, v) in tags {
        if k.is_empty() {
            errs.at(path, "tag name must be non-empty");
        }
        if !TAG_NAME.is_match(k) {
            errs.at(&path.key(k), "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores");
        }
        if v.is_empty() {
            errs.at(&path.key(k), "tag value must be non-empty");
        }
        if !TAG_VALUE.is_match(v) {
            errs.at(
                &path.key(k),
                "tag value must consist of alphanumeric characters, dots, dashes and underscores",
            );
        }
    }
    if require_service && !tags.contains_key(SERVICE_TAG) {
        errs.at(path, format!("mandatory tag {SERVICE_TAG:?} is missing"));
    }
}

/// Protocols Kuma understands in `appProtocol`, `protocol` and tags.
pub const PROTOCOLS: &[&str] = &["grpc", "http", "http2", "tcp"];

pub fn is_known_protocol(p: &str) -> bool {
    matches!(
        p.to_ascii_lowercase().as_str(),
        "http" | "http2" | "tcp" | "tls" | "grpc" | "mysql"
    )
}

/// Reports an empty list at `path`.
pub fn non_empty<T>(v: &[T], path: &Path, errs: &mut Violations) {
    if v.is_empty() {
        errs.at(path, MUST_NOT_BE_EMPTY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ns = |s: &str| Duration::parse(s).map(|d| d.nanos());
        assert_eq!(ns("10s"), Ok(10_000_000_000));
        assert_eq!(ns("1m30s"), Ok(90_000_000_000));
        assert_eq!(ns("500ms"), Ok(500_000_000));
        assert_eq!(ns("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(ns("-1s"), Ok(-1_000_000_000));
        assert_eq!(ns("0"), Ok(0));
        assert_eq!(ns("1h2m3s4ms5us6ns"), Ok(3_723_004_005_006));
        for bad in ["", "10", "s", "1x", "1.2.3s", "abc", "1 s", "-"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?}");
        }
        let d: Duration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1m30s\"");
    }

    #[test]
    fn proto_durations() {
        assert_eq!(ProtoDuration::parse("1.5s").unwrap().nanos(), 1_500_000_000);
        assert_eq!(ProtoDuration::parse("0s").unwrap().nanos(), 0);
        assert!(ProtoDuration::parse("1m").is_err());
        assert!(ProtoDuration::parse("1.0000000001s").is_err());
    }

    #[test]
    fn spiffe_ids() {
        assert!(spiffe_id("spiffe://trust-domain.example/ns/default/sa/web").is_ok());
        assert!(spiffe_id("spiffe://td").is_ok());
        assert!(spiffe_id("http://td/x").is_err());
        assert!(spiffe_id("spiffe://TD/x").is_err());
        assert!(spiffe_id("spiffe://td//x").is_err());
        assert!(spiffe_id("spiffe://td/x/").is_err());
        assert!(spiffe_id("spiffe:///x").is_err());
    }

    #[test]
    fn percentages() {
        let check = |p: IntOrString| {
            let mut e = Violations::new();
            percentage(&Some(p), true, false, &Path::root("p"), &mut e);
            e.iter().map(|v| v.reason.clone()).collect::<Vec<_>>()
        };
        assert!(check(IntOrString::Int(50)).is_empty());
        assert!(check(IntOrString::String("99.9".into())).is_empty());
        assert_eq!(check(IntOrString::Int(101)), vec![PERCENT_RANGE]);
        assert_eq!(check(IntOrString::Int(0)), vec!["must be greater than 0"]);
        assert_eq!(
            check(IntOrString::String("x".into())),
            vec!["string must be a valid number"]
        );
    }

    #[test]
    fn target_ref_rules() {
        let p = Path::root("spec").field("targetRef");
        let run = |r: TargetRef, kinds: &[TargetRefKind], inbound: bool| {
            let mut e = Violations::new();
            validate_target_ref(&r, RefRules { kinds, inbound }, &p, &mut e);
            e.into_vec()
                .into_iter()
                .map(|v| (v.field, v.reason))
                .collect::<Vec<_>>()
        };
        let labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
        assert!(run(TargetRef::mesh(), TOP_MESH_DP, false).is_empty());
        let r = TargetRef {
            kind: TargetRefKind::Mesh,
            labels: labels.clone(),
            section_name: None,
        };
        assert_eq!(
            run(r, TOP_MESH_DP, false),
            vec![(
                "spec.targetRef.labels".into(),
                "must not be set with kind Mesh".into()
            )]
        );
        let r = TargetRef {
            kind: TargetRefKind::MeshService,
            labels: None,
            section_name: None,
        };
        assert_eq!(
            run(r.clone(), TOP_MESH_DP, false)[0].1,
            "value 'MeshService' is not supported"
        );
        assert_eq!(
            run(r, TO_ALL, false)[0].1,
            "must be set when kind is MeshService"
        );
        let r = TargetRef {
            kind: TargetRefKind::Dataplane,
            labels,
            section_name: Some("http".into()),
        };
        assert_eq!(
            run(r.clone(), TOP_MESH_DP, false)[0].1,
            "can only be used with inbound policies"
        );
        assert!(run(r, TOP_MESH_DP, true).is_empty());
    }

    #[test]
    fn names() {
        assert!(dns1035_label("zone-1").is_ok());
        assert!(dns1035_label("1zone").is_err());
        assert!(dns1123_subdomain("a.b-c.d").is_ok());
        assert!(dns1123_subdomain("A.b").is_err());
        assert!(is_dns_name("backend.svc.local"));
        assert!(!is_dns_name("bad..name"));
    }
}

/// Kinds a telemetry `backendRef` may point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackendResourceKind {
    MeshOpenTelemetryBackend,
}

/// A reference to a backend resource (a MeshOpenTelemetryBackend) by labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendResourceRef {
    pub kind: BackendResourceKind,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

pub fn validate_backend_resource_ref(
    r: &Option<BackendResourceRef>,
    path: &Path,
    errs: &mut Violations,
) {
    match r {
        None => errs.at(path, MUST_BE_DEFINED),
        Some(r) if r.labels.is_empty() => errs.at(
            &path.field("labels"),
            format!("must be set when kind is {:?}", r.kind),
        ),
        Some(r) => label_selector(&r.labels, &path.field("labels"), errs),
    }
}

/// A URL with a scheme and a host, e.g. `http://collector:9411/api/v2/spans`.
pub fn is_url(s: &str) -> bool {
    static URL: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex(
            r"^[A-Za-z][A-Za-z0-9+.-]*://(\[[0-9A-Fa-f:.]+\]|[^\s/:?#\[\]@]+)(:[0-9]{1,5})?([/?#]\S*)?$",
        )
    });
    URL.is_match(s)
}

/// Selects resources by exact label values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Where a secret value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SecureDataSourceType {
    File,
    EnvVar,
    InsecureInline,
    /// A Secret in the same mesh (`secretRef`).
    #[serde(rename = "Secret")]
    SecretRef,
}

/// A secret value: a Secret reference, or (for tests) inline, file or env var.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecureDataSource {
    #[serde(rename = "type")]
    pub type_: SecureDataSourceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_var: Option<EnvVarSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_inline: Option<InlineSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// Where a (non-secret) value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DataSourceType {
    File,
    EnvVar,
    Inline,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSource {
    #[serde(rename = "type")]
    pub type_: DataSourceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_var: Option<EnvVarSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineSource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSource {
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVarSource {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InlineSource {
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SecretRefKind {
    Secret,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub kind: SecretRefKind,
    pub name: String,
}

/// The field named by `type` must be set and non-empty.
pub fn validate_secure_data_source(s: &SecureDataSource, path: &Path, errs: &mut Violations) {
    let (field, ok) = match s.type_ {
        SecureDataSourceType::File => ("file", s.file.as_ref().is_some_and(|f| !f.path.is_empty())),
        SecureDataSourceType::EnvVar => (
            "envVar",
            s.env_var.as_ref().is_some_and(|e| !e.name.is_empty()),
        ),
        SecureDataSourceType::InsecureInline => (
            "insecureInline",
            s.insecure_inline
                .as_ref()
                .is_some_and(|i| !i.value.is_empty()),
        ),
        SecureDataSourceType::SecretRef => (
            "secretRef",
            s.secret_ref.as_ref().is_some_and(|r| !r.name.is_empty()),
        ),
    };
    if !ok {
        errs.at(&path.field(field), MUST_BE_DEFINED);
    }
}

pub fn validate_data_source(s: &DataSource, path: &Path, errs: &mut Violations) {
    let (field, ok) = match s.type_ {
        DataSourceType::File => ("file", s.file.as_ref().is_some_and(|f| !f.path.is_empty())),
        DataSourceType::EnvVar => (
            "envVar",
            s.env_var.as_ref().is_some_and(|e| !e.name.is_empty()),
        ),
        DataSourceType::Inline => (
            "inline",
            s.inline.as_ref().is_some_and(|i| !i.value.is_empty()),
        ),
    };
    if !ok {
        errs.at(&path.field(field), MUST_BE_DEFINED);
    }
}

/// Names rendered into hostnames must be RFC 1035 labels.
pub fn rfc1035_name(name: &str, errs: &mut Violations) {
    if !name.is_empty()
        && let Err(e) = dns1035_label(name)
    {
        errs.add("name", e);
    }
}

pub fn supported_app_protocol(p: &str) -> bool {
    PROTOCOLS.contains(&p.to_ascii_lowercase().as_str())
}

/// An absolute file path (Unix `/var/log/x`, or Windows `C:\\logs\\x`).
pub fn is_file_path(p: &str) -> bool {
    let b = p.as_bytes();
    let unix = p.starts_with('/');
    let windows = b.len() > 2
        && b[0].is_ascii_alphabetic()
        && b[1] == b':'
        && (b[2] == b'\\' || b[2] == b'/');
    (unix || windows) && !p.contains('\0')
}
