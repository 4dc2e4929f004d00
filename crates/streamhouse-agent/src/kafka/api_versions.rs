//! ApiVersions: the APIs and versions this listener serves, exactly.

use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use super::dispatch::SERVED;

/// ApiVersions versions served (v3 is what current clients send; it adds
/// the client's software name and version, which we accept and ignore as
/// Kafka does unless it logs them).
pub(super) const VERSIONS: RangeInclusive<i16> = 0..=3;

fn api_keys() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|(api, versions)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(*versions.start())
                .with_max_version(*versions.end())
        })
        .collect()
}

/// The answer to a supported ApiVersions request.
pub(super) fn supported() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The answer to an ApiVersions request of a version we do not serve,
/// encoded at v0: UNSUPPORTED_VERSION with our versions, so the client
/// retries with one of them.
pub(super) fn unsupported() -> ApiVersionsResponse {
    supported().with_error_code(ResponseError::UnsupportedVersion.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_served_version_is_one_the_codec_knows() {
        for (api, versions) in SERVED {
            let known = api.valid_versions();
            assert!(
                known.min <= *versions.start() && *versions.end() <= known.max,
                "{api:?} {versions:?} outside {known:?}"
            );
        }
        assert!(SERVED.iter().any(|(api, _)| *api == ApiKey::ApiVersions));
    }
}
