//! MeshHTTPRoute: HTTP routing (matches, filters, weighted backends) for
//! outbound traffic.

use super::common::{
    BackendRef, IntOrString, TOP_MESH_DP, TargetRef, TargetRefKind, percentage,
    validate_backend_ref,
};
use super::policy::{check_to, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// HTTP routes for traffic to the selected destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHTTPRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshHTTPRouteTo>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHTTPRouteTo {
    /// Only meaningful for builtin gateways, which this control plane does not have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    /// The destination whose traffic is routed.
    pub target_ref: TargetRef,
    /// Routes, most specific match first.
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    pub matches: Vec<HttpRouteMatch>,
    pub default: HttpRouteConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP method, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<Vec<QueryParamsMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderMatch>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Connect,
    Delete,
    Get,
    Head,
    Options,
    Patch,
    Post,
    Put,
    Trace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    pub value: String,
    #[serde(rename = "type")]
    pub type_: PathMatchType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum QueryParamsMatchType {
    Exact,
    RegularExpression,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParamsMatch {
    #[serde(rename = "type")]
    pub type_: QueryParamsMatchType,
    pub name: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HeaderMatchType {
    #[default]
    Exact,
    Present,
    RegularExpression,
    Absent,
    Prefix,
}

/// Matches an HTTP header; `Exact` when `type` is absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<HeaderMatchType>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<HttpFilter>>,
    /// Where matching requests go; the original destination when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<BackendRef>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HttpFilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    URLRewrite,
    RequestMirror,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFilter {
    #[serde(rename = "type")]
    pub type_: HttpFilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderKeyValue {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<HeaderKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<HeaderKeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// 301 or 302 (default), 303, 307, 308.
    #[serde(default = "default_redirect_code")]
    pub status_code: i32,
}

fn default_redirect_code() -> i32 {
    302
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathRewriteType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathRewrite {
    #[serde(rename = "type")]
    pub type_: PathRewriteType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_to_backend_hostname: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    /// Share of requests mirrored, 0-100; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<IntOrString>,
    pub backend_ref: BackendRef,
}

impl Spec for MeshHTTPRoute {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(&self.target_ref, TOP_MESH_DP, false, path, errs);
        let kinds = &[
            TargetRefKind::MeshService,
            TargetRefKind::MeshExternalService,
            TargetRefKind::MeshMultiZoneService,
        ];
        check_to(&self.to, kinds, path, errs, |t| &t.target_ref, |_, _, _| {});
        for (i, to) in self.to.iter().flatten().enumerate() {
            let p = path.field("to").index(i);
            if to.hostnames.as_ref().is_some_and(|h| !h.is_empty()) {
                errs.at(&p.field("hostnames"), "must not be defined");
            }
            for (j, rule) in to.rules.iter().enumerate() {
                rule.check(&p.field("rules").index(j), errs);
            }
        }
    }
}

impl HttpRouteRule {
    fn check(&self, path: &Path, errs: &mut Violations) {
        for (i, m) in self.matches.iter().enumerate() {
            let p = path.field("matches").index(i);
            if let Some(pm) = &m.path {
                let vp = p.field("path").field("value");
                match pm.type_ {
                    PathMatchType::RegularExpression => {
                        if regex::Regex::new(&pm.value).is_err() {
                            errs.at(&vp, "must be a valid regular expression");
                        }
                    }
                    PathMatchType::PathPrefix if pm.value == "/" => {}
                    PathMatchType::PathPrefix => {
                        if pm.value.ends_with('/') {
                            errs.at(&vp, "does not need a trailing slash because only a `/`-separated prefix or an entire path is matched");
                        }
                        if !pm.value.starts_with('/') {
                            errs.at(&vp, "must be an absolute path");
                        }
                    }
                    PathMatchType::Exact => {
                        if !pm.value.starts_with('/') {
                            errs.at(&vp, "must be an absolute path");
                        }
                    }
                }
            }
            for (j, h) in m.headers.iter().flatten().enumerate() {
                let hp = p.field("headers").index(j);
                if h.name.is_empty() {
                    errs.at(&hp.field("name"), "must not be empty");
                }
                if matches!(
                    h.type_,
                    Some(HeaderMatchType::Present | HeaderMatchType::Absent)
                ) && !h.value.is_empty()
                {
                    errs.at(&hp.field("value"), "must not be defined");
                }
            }
            let mut names = HashSet::new();
            for (j, q) in m.query_params.iter().flatten().enumerate() {
                if !names.insert(q.name.as_str()) {
                    errs.at(
                        &p.field("queryParams").index(j),
                        format!("multiple entries for name {}", q.name),
                    );
                }
            }
        }
        let all_prefix = self.matches.iter().all(|m| {
            m.path
                .as_ref()
                .is_some_and(|p| p.type_ == PathMatchType::PathPrefix)
        });
        let conf = path.field("default");
        for (i, f) in self.default.filters.iter().flatten().enumerate() {
            let p = conf.field("filters").index(i);
            let prefix_rewrite = |pr: &Option<PathRewrite>| {
                pr.as_ref()
                    .is_some_and(|pr| pr.type_ == PathRewriteType::ReplacePrefixMatch)
            };
            match f.type_ {
                HttpFilterType::RequestHeaderModifier => header_modifier(
                    &f.request_header_modifier,
                    &p.field("requestHeaderModifier"),
                    errs,
                ),
                HttpFilterType::ResponseHeaderModifier => header_modifier(
                    &f.response_header_modifier,
                    &p.field("responseHeaderModifier"),
                    errs,
                ),
                HttpFilterType::RequestRedirect => match &f.request_redirect {
                    None => errs.at(&p.field("requestRedirect"), "must be defined"),
                    Some(r) => {
                        if prefix_rewrite(&r.path) && !all_prefix {
                            errs.at(
                                &p.field("requestRedirect")
                                    .field("path")
                                    .field("replacePrefixMatch"),
                                "can only appear if all matches match a path prefix",
                            );
                        }
                        if let Some(h) = &r.hostname {
                            precise_hostname(
                                h,
                                &p.field("requestRedirect").field("hostname"),
                                errs,
                            );
                        }
                        if ![301, 302, 303, 307, 308].contains(&r.status_code) {
                            errs.at(
                                &p.field("requestRedirect").field("statusCode"),
                                "must be one of: 301, 302, 303, 307, 308",
                            );
                        }
                        if let Some(s) = &r.scheme
                            && s != "http"
                            && s != "https"
                        {
                            errs.at(
                                &p.field("requestRedirect").field("scheme"),
                                "must be one of: http, https",
                            );
                        }
                        if let Some(port) = r.port
                            && !(1..=65535).contains(&port)
                        {
                            errs.at(
                                &p.field("requestRedirect").field("port"),
                                "port must be a valid (1-65535)",
                            );
                        }
                    }
                },
                HttpFilterType::URLRewrite => match &f.url_rewrite {
                    None => errs.at(&p.field("urlRewrite"), "must be defined"),
                    Some(r) => {
                        if prefix_rewrite(&r.path) && !all_prefix {
                            errs.at(
                                &p.field("urlRewrite")
                                    .field("path")
                                    .field("replacePrefixMatch"),
                                "can only appear if all matches match a path prefix",
                            );
                        }
                        if let Some(h) = &r.hostname {
                            precise_hostname(h, &p.field("urlRewrite").field("hostname"), errs);
                            if r.host_to_backend_hostname == Some(true) {
                                errs.at(
                                    &p.field("urlRewrite").field("hostToBackendHostname"),
                                    "cannot be set together with hostname",
                                );
                            }
                        }
                    }
                },
                HttpFilterType::RequestMirror => match &f.request_mirror {
                    None => errs.at(&p.field("requestMirror"), "must be defined"),
                    Some(m) => {
                        validate_backend_ref(
                            &m.backend_ref,
                            &p.field("requestMirror").field("backendRef"),
                            errs,
                        );
                        percentage(
                            &m.percentage,
                            false,
                            true,
                            &p.field("requestMirror").field("percentage"),
                            errs,
                        );
                    }
                },
            }
        }
        for (i, b) in self.default.backend_refs.iter().flatten().enumerate() {
            validate_backend_ref(b, &conf.field("backendRefs").index(i), errs);
        }
    }
}

fn header_modifier(m: &Option<HeaderModifier>, path: &Path, errs: &mut Violations) {
    let Some(m) = m else {
        errs.at(path, "must be defined");
        return;
    };
    if m.set.is_none() && m.add.is_none() && m.remove.is_none() {
        errs.at(path, "must have at least one defined: set, add, remove");
    }
    for (field, list) in [("set", &m.set), ("add", &m.add)] {
        let mut seen = HashSet::new();
        for (i, kv) in list.iter().flatten().enumerate() {
            if !seen.insert(kv.name.to_ascii_lowercase()) {
                errs.at(
                    &path.field(field).index(i).field("name"),
                    "duplicate header name",
                );
            }
        }
    }
}

fn precise_hostname(h: &str, path: &Path, errs: &mut Violations) {
    if super::common::is_ip(h) {
        errs.at(path, "cannot be an IP address");
    } else if let Err(e) = super::common::dns1123_subdomain(h) {
        errs.at(path, e);
    }
}
