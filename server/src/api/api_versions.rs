//! ApiVersions (v0-v3): advertises `SUPPORTED_APIS`, nothing else.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext, SUPPORTED_APIS};

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// The response to a supported ApiVersions request. Feature fields are left
/// at their defaults, so the encoder omits those tagged fields, as Kafka does
/// (librdkafka 2.0 misparses them otherwise).
pub fn handle(_req: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// KIP-511: a version this broker does not know gets a v0 body with
/// UNSUPPORTED_VERSION and the supported ranges, under response header v0.
pub fn unsupported_version(ctx: &RequestContext) -> Reply {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys());
    match encode_frame(ctx.header.correlation_id, 0, &body, 0) {
        Some(frame) => Reply::Frame(vec![frame]),
        None => Reply::Close,
    }
}
