//! A consumer context that notes revoked partitions, so a role's loop can
//! drop what it holds for them before the new owner starts writing.

use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

/// Notes every partition revoked from this consumer.
#[derive(Clone, Default)]
pub struct RevocationContext {
    revoked: Arc<Mutex<Vec<i32>>>,
}

impl RevocationContext {
    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<i32> {
        match self.revoked.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        }
    }
}

impl ClientContext for RevocationContext {}

impl ConsumerContext for RevocationContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance
            && let Ok(mut v) = self.revoked.lock()
        {
            v.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }
}
