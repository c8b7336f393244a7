//! Reading request bodies: size-limited, JSON or YAML.

use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;

/// Reads at most `limit` bytes; more is a 413 in Kuma's error format.
pub async fn read_limited(body: Body, limit: usize) -> ApiResult<bytes::Bytes> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            format!("request body is larger than the limit of {limit} bytes"),
        )),
        Err(_) => Err(ApiError::bad_request("could not read the request body")),
    }
}

/// Parses a body as JSON, or as YAML when the content type says so or JSON fails.
pub fn parse_document(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<Value> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("request body is empty"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let yaml_declared = content_type.contains("yaml");
    if !yaml_declared {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => return Ok(v),
            Err(e) if content_type.contains("json") => {
                return Err(ApiError::bad_request(format!(
                    "request body is not valid JSON: {e}"
                )));
            }
            Err(_) => {}
        }
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("request body is not UTF-8"))?;
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        ApiError::bad_request(format!("request body is not valid YAML or JSON: {e}"))
    })?;
    serde_json::to_value(yaml).map_err(|e| {
        ApiError::bad_request(format!("request body cannot be represented as JSON: {e}"))
    })
}
