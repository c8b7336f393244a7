//! Errors in Kuma's REST format, mapped from typed errors in one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kuma_model::Violations;
use kuma_store::StoreError;
use schemars::JsonSchema;
use serde::Serialize;

/// Detail of the 404 for a path no route serves.
pub const UNKNOWN_PATH: &str = "no API endpoint at this path";
/// End of the detail of the 405 for a method a path does not serve.
pub const UNSERVED_METHOD: &str = "this method is not served at this path";

/// One invalid field.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct InvalidParameter {
    pub field: String,
    pub reason: String,
}

/// Kuma's error body (Kong AIP-193), with the legacy `details` field Kuma still sends.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: u16,
    pub title: String,
    pub detail: String,
    /// Deprecated: same as `detail`.
    pub details: String,
    // Absent when empty: `default` tells the schema it is optional.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invalid_parameters: Vec<InvalidParameter>,
}

/// An API error: a status, a title, a detail and the invalid fields.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    pub invalid: Vec<InvalidParameter>,
}

impl ApiError {
    pub fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            title: title.into(),
            detail: detail.into(),
            invalid: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", detail)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", "Not found")
    }

    /// No route at this path (as opposed to a resource that is not there).
    pub fn unknown_path() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", UNKNOWN_PATH)
    }

    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthenticated", detail)
    }

    pub fn access_denied(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Access Denied", detail)
    }

    /// 400 listing every violation.
    pub fn invalid(title: &str, violations: Violations) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, title, "Resource is not valid");
        e.invalid = violations
            .into_vec()
            .into_iter()
            .map(|v| InvalidParameter {
                field: v.field,
                reason: v.reason,
            })
            .collect();
        e
    }

    pub fn invalid_field(title: &str, field: &str, reason: impl Into<String>) -> Self {
        Self::invalid(title, Violations::single(field, reason))
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "Internal Server Error",
        )
    }

    /// Maps a store error; backend details go to the log, never to the client.
    pub fn from_store(title: &str, e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, title, "Not found"),
            StoreError::AlreadyExists(key) => Self::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("{key} already exists"),
            ),
            StoreError::Conflict {
                key,
                expected,
                actual,
            } => Self::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "{key} was modified: it is at version {actual}, the request expected version {expected}; read it again and retry"
                ),
            ),
            StoreError::MeshNotFound(mesh) => {
                let mut err = Self::new(StatusCode::BAD_REQUEST, title, "Mesh is not found");
                err.invalid.push(InvalidParameter {
                    field: "mesh".into(),
                    reason: format!("mesh of name {mesh} is not found"),
                });
                err
            }
            StoreError::Backend(source) => {
                tracing::error!(error = %source, title, "store backend failure");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    "the resource store is unavailable; retry later",
                )
            }
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            kind: "/std-errors".into(),
            status: self.status.as_u16(),
            title: self.title.clone(),
            detail: self.detail.clone(),
            details: self.detail.clone(),
            invalid_parameters: self.invalid.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
