//! Confluent's error bodies: `{"error_code": N, "message": "..."}` with the
//! HTTP status the code's first three digits name (40401 → 404).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The content type of every answer, as Confluent's registry sends it.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u32,
    pub message: String,
}

impl ApiError {
    fn new(code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn subject_not_found(subject: &str) -> ApiError {
        ApiError::new(40401, format!("Subject '{subject}' not found."))
    }
    pub fn version_not_found(subject: &str, version: &str) -> ApiError {
        ApiError::new(
            40402,
            format!("Version {version} not found for subject '{subject}'."),
        )
    }
    pub fn schema_not_found() -> ApiError {
        ApiError::new(40403, "Schema not found")
    }
    pub fn subject_soft_deleted(subject: &str) -> ApiError {
        ApiError::new(
            40404,
            format!(
                "Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
            ),
        )
    }
    pub fn subject_not_soft_deleted(subject: &str) -> ApiError {
        ApiError::new(
            40405,
            format!("Subject '{subject}' was not deleted first before being permanently deleted"),
        )
    }
    pub fn version_soft_deleted(subject: &str, version: i32) -> ApiError {
        ApiError::new(
            40406,
            format!("Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently"),
        )
    }
    pub fn version_not_soft_deleted(subject: &str, version: i32) -> ApiError {
        ApiError::new(
            40407,
            format!("Subject '{subject}' Version {version} was not deleted first before being permanently deleted"),
        )
    }
    pub fn subject_level_not_configured(subject: &str) -> ApiError {
        ApiError::new(
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }
    pub fn incompatible(subject: &str, reasons: &[String]) -> ApiError {
        ApiError::new(
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: {reasons:?}"
            ),
        )
    }
    pub fn invalid_schema(reason: &str) -> ApiError {
        ApiError::new(42201, reason.to_string())
    }
    pub fn invalid_version(version: &str) -> ApiError {
        ApiError::new(
            42202,
            format!("The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""),
        )
    }
    pub fn invalid_compatibility_level(level: &str) -> ApiError {
        ApiError::new(
            42203,
            format!("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive; got '{level}'"),
        )
    }
    pub fn invalid_mode(mode: &str) -> ApiError {
        ApiError::new(
            42204,
            format!("Invalid mode. Valid values are READWRITE, READONLY, READONLY_OVERRIDE and IMPORT; got '{mode}'"),
        )
    }
    pub fn not_permitted(message: impl Into<String>) -> ApiError {
        ApiError::new(42205, message)
    }
    pub fn reference_exists(message: impl Into<String>) -> ApiError {
        ApiError::new(42206, message)
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }
    pub fn not_found() -> ApiError {
        ApiError::new(404, "HTTP 404 Not Found")
    }
    pub fn store(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(50001, format!("Error in the backend data store: {message}"))
    }
    pub fn forwarding_failed(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            50003,
            format!("Error while forwarding the request to the leader: {message}"),
        )
    }
    pub fn unknown_leader(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(50004, format!("Unknown leader: {message}"))
    }

    /// The HTTP status: the code's first three digits.
    pub fn status(&self) -> StatusCode {
        let mut http = self.code;
        while http >= 1000 {
            http /= 10;
        }
        u16::try_from(http)
            .ok()
            .and_then(|h| StatusCode::from_u16(h).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A JSON answer with the registry's content type.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error_code": self.code, "message": self.message });
        json_response(self.status(), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_the_codes_first_three_digits() {
        assert_eq!(
            ApiError::subject_not_found("s").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::incompatible("s", &[]).status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            ApiError::invalid_schema("x").status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ApiError::store("x").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
