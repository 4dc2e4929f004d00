//! Opening an object store from a URL.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;

use crate::error::{Error, Result};

/// S3 settings that override the standard AWS environment variables
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`).
/// Its `Debug` output hides the secret access key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints.
    pub allow_http: Option<bool>,
    /// Use `bucket.host` URLs instead of path-style `host/bucket` (path
    /// style, the default, is what MinIO and most S3-compatible servers want).
    pub virtual_hosted_style: bool,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

/// Opens the object store a URL names:
/// - `file://DIR`: a local directory (created if missing; relative paths
///   are relative to the working directory). Every object is fsynced, with
///   its directory, before a PUT returns, so a committed object survives a
///   power loss;
/// - `s3://BUCKET[/PREFIX]`: S3 or an S3-compatible server, configured by
///   the AWS environment variables and `s3`;
/// - `memory://`: in-process memory, for tests.
pub fn open_object_store(url: &str, s3: &S3Options) -> Result<Arc<dyn ObjectStore>> {
    open(url, s3, true)
}

/// [`open_object_store`], except that a `file://` store does not fsync:
/// faster, but a power loss (not a process crash) can lose objects whose
/// records were already acknowledged. For tests and throwaway data only.
pub fn open_object_store_without_fsync(url: &str, s3: &S3Options) -> Result<Arc<dyn ObjectStore>> {
    open(url, s3, false)
}

fn open(url: &str, s3: &S3Options, fsync: bool) -> Result<Arc<dyn ObjectStore>> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: streamhouse_core::names::redact_url(url),
        reason,
    };
    if let Some(dir) = url.strip_prefix("file://") {
        if dir.is_empty() {
            return Err(invalid("file:// needs a directory".into()));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| invalid(format!("cannot create directory {dir}: {e}")))?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| invalid(e.to_string()))?
            .with_fsync(fsync);
        Ok(Arc::new(fs))
    } else if url == "memory://" {
        Ok(Arc::new(InMemory::new()))
    } else if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("s3:// needs a bucket name".into()));
        }
        // reqwest is built without a default TLS provider: install ring once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(s3.virtual_hosted_style);
        if let Some(v) = &s3.endpoint {
            b = b.with_endpoint(v);
        }
        if let Some(v) = &s3.region {
            b = b.with_region(v);
        }
        if let Some(v) = &s3.access_key_id {
            b = b.with_access_key_id(v);
        }
        if let Some(v) = &s3.secret_access_key {
            b = b.with_secret_access_key(v);
        }
        if let Some(v) = s3.allow_http {
            b = b.with_allow_http(v);
        }
        let store = b.build().map_err(|e| invalid(e.to_string()))?;
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            Ok(Arc::new(store))
        } else {
            Ok(Arc::new(PrefixStore::new(store, prefix)))
        }
    } else {
        Err(invalid(
            "expected file://DIR, s3://BUCKET[/PREFIX] or memory://".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_objects_are_fsynced_unless_asked_not_to() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        // LocalFileSystem shows its fsync setting only in its Debug form.
        let durable = open_object_store(&url, &S3Options::default()).unwrap();
        assert!(
            format!("{durable:?}").contains("fsync: true"),
            "{durable:?}"
        );
        let fast = open_object_store_without_fsync(&url, &S3Options::default()).unwrap();
        assert!(format!("{fast:?}").contains("fsync: false"), "{fast:?}");
    }

    #[test]
    fn bad_urls_are_named() {
        for url in ["ftp://x", "s3://", "file://", "/tmp/x"] {
            let err = open_object_store(url, &S3Options::default()).unwrap_err();
            assert!(err.to_string().contains(url), "{err}");
        }
    }
}

#[cfg(test)]
mod debug_tests {
    #[test]
    fn debug_output_hides_the_secret_key() {
        let s3 = super::S3Options {
            secret_access_key: Some("very-secret".into()),
            ..Default::default()
        };
        assert!(!format!("{s3:?}").contains("very-secret"));
    }
}
