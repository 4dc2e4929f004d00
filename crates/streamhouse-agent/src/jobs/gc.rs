//! The object GC: deletes objects no segment references.
//!
//! An object is deleted only after the GC's claim on its key committed in
//! the metadata store ([`MaintenanceStore::claim_objects`]). A commit
//! records its object's key with a plain INSERT into the same table, so a
//! commit and a claim of one key cannot both succeed: a commit that stalled
//! past the grace period and arrives after the claim fails (its producers
//! get a retryable "nothing committed" error), and a commit that got there
//! first makes the claim skip the object. The grace period only spares
//! commits that are merely slow.
//!
//! [`MaintenanceStore::claim_objects`]: streamhouse_metadata::MaintenanceStore::claim_objects

use std::collections::HashSet;

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, path::Path};

use super::{JobError, Jobs, cutoff_ms};

/// Objects checked and claimed per metadata round trip.
const GC_CHUNK: usize = 500;

impl Jobs {
    /// Deletes objects older than the grace period that no segment
    /// references, each after claiming it; returns objects deleted.
    pub(crate) async fn object_gc(&self) -> Result<u64, JobError> {
        let cutoff = cutoff_ms(self.config.gc_grace);
        let old: Vec<(String, u64)> = self
            .store
            .list(Some(&Path::from("objects")))
            .try_filter(|m| futures::future::ready(m.last_modified.timestamp_millis() < cutoff))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await?;
        let mut deleted = 0;
        for chunk in old.chunks(GC_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|(k, _)| k.clone()).collect();
            let referenced: HashSet<String> = self
                .metadata
                .referenced_objects(&keys)
                .await?
                .into_iter()
                .collect();
            let candidates: Vec<(String, u64)> = chunk
                .iter()
                .filter(|(k, _)| !referenced.contains(k))
                .cloned()
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let claimed = self.metadata.claim_objects(&candidates).await?;
            let spared = candidates.len() - claimed.len();
            if spared > 0 {
                // A commit recorded these between the check and the claim.
                metrics::counter!("streamhouse_gc_objects_spared_total").increment(spared as u64);
            }
            for key in &claimed {
                match self.store.delete(&Path::from(key.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.metadata.forget_objects(&claimed).await?;
            metrics::counter!("streamhouse_gc_objects_deleted_total")
                .increment(claimed.len() as u64);
            deleted += claimed.len() as u64;
        }
        Ok(deleted)
    }
}
