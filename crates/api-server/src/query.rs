//! List query parameters: `size`, `offset`, `name`, `filter[labels.K]=V`, `tag=K:V`.

use crate::error::{ApiError, ApiResult};
use axum::http::{HeaderMap, Uri, header};
use kuma_model::{MeshName, ResourceKind};
use kuma_store::{ListFilter, SharedPage};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;

/// Parsed list parameters.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    pub size: usize,
    pub offset: usize,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    let title = if field == "size" {
        "Invalid page size"
    } else {
        "Invalid query parameter"
    };
    let mut e = ApiError::invalid_field(title, field, reason);
    e.detail = title.to_string();
    e
}

impl ListParams {
    pub fn parse(uri: &Uri, allow_tags: bool) -> ApiResult<ListParams> {
        let mut p = ListParams {
            size: DEFAULT_PAGE_SIZE,
            ..Default::default()
        };
        let query = uri.query().unwrap_or("");
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "size" => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| invalid("size", "must be a whole number"))?;
                    if n == 0 || n > MAX_PAGE_SIZE {
                        return Err(invalid(
                            "size",
                            format!("must be between 1 and {MAX_PAGE_SIZE}"),
                        ));
                    }
                    p.size = n;
                }
                "offset" => {
                    if !v.is_empty() {
                        if !v.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(invalid("offset", "must be a whole number"));
                        }
                        // Past every item anyway: an empty page, not an error.
                        p.offset = v.parse().unwrap_or(usize::MAX);
                    }
                }
                "name" => {
                    if !v.is_empty() {
                        p.name = Some(v.into_owned());
                    }
                }
                "tag" if allow_tags => {
                    let Some((tk, tv)) = v.split_once(':') else {
                        return Err(invalid("tag", "must be KEY:VALUE"));
                    };
                    p.tags.insert(tk.to_string(), tv.to_string());
                }
                key => {
                    if let Some(label) = key
                        .strip_prefix("filter[labels.")
                        .and_then(|s| s.strip_suffix(']'))
                    {
                        p.labels.insert(label.to_string(), v.into_owned());
                    }
                    // Other parameters are ignored, as Kuma does.
                }
            }
        }
        Ok(p)
    }

    pub fn filter(&self, kind: ResourceKind, mesh: Option<MeshName>) -> ListFilter {
        ListFilter {
            kind,
            mesh,
            name_contains: self.name.clone(),
            labels: self.labels.clone(),
            tags: self.tags.clone(),
            offset: self.offset,
            limit: Some(self.size),
        }
    }

    /// The URL of the next page, or `null` when this was the last.
    pub fn next_url(&self, headers: &HeaderMap, uri: &Uri, total: usize) -> Value {
        // Saturating: `offset` comes straight from the client.
        let next_offset = self.offset.saturating_add(self.size);
        if next_offset >= total {
            return Value::Null;
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            if k != "offset" && k != "size" {
                q.append_pair(&k, &v);
            }
        }
        q.append_pair("offset", &next_offset.to_string());
        q.append_pair("size", &self.size.to_string());
        Value::String(format!("http://{host}{}?{}", uri.path(), q.finish()))
    }

    /// Kuma's list body: `{total, items, next}`.
    pub fn list_body(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        page: SharedPage,
        render: impl Fn(&kuma_model::Resource) -> Value,
    ) -> Value {
        let items: Vec<Value> = page.items.iter().map(|r| render(r)).collect();
        json!({ "total": page.total, "items": items, "next": self.next_url(headers, uri, page.total) })
    }
}
