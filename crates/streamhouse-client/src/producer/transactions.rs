//! Transactions: `init_transactions`, `begin`/`commit`/`abort`, and
//! offsets committed with a transaction.

use std::collections::HashMap;
use std::sync::Arc;

use streamhouse_metadata::{ProducerIdentity, TopicPartition};
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;

use super::sender::fail_everything;
use super::{Inner, Producer};
use crate::ConsumerGroupMetadata;
use crate::error::{Error, Result, code_is_retryable};

/// Where a transactional producer is in its transaction cycle.
#[derive(Clone, Debug)]
pub(super) enum TxnState {
    /// `init_transactions` not called yet.
    Uninitialized,
    Ready,
    InTransaction,
    /// A send failed inside the transaction: it can only be aborted.
    Abortable(Error),
    /// Fenced by a newer instance: nothing more can be done.
    Fatal(Error),
}

impl Producer {
    pub(super) fn transactional_identity(&self) -> Result<ProducerIdentity> {
        if self.inner.config.transactional_id.is_none() {
            return Err(Error::Transaction(
                "the producer has no transactional_id".into(),
            ));
        }
        self.inner
            .identity
            .lock()
            .expect("identity lock")
            .ok_or_else(|| Error::Transaction("call init_transactions first".into()))
    }

    /// Registers the transactional id: aborts a transaction an earlier
    /// instance left open and fences that instance. Call once, before the
    /// first transaction.
    pub async fn init_transactions(&self) -> Result<()> {
        let Some(tid) = self.inner.config.transactional_id.clone() else {
            return Err(Error::Transaction(
                "the producer has no transactional_id".into(),
            ));
        };
        let request = pb::InitProducerIdRequest {
            producer_id: None,
            producer_epoch: None,
            transactional_id: Some(tid),
            transaction_timeout_ms: self.inner.config.transaction_timeout.as_millis() as i32,
        };
        let r = self
            .inner
            .cluster
            .call(|mut c| {
                let r = request.clone();
                async move { c.init_producer_id(r).await }
            })
            .await?;
        *self.inner.identity.lock().expect("identity lock") = Some(ProducerIdentity {
            producer_id: r.producer_id,
            epoch: r.producer_epoch as i16,
        });
        *self.inner.txn.lock().expect("txn lock") = TxnState::Ready;
        Ok(())
    }

    /// Starts a transaction: records sent until `commit_transaction` or
    /// `abort_transaction` become visible to read_committed consumers
    /// together, or not at all.
    pub fn begin_transaction(&self) -> Result<()> {
        self.transactional_identity()?;
        let mut txn = self.inner.txn.lock().expect("txn lock");
        match &*txn {
            TxnState::Ready => {
                *txn = TxnState::InTransaction;
                Ok(())
            }
            TxnState::Fatal(e) => Err(e.clone()),
            other => Err(Error::Transaction(format!(
                "cannot begin a transaction while {other:?}"
            ))),
        }
    }

    /// Adds consumed positions (the next offset to read, per partition) to
    /// the transaction: the group's offsets move only if it commits.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &HashMap<TopicPartition, i64>,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let id = self.transactional_identity()?;
        self.expect_in_transaction()?;
        let request = pb::AddOffsetsToTxnRequest {
            producer_id: id.producer_id,
            producer_epoch: id.epoch.into(),
            group_id: group.group_id.clone(),
            member_id: group.member.as_ref().map(|m| m.0.clone()),
            member_epoch: group.member.as_ref().map_or(0, |m| m.1),
            offsets: offsets
                .iter()
                .map(|(tp, &offset)| pb::OffsetToCommit {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset,
                    metadata: None,
                })
                .collect(),
        };
        let result = self
            .inner
            .cluster
            .call(|mut c| {
                let r = request.clone();
                async move { c.add_offsets_to_txn(r).await }
            })
            .await;
        self.check_fenced(result).map(|_| ())
    }

    pub(super) fn expect_in_transaction(&self) -> Result<()> {
        match &*self.inner.txn.lock().expect("txn lock") {
            TxnState::InTransaction => Ok(()),
            TxnState::Abortable(e) | TxnState::Fatal(e) => Err(e.clone()),
            other => Err(Error::Transaction(format!(
                "no transaction is open ({other:?})"
            ))),
        }
    }

    /// Classifies a failed transaction call by its error code and moves
    /// the transaction state accordingly: fenced is fatal, a refusal is
    /// abortable, anything else (retries used up, ...) leaves the state.
    fn check_fenced<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|e| {
            let e = classify(e);
            match &e {
                Error::ProducerFenced { .. } => self.inner.make_fatal(e.clone()),
                Error::TransactionAbortable { .. } => self.inner.make_abortable(e.clone()),
                _ => {}
            }
            e
        })
    }

    /// Delivers every record of the transaction, then commits it (markers
    /// in every partition written, and its offsets) in one step. On a
    /// delivery failure the transaction must be aborted instead.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.expect_in_transaction()?;
        if let Err(e) = self.flush().await {
            let e = match classify(e) {
                fenced @ Error::ProducerFenced { .. } => return Err(fenced),
                abortable @ Error::TransactionAbortable { .. } => abortable,
                other => Error::TransactionAbortable {
                    source: Arc::new(other),
                },
            };
            self.inner.make_abortable(e.clone());
            return Err(e);
        }
        self.expect_in_transaction()?;
        self.end_transaction(true).await
    }

    /// Drops what was not sent yet, waits for what is in flight, and aborts
    /// the transaction: read_committed consumers never see its records.
    pub async fn abort_transaction(&self) -> Result<()> {
        match &*self.inner.txn.lock().expect("txn lock") {
            TxnState::InTransaction | TxnState::Abortable(_) => {}
            TxnState::Fatal(e) => return Err(e.clone()),
            other => {
                return Err(Error::Transaction(format!(
                    "no transaction to abort ({other:?})"
                )));
            }
        }
        fail_everything(
            &self.inner,
            &Error::Transaction("the transaction was aborted".into()),
        );
        let _ = self.flush().await;
        self.end_transaction(false).await
    }

    pub(super) async fn end_transaction(&self, commit: bool) -> Result<()> {
        let id = self.transactional_identity()?;
        let request = pb::EndTxnRequest {
            producer_id: id.producer_id,
            producer_epoch: id.epoch.into(),
            commit,
        };
        let result = self
            .inner
            .cluster
            .call(|mut c| async move { c.end_txn(request).await })
            .await;
        let r = self.check_fenced(result)?;
        // Every transaction ends with a new epoch; sequences restart at 0.
        *self.inner.identity.lock().expect("identity lock") = Some(ProducerIdentity {
            producer_id: r.producer_id,
            epoch: r.producer_epoch as i16,
        });
        *self.inner.txn.lock().expect("txn lock") = TxnState::Ready;
        Ok(())
    }
}

impl Inner {
    /// The open transaction can only be aborted now.
    pub(super) fn make_abortable(&self, e: Error) {
        let mut txn = self.txn.lock().expect("txn lock");
        if matches!(*txn, TxnState::InTransaction) {
            *txn = TxnState::Abortable(e);
        }
    }

    /// The producer was fenced: every later transaction call fails.
    pub(super) fn make_fatal(&self, e: Error) {
        *self.txn.lock().expect("txn lock") = TxnState::Fatal(e);
    }
}

/// What a failed transaction call means for the transaction, by the
/// agent's error code (never by gRPC status class): PRODUCER_FENCED makes
/// the producer unusable ([`Error::ProducerFenced`]); any other code that a
/// retry cannot fix (a fenced or unknown group member, an invalid
/// transaction state, ...) leaves a transaction that can only be aborted
/// ([`Error::TransactionAbortable`]). Other errors are returned as they are.
pub(super) fn classify(e: Error) -> Error {
    if matches!(
        e,
        Error::ProducerFenced { .. } | Error::TransactionAbortable { .. }
    ) {
        return e;
    }
    match e.code() {
        Some(ErrorCode::ProducerFenced) => Error::ProducerFenced {
            source: Arc::new(e),
        },
        Some(code) if code != ErrorCode::None && !code_is_retryable(code) => {
            Error::TransactionAbortable {
                source: Arc::new(e),
            }
        }
        _ => e,
    }
}
