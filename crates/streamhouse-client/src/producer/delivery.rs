//! Delivery futures: one shared outcome cell per batch, awaited by every
//! record of the batch.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::record::SendResult;
use crate::error::{Error, Result};

/// The base offset a batch was committed at (-1: committed earlier, at
/// offsets no longer known), or why it failed.
pub(super) type BatchOutcome = std::result::Result<i64, Error>;

/// The outcome of one batch, awaited by every record in it. (One cell per
/// batch, not a channel per record: completing a batch wakes its waiters
/// once each.)
#[derive(Default)]
pub(super) struct BatchCell {
    pub(super) state: Mutex<CellState>,
}

#[derive(Default)]
pub(super) struct CellState {
    pub(super) outcome: Option<BatchOutcome>,
    pub(super) wakers: Vec<std::task::Waker>,
}

/// The owner's end of a [`BatchCell`]: completes it exactly once; dropped
/// uncompleted, it fails the batch with [`Error::Closed`].
pub(super) struct BatchHandle(pub(super) Arc<BatchCell>);

impl BatchHandle {
    pub(super) fn new() -> Self {
        BatchHandle(Arc::default())
    }

    pub(super) fn waiter(&self) -> BatchWait {
        BatchWait {
            cell: self.0.clone(),
            slot: None,
        }
    }

    pub(super) fn complete(self, outcome: BatchOutcome) {
        self.set(outcome);
    }

    pub(super) fn set(&self, outcome: BatchOutcome) {
        let wakers = {
            let mut state = self.0.state.lock().expect("batch cell lock");
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

impl Drop for BatchHandle {
    fn drop(&mut self) {
        self.set(Err(Error::Closed));
    }
}

/// Waits for a batch's outcome.
pub(super) struct BatchWait {
    pub(super) cell: Arc<BatchCell>,
    pub(super) slot: Option<usize>,
}

impl Future for BatchWait {
    type Output = BatchOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BatchOutcome> {
        let this = &mut *self;
        let mut state = this.cell.state.lock().expect("batch cell lock");
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(outcome.clone());
        }
        match this.slot {
            Some(i) if state.wakers[i].will_wake(cx.waker()) => {}
            Some(i) => state.wakers[i] = cx.waker().clone(),
            None => {
                this.slot = Some(state.wakers.len());
                state.wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// Resolves when a record is committed (or has failed for good).
#[must_use = "a record is only known to be written once this resolves"]
pub struct DeliveryFuture {
    pub(super) batch: BatchWait,
    pub(super) index: i32,
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    pub(super) timestamp: i64,
}

impl Future for DeliveryFuture {
    type Output = Result<SendResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = match Pin::new(&mut self.batch).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        Poll::Ready(outcome.map(|base| SendResult {
            topic: self.topic.to_string(),
            partition: self.partition,
            // -1: committed at offsets the agent no longer knows.
            offset: if base < 0 {
                -1
            } else {
                base + i64::from(self.index)
            },
            timestamp: self.timestamp,
        }))
    }
}
