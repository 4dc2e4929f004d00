//! The byte budget of buffered records (backpressure for `send`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes of records buffered, bounded: `reserve` waits while the budget is
/// spent, and batches give their bytes back when they complete.
pub(super) struct ByteBudget {
    pub(super) used: AtomicUsize,
    pub(super) max: usize,
    pub(super) freed: Notify,
}

impl ByteBudget {
    pub(super) fn new(max: usize) -> Self {
        ByteBudget {
            used: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
        }
    }

    /// Takes `n` bytes, waiting while that would exceed the maximum (a
    /// request is always granted when nothing else is buffered). The caller
    /// hands them to a batch's [`Reservation`] or gives them back.
    pub(super) async fn reserve(&self, n: usize) {
        loop {
            let used = self.used.load(Ordering::Acquire);
            if used == 0 || used + n <= self.max {
                if self
                    .used
                    .compare_exchange(used, used + n, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            let freed = self.freed.notified();
            if self.used.load(Ordering::Acquire) + n <= self.max {
                continue;
            }
            freed.await;
        }
    }

    pub(super) fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

/// Bytes a batch holds of the [`ByteBudget`], given back on drop.
pub(super) struct Reservation {
    pub(super) budget: Arc<ByteBudget>,
    pub(super) bytes: usize,
}

impl Reservation {
    pub(super) fn empty(budget: Arc<ByteBudget>) -> Self {
        Reservation { budget, bytes: 0 }
    }

    /// Adds bytes taken with [`ByteBudget::reserve`].
    pub(super) fn absorb(&mut self, bytes: usize) {
        self.bytes += bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}
