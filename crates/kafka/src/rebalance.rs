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
//!
//! When the dead leader's session expires, tansu 0.6 also settles the group
//! with the survivor as its only member but hands it only its old
//! partitions: the dead one's are assigned to no one, for good. A consumer
//! holding fewer partitions than its share of a stable group leaves and
//! joins it again the same way (on a Kafka cluster every assignor gives each
//! member at least its share, so this never fires either).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use crate::KafkaError;

/// How long a subscribed consumer may go without an assignment before it
/// leaves and joins its group again: twice the session timeout of
/// [`crate::consumer_config`], so a dead member has surely expired.
pub const REJOIN_AFTER: Duration = Duration::from_secs(20);

/// How often a consumer holding partitions checks that it holds its share
/// (see [`rejoin_if_stalled`]).
pub const SHARE_CHECK_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Membership {
    /// Partitions revoked and not yet taken by the role's loop.
    revoked: Vec<i32>,
    /// How many partitions the consumer holds.
    held: usize,
    /// When it last lost its partitions or (re)subscribed.
    since: Instant,
    /// When the consumer's share was last checked while holding some.
    checked: Instant,
    /// Whether the last check found it short.
    short: bool,
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
                held: 0,
                since: Instant::now(),
                checked: Instant::now(),
                short: false,
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
        (s.held == 0).then(|| s.since.elapsed())
    }

    fn restart_clock(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.since = Instant::now();
        }
    }

    /// How many partitions the consumer holds.
    fn held(&self) -> usize {
        self.state.lock().map_or(0, |s| s.held)
    }

    /// Notes whether a check found the share short; says whether the one
    /// before did too.
    fn short_again(&self, short: bool) -> bool {
        self.state
            .lock()
            .is_ok_and(|mut s| std::mem::replace(&mut s.short, short) && short)
    }

    /// Whether `every` has passed since the last share check (or the last
    /// assignment); if so the clock restarts.
    fn check_due(&self, every: Duration) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.checked.elapsed() < every {
            return false;
        }
        s.checked = Instant::now();
        true
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
            s.held = 0;
            s.since = Instant::now();
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::debug!(partitions = ?partitions(tpl), "assigned");
                if tpl.count() > 0
                    && let Ok(mut s) = self.state.lock()
                {
                    s.held = tpl.count();
                    s.checked = Instant::now();
                    s.short = false;
                }
            }
            Rebalance::Revoke(tpl) => tracing::debug!(partitions = ?partitions(tpl), "revoked"),
            Rebalance::Error(e) => tracing::debug!(error = %e, "rebalance error"),
        }
    }
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Leaves and rejoins `group` (`consumer` subscribed to `topic`) when the
/// group stalled; says whether it did. Two stalls, both seen with tansu 0.6
/// after a member was killed, each looked at only after waiting `after`
/// (asking the coordinator, blocking, at most a few seconds):
///
/// - the consumer has held no partitions for `after` and the group is not
///   `Stable`;
/// - the consumer holds partitions, the group is `Stable`, and it holds
///   fewer than its share: `topic`'s partitions divided by the members,
///   rounded down, which any of Kafka's assignors gives a member of a group
///   subscribed to one topic (looked at every [`SHARE_CHECK_EVERY`] while
///   holding some; short twice in a row, so a rebalance in flight is not
///   taken for a stall).
///   tansu 0.6 hands a member that survived a dead leader only its old
///   share, leaving the dead one's partitions to no one.
pub fn rejoin_if_stalled<C: Consumer<RevocationContext>>(
    consumer: &C,
    group: &str,
    topic: &str,
    after: Duration,
) -> Result<bool, KafkaError> {
    let context = consumer.context();
    let why = match context.idle_for() {
        Some(waited) if waited >= after => {
            let state = group_state(consumer, group, topic).map(|g| g.state);
            if state.as_deref() == Some("Stable") {
                tracing::debug!(group, "no partitions held, but the group is stable");
                context.restart_clock();
                return Ok(false);
            }
            format!(
                "no partitions assigned for {} s and the group has not settled (state {})",
                waited.as_secs(),
                state.as_deref().unwrap_or("unknown")
            )
        }
        Some(_) => return Ok(false),
        None if context.check_due(SHARE_CHECK_EVERY) => {
            let Some(g) = group_state(consumer, group, topic) else {
                return Ok(false);
            };
            let held = context.held();
            let short = g.state == "Stable" && g.members > 0 && held < g.partitions / g.members;
            if !context.short_again(short) {
                return Ok(false);
            }
            format!(
                "{held} of the {} partitions of {topic} held by one of {} members of the stable group",
                g.partitions, g.members
            )
        }
        None => return Ok(false),
    };
    rejoin(consumer, group, topic, &why)?;
    Ok(true)
}

/// Leaves `group` and joins it again, saying why.
fn rejoin<C: Consumer<RevocationContext>>(
    consumer: &C,
    group: &str,
    topic: &str,
    why: &str,
) -> Result<(), KafkaError> {
    tracing::warn!(group, "{why}: leaving and joining it again");
    consumer.unsubscribe();
    consumer
        .subscribe(&[topic])
        .map_err(|e| KafkaError::client(format!("subscribing again to {topic}"), e))?;
    consumer.context().restart_clock();
    Ok(())
}

/// Watches the partitions a consumer does not hold, for a group that
/// commits as it goes (the speed layer commits after every seal): one with
/// records past its committed offset whose committed offset has not moved
/// for a while is read by no one, and the consumer leaves and joins the
/// group again so that the assignment is made anew.
///
/// Why: seen once with tansu 0.6 after a worker was killed twice within a
/// session timeout, the restarted worker was given half of the partitions
/// and the group counted the dead member as holding the rest, so the share
/// check of [`rejoin_if_stalled`] saw nothing wrong. On a Kafka cluster
/// every partition has a live owner, whose commits move, so this never
/// fires there unless an owner makes no progress for `after` (a rejoin
/// then costs one rebalance, nothing else: state moves with partitions).
#[derive(Debug)]
pub struct OrphanWatch {
    after: Duration,
    checked: Instant,
    /// Per partition not held: its committed offset when first seen, and
    /// since when it has not moved.
    seen: std::collections::BTreeMap<i32, (i64, Instant)>,
}

impl OrphanWatch {
    /// A watch that rejoins after a partition has gone unread for `after`.
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            checked: Instant::now(),
            seen: Default::default(),
        }
    }

    /// Looks (at most every [`SHARE_CHECK_EVERY`], blocking for at most a
    /// few seconds) and rejoins if a partition has been left unread;
    /// says whether it did.
    pub fn check<C: Consumer<RevocationContext>>(
        &mut self,
        consumer: &C,
        group: &str,
        topic: &str,
    ) -> Result<bool, KafkaError> {
        if self.checked.elapsed() < SHARE_CHECK_EVERY {
            return Ok(false);
        }
        self.checked = Instant::now();
        let Some(orphans) = unread_elsewhere(consumer, topic) else {
            return Ok(false);
        };
        let now = Instant::now();
        self.seen.retain(|p, _| orphans.iter().any(|(q, _)| q == p));
        let mut stuck = Vec::new();
        for (p, committed) in orphans {
            let entry = self.seen.entry(p).or_insert((committed, now));
            if entry.0 != committed {
                *entry = (committed, now);
            } else if now.duration_since(entry.1) >= self.after {
                stuck.push(p);
            }
        }
        if stuck.is_empty() {
            return Ok(false);
        }
        self.seen.clear();
        let why = format!(
            "partitions {stuck:?} of {topic} have unread records and their committed offsets \
             have not moved for {} s, but this consumer does not hold them",
            self.after.as_secs()
        );
        rejoin(consumer, group, topic, &why)?;
        Ok(true)
    }
}

/// The partitions of `topic` this consumer does not hold that have records
/// past the group's committed offset, with that offset (`-1` when none was
/// committed); `None` when the broker could not say.
fn unread_elsewhere<C: Consumer<RevocationContext>>(
    consumer: &C,
    topic: &str,
) -> Option<Vec<(i32, i64)>> {
    let timeout = Duration::from_secs(3);
    let held: Vec<i32> = consumer
        .assignment()
        .ok()?
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect();
    let count = partition_count(consumer, topic, timeout)?;
    let mut others = rdkafka::TopicPartitionList::new();
    for p in (0..count as i32).filter(|p| !held.contains(p)) {
        others.add_partition(topic, p);
    }
    if others.count() == 0 {
        return Some(Vec::new());
    }
    let committed = consumer.committed_offsets(others, timeout).ok()?;
    let mut unread = Vec::new();
    for e in committed.elements_for_topic(topic) {
        let at = e.offset().to_raw().filter(|o| *o >= 0).unwrap_or(-1);
        let (_, high) = consumer
            .fetch_watermarks(topic, e.partition(), timeout)
            .ok()?;
        if high > at.max(0) {
            unread.push((e.partition(), at));
        }
    }
    Some(unread)
}

/// What the coordinator says of a group, and the topic's partitions.
struct GroupState {
    state: String,
    members: usize,
    partitions: usize,
}

fn group_state<C: Consumer<RevocationContext>>(
    consumer: &C,
    group: &str,
    topic: &str,
) -> Option<GroupState> {
    let timeout = Duration::from_secs(3);
    let list = consumer.fetch_group_list(Some(group), timeout).ok()?;
    let info = list.groups().first()?;
    let partitions = partition_count(consumer, topic, timeout)?;
    Some(GroupState {
        state: info.state().to_string(),
        members: info.members().len(),
        partitions,
    })
}

/// How many partitions `topic` has (0 when it does not exist); `None` when
/// the broker did not answer within `timeout`.
fn partition_count<C: Consumer<RevocationContext>>(
    consumer: &C,
    topic: &str,
    timeout: Duration,
) -> Option<usize> {
    Some(
        consumer
            .fetch_metadata(Some(topic), timeout)
            .ok()?
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len()),
    )
}
