//! A consumer context that notes revoked partitions, so a role's loop can
//! drop what it holds for them before the new owner starts writing, and
//! notices a group that never hands out an assignment.
//!
//! Why the second part: tansu 0.6 does not finish a rebalance whose leader
//! died (a worker killed with `kill -9`). The members that joined after it
//! get an empty assignment and wait, heartbeating happily, long after the
//! dead leader's session expired, while the group stays unsettled
//! (`Assigning`). A consumer that has held no partitions for longer than a
//! few session timeouts while its group is not `Stable` leaves the group
//! and joins it again ([`rejoin_if_stalled`]); by then the dead member is
//! gone, so the new join elects a live leader. A worker without partitions
//! in a stable group (more workers than partitions) stays as it is, and on
//! a Kafka cluster the rebalance finishes on its own, so this never fires.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use crate::KafkaError;

/// How long a subscribed consumer may go without an assignment before it
/// leaves and joins its group again: twice the session timeout of
/// [`crate::consumer_config`], so a dead member has surely expired.
pub const REJOIN_AFTER: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Membership {
    /// Partitions revoked and not yet taken by the role's loop.
    revoked: Vec<i32>,
    /// Whether the consumer holds partitions.
    holds: bool,
    /// When it last lost its partitions or (re)subscribed.
    since: Instant,
}

/// Notes every partition revoked from this consumer, and whether it holds
/// an assignment.
#[derive(Clone)]
pub struct RevocationContext {
    state: Arc<Mutex<Membership>>,
}

impl Default for RevocationContext {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(Membership {
                revoked: Vec::new(),
                holds: false,
                since: Instant::now(),
            })),
        }
    }
}

impl RevocationContext {
    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<i32> {
        match self.state.lock() {
            Ok(mut s) => std::mem::take(&mut s.revoked),
            Err(_) => Vec::new(),
        }
    }

    /// How long the consumer has held no partitions (`None` while it holds
    /// some).
    pub fn idle_for(&self) -> Option<Duration> {
        let s = self.state.lock().ok()?;
        (!s.holds).then(|| s.since.elapsed())
    }

    fn restart_clock(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.since = Instant::now();
        }
    }
}

impl ClientContext for RevocationContext {}

impl ConsumerContext for RevocationContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance
            && let Ok(mut s) = self.state.lock()
        {
            s.revoked
                .extend(tpl.elements().iter().map(|e| e.partition()));
            s.holds = false;
            s.since = Instant::now();
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::debug!(partitions = tpl.count(), "assigned");
                if tpl.count() > 0
                    && let Ok(mut s) = self.state.lock()
                {
                    s.holds = true;
                }
            }
            Rebalance::Revoke(tpl) => tracing::debug!(partitions = tpl.count(), "revoked"),
            Rebalance::Error(e) => tracing::debug!(error = %e, "rebalance error"),
        }
    }
}

/// Leaves and rejoins `group` (`consumer` subscribed to `topic`) when the
/// consumer has held no partitions for `after` and the group is not
/// `Stable`; says whether it did. Asks the coordinator (blocking, at most
/// a few seconds) only once the consumer has waited that long.
pub fn rejoin_if_stalled<C: Consumer<RevocationContext>>(
    consumer: &C,
    group: &str,
    topic: &str,
    after: Duration,
) -> Result<bool, KafkaError> {
    let context = consumer.context();
    match context.idle_for() {
        Some(waited) if waited >= after => {
            let state = consumer
                .fetch_group_list(Some(group), Duration::from_secs(3))
                .ok()
                .and_then(|l| l.groups().first().map(|g| g.state().to_string()));
            if state.as_deref() == Some("Stable") {
                tracing::debug!(group, "no partitions held, but the group is stable");
                context.restart_clock();
                return Ok(false);
            }
            tracing::warn!(
                waited_s = waited.as_secs(),
                group,
                state = state.as_deref().unwrap_or("unknown"),
                "no partitions assigned and the group has not settled: leaving and joining it again"
            );
            consumer.unsubscribe();
            consumer
                .subscribe(&[topic])
                .map_err(|e| KafkaError::client(format!("subscribing again to {topic}"), e))?;
            context.restart_clock();
            Ok(true)
        }
        _ => Ok(false),
    }
}
