//! The wire format of `braid.speed`: what the speed layer publishes and the
//! serving layer (and anyone else) reads back.
//!
//! Messages of reading partition `p` go to one partition of `braid.speed`, in
//! order, each one of:
//!
//! - [`SpeedMessage::Restored`]: a worker took partition `p` over from a
//!   checkpoint whose last sealed boundary is `boundary`, under a fresh
//!   `restore_id`. Readers drop every state of `p` with an epoch starting at
//!   or after `boundary` (an earlier owner may have published them past the
//!   point the checkpoint holds) and from now on accept states of `p` only
//!   with this `restore_id`, so a zombie owner cannot count anything twice.
//! - [`SpeedMessage::State`]: the absolute state of one (view, window, group)
//!   in one epoch of `p`, with the highest offset it includes. Readers keep,
//!   per key, the state with the highest offset: replays are idempotent.
//! - [`SpeedMessage::Sealed`]: the epoch `[start, end)` of `p` is sealed (its
//!   checkpoint is durable); `end` is a boundary a batch cut may use.
//!
//! The encoding is this crate's versioned binary form; message keys are
//! [`SpeedKey::to_bytes`] for states and the partition for control messages.

use std::collections::BTreeMap;

use crate::agg::AggState;
use crate::encoding::{DecodeError, Reader, Writer};
use crate::fold::GroupKey;
use crate::merge::{Counters, EpochSpan};

const VERSION: u8 = 1;

/// The identity of one published state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpeedKey {
    /// The view's name.
    pub view: String,
    /// Window start, epoch ms.
    pub window_start: i64,
    /// The group.
    pub group: GroupKey,
    /// Reading partition.
    pub partition: i32,
    /// First offset of the epoch.
    pub epoch_start: i64,
}

impl SpeedKey {
    fn encode(&self, w: &mut Writer) {
        w.bytes(self.view.as_bytes());
        w.ivar(self.window_start);
        encode_group(w, &self.group);
        w.ivar(i64::from(self.partition));
        w.ivar(self.epoch_start);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let view = utf8(r.bytes("speed key view")?)?;
        let window_start = r.ivar("speed key window")?;
        let group = decode_group(r)?;
        let partition = i32::try_from(r.ivar("speed key partition")?)
            .map_err(|_| DecodeError::Invalid("speed key partition"))?;
        let epoch_start = r.ivar("speed key epoch")?;
        Ok(Self {
            view,
            window_start,
            group,
            partition,
            epoch_start,
        })
    }

    /// The Kafka message key of a state.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }
}

fn utf8(b: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid("utf-8 string"))
}

/// One message of `braid.speed`. States dominate the traffic, so the enum
/// is sized for them rather than boxing the common case.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum SpeedMessage {
    /// A worker restored partition `partition` from a checkpoint.
    Restored {
        /// Reading partition.
        partition: i32,
        /// Unique per restore.
        restore_id: u64,
        /// First offset of the first epoch not in the checkpoint.
        boundary: i64,
    },
    /// The absolute state of one key.
    State {
        /// Which state.
        key: SpeedKey,
        /// The restore it belongs to.
        restore_id: u64,
        /// The highest offset of the partition it includes.
        max_offset: i64,
        /// The state.
        state: AggState,
        /// Its counters.
        counters: Counters,
    },
    /// How far the worker has read partition `partition`: published with
    /// each batch of states, for watermarks and lag.
    Progress {
        /// The restore it belongs to.
        restore_id: u64,
        /// Reading partition.
        partition: i32,
        /// The next offset the worker will read.
        next_offset: i64,
        /// The largest event time of the partition so far.
        max_event_ts: Option<i64>,
    },
    /// An epoch was sealed.
    Sealed {
        /// The restore it belongs to.
        restore_id: u64,
        /// The epoch.
        span: EpochSpan,
    },
}

impl SpeedMessage {
    /// The reading partition the message is about.
    pub fn partition(&self) -> i32 {
        match self {
            Self::Restored { partition, .. } => *partition,
            Self::State { key, .. } => key.partition,
            Self::Progress { partition, .. } => *partition,
            Self::Sealed { span, .. } => span.partition,
        }
    }

    /// The encoded message value.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        match self {
            Self::Restored {
                partition,
                restore_id,
                boundary,
            } => {
                w.u8(0);
                w.ivar(i64::from(*partition));
                w.uvar(*restore_id);
                w.ivar(*boundary);
            }
            Self::State {
                key,
                restore_id,
                max_offset,
                state,
                counters,
            } => {
                w.u8(1);
                key.encode(&mut w);
                w.uvar(*restore_id);
                w.ivar(*max_offset);
                state.encode(&mut w);
                encode_counters(&mut w, counters);
            }
            Self::Progress {
                restore_id,
                partition,
                next_offset,
                max_event_ts,
            } => {
                w.u8(3);
                w.uvar(*restore_id);
                w.ivar(i64::from(*partition));
                w.ivar(*next_offset);
                match max_event_ts {
                    Some(ts) => {
                        w.u8(1);
                        w.ivar(*ts);
                    }
                    None => w.u8(0),
                }
            }
            Self::Sealed { restore_id, span } => {
                w.u8(2);
                w.uvar(*restore_id);
                w.ivar(i64::from(span.partition));
                w.ivar(span.start);
                w.ivar(span.end);
            }
        }
        w.into_bytes()
    }

    /// Decodes a message value.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("speed message version")?;
        if version != VERSION {
            return Err(DecodeError::Version {
                what: "speed message",
                found: version,
                supported: VERSION,
            });
        }
        let partition = |r: &mut Reader<'_>| {
            i32::try_from(r.ivar("partition")?).map_err(|_| DecodeError::Invalid("partition"))
        };
        let msg = match r.u8("speed message kind")? {
            0 => Self::Restored {
                partition: partition(&mut r)?,
                restore_id: r.uvar("restore id")?,
                boundary: r.ivar("boundary")?,
            },
            1 => Self::State {
                key: SpeedKey::decode(&mut r)?,
                restore_id: r.uvar("restore id")?,
                max_offset: r.ivar("max offset")?,
                state: AggState::decode(&mut r)?,
                counters: decode_counters(&mut r)?,
            },
            2 => {
                let restore_id = r.uvar("restore id")?;
                let span = EpochSpan {
                    partition: partition(&mut r)?,
                    start: r.ivar("epoch start")?,
                    end: r.ivar("epoch end")?,
                };
                Self::Sealed { restore_id, span }
            }
            3 => Self::Progress {
                restore_id: r.uvar("restore id")?,
                partition: partition(&mut r)?,
                next_offset: r.ivar("next offset")?,
                max_event_ts: match r.u8("max event ts flag")? {
                    0 => None,
                    1 => Some(r.ivar("max event ts")?),
                    _ => return Err(DecodeError::Invalid("max event ts flag")),
                },
            },
            _ => return Err(DecodeError::Invalid("speed message kind")),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// One epoch's part of a window: its span, state and counters.
pub type EpochPart<'a> = (EpochSpan, &'a AggState, &'a Counters);

/// What a reader of `braid.speed` keeps: per partition, the current restore
/// and the newest state of every key, by the rules of [`SpeedMessage`].
#[derive(Clone, Debug, Default)]
pub struct SpeedTable {
    partitions: BTreeMap<i32, PartitionSpeed>,
    /// Per partition of the log the messages are read from, the offset
    /// after the last one read (see [`SpeedTable::read_to`]).
    position: BTreeMap<i32, i64>,
    /// How many times the table has changed (see [`SpeedTable::version`]).
    version: u64,
}

/// One partition's part of a [`SpeedTable`].
#[derive(Clone, Debug, Default)]
pub struct PartitionSpeed {
    /// The restore whose states are accepted.
    pub restore_id: Option<u64>,
    /// Sealed epochs, by start.
    pub sealed: BTreeMap<i64, i64>,
    /// The newest state of each key, one group's windows together.
    pub states: BTreeMap<StateKey, Published>,
    /// The highest offset any accepted state includes.
    pub max_offset: Option<i64>,
    /// The worker's last reported progress: next offset, largest event time.
    pub progress: Option<(i64, Option<i64>)>,
}

/// A state's key in a [`PartitionSpeed`]: ordered by view, group, window
/// start, partition and epoch, so that one group's windows (one device's,
/// in views grouped by device first) lie together and a device's range is
/// one seek, not a seek per window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateKey(pub SpeedKey);

impl Ord for StateKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let (a, b) = (&self.0, &other.0);
        (
            &a.view,
            &a.group,
            a.window_start,
            a.partition,
            a.epoch_start,
        )
            .cmp(&(
                &b.view,
                &b.group,
                b.window_start,
                b.partition,
                b.epoch_start,
            ))
    }
}

impl PartialOrd for StateKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A published state as kept by a reader.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// The highest offset it includes.
    pub max_offset: i64,
    /// The state.
    pub state: AggState,
    /// Its counters.
    pub counters: Counters,
}

impl PartitionSpeed {
    /// Appends to `out` the states of `view` (of the groups whose first
    /// value is `lead`, if given) with window starts in `[from, to)`: a
    /// skip scan that seeks to each group's `from` and past its `to`.
    fn scan<'a>(
        &'a self,
        view: &str,
        lead: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        out: &mut Vec<(&'a SpeedKey, &'a Published)>,
    ) {
        use std::ops::Bound;
        let key = |group: GroupKey, window_start: i64, partition: i32, epoch_start: i64| {
            StateKey(SpeedKey {
                view: view.to_string(),
                window_start,
                group,
                partition,
                epoch_start,
            })
        };
        let from = from.unwrap_or(i64::MIN);
        let first = lead.map_or_else(Vec::new, |l| vec![Some(l.to_string())]);
        let mut lo = Bound::Included(key(first, from, i32::MIN, i64::MIN));
        'seek: loop {
            for (k, published) in self.states.range((lo.as_ref(), Bound::Unbounded)) {
                let s = &k.0;
                if s.view != view
                    || lead.is_some_and(|l| s.group.first().and_then(Option::as_deref) != Some(l))
                {
                    break 'seek;
                }
                if s.window_start < from {
                    // Before the range in this group: to its start.
                    lo = Bound::Included(key(s.group.clone(), from, i32::MIN, i64::MIN));
                    continue 'seek;
                }
                if to.is_some_and(|t| s.window_start >= t) {
                    // Past the range in this group: to the next group.
                    lo = Bound::Excluded(key(s.group.clone(), i64::MAX, i32::MAX, i64::MAX));
                    continue 'seek;
                }
                out.push((s, published));
            }
            break;
        }
    }
}

impl SpeedTable {
    /// Notes that the reader has read partition `log_partition` of its log
    /// (`braid.speed`) up to `next_offset`, applied or not. The table is a
    /// function of what it read, so two tables at the same position are
    /// equal, and an answer can say which position it was made from.
    pub fn read_to(&mut self, log_partition: i32, next_offset: i64) {
        self.version += 1;
        let at = self.position.entry(log_partition).or_default();
        *at = (*at).max(next_offset);
    }

    /// Per partition of the log read, the offset after the last message
    /// read.
    pub fn position(&self) -> &BTreeMap<i32, i64> {
        &self.position
    }

    /// A count of the table's changes: every call that takes it mutably
    /// ([`SpeedTable::read_to`], [`SpeedTable::apply`],
    /// [`SpeedTable::drop_below`]) adds one, so anything computed from the
    /// table at one version holds for as long as the version is the same.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies one message; `false` when it was ignored (a stale restore or
    /// an older value of a key).
    pub fn apply(&mut self, msg: SpeedMessage) -> bool {
        self.version += 1;
        let p = self.partitions.entry(msg.partition()).or_default();
        match msg {
            SpeedMessage::Restored {
                restore_id,
                boundary,
                ..
            } => {
                p.states.retain(|k, _| k.0.epoch_start < boundary);
                p.sealed.retain(|&start, _| start < boundary);
                p.restore_id = Some(restore_id);
                p.max_offset = p.states.values().map(|s| s.max_offset).max();
                p.progress = None;
                true
            }
            SpeedMessage::State {
                key,
                restore_id,
                max_offset,
                state,
                counters,
            } => {
                if p.restore_id.is_some_and(|id| id != restore_id) {
                    return false;
                }
                p.restore_id = Some(restore_id);
                let key = StateKey(key);
                if p.states
                    .get(&key)
                    .is_some_and(|old| old.max_offset >= max_offset)
                {
                    return false;
                }
                p.max_offset = Some(p.max_offset.map_or(max_offset, |m| m.max(max_offset)));
                p.states.insert(
                    key,
                    Published {
                        max_offset,
                        state,
                        counters,
                    },
                );
                true
            }
            SpeedMessage::Progress {
                restore_id,
                next_offset,
                max_event_ts,
                ..
            } => {
                if p.restore_id.is_some_and(|id| id != restore_id) {
                    return false;
                }
                p.progress = Some((next_offset, max_event_ts));
                true
            }
            SpeedMessage::Sealed { restore_id, span } => {
                if p.restore_id.is_some_and(|id| id != restore_id) {
                    return false;
                }
                p.sealed.insert(span.start, span.end);
                true
            }
        }
    }

    /// Drops the states of epochs that end at or before `cut` (a batch run
    /// now holds them), and hands them back.
    pub fn drop_below(&mut self, cut: &crate::merge::Cut) -> Vec<(SpeedKey, Published)> {
        self.version += 1;
        let mut dropped = Vec::new();
        for (&partition, p) in &mut self.partitions {
            let c = cut.offset(partition);
            let covered = |k: &SpeedKey| {
                k.epoch_start < c && p.sealed.get(&k.epoch_start).is_some_and(|&end| end <= c)
            };
            let keys: Vec<StateKey> = p.states.keys().filter(|k| covered(&k.0)).cloned().collect();
            for k in keys {
                if let Some(v) = p.states.remove(&k) {
                    dropped.push((k.0, v));
                }
            }
            p.sealed.retain(|_, end| *end > c);
        }
        dropped
    }

    /// Every partition's part.
    pub fn partitions(&self) -> &BTreeMap<i32, PartitionSpeed> {
        &self.partitions
    }

    /// Every partition's states of `view` whose window starts in
    /// `[from, to)` (`None`: unbounded): within each partition, a seek to
    /// each group's first window in range and past its last.
    pub fn states_in<'a>(
        &'a self,
        view: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> impl Iterator<Item = (&'a SpeedKey, &'a Published)> + use<'a> {
        let mut out = Vec::new();
        for ps in self.partitions.values() {
            ps.scan(view, None, from, to, &mut out);
        }
        out.into_iter()
    }

    /// Like [`SpeedTable::states_in`], only the states whose group's first
    /// value is `lead` (a device, for views grouped by device first): those
    /// groups lie together, so this costs a seek per group and partition,
    /// whatever the fleet's size.
    pub fn states_led_by<'a>(
        &'a self,
        view: &str,
        from: Option<i64>,
        to: Option<i64>,
        lead: &str,
    ) -> Vec<(&'a SpeedKey, &'a Published)> {
        let mut out = Vec::new();
        for ps in self.partitions.values() {
            ps.scan(view, Some(lead), from, to, &mut out);
        }
        out
    }

    /// The states of `view` with window starts in `[from, to)`, grouped by
    /// (window start, group), each with its epoch span, for
    /// [`crate::merge::merge_window`]; `keep` filters keys further.
    pub fn windows(
        &self,
        view: &str,
        from: Option<i64>,
        to: Option<i64>,
        keep: impl Fn(&SpeedKey) -> bool,
    ) -> BTreeMap<(i64, GroupKey), Vec<EpochPart<'_>>> {
        self.group_windows(self.states_in(view, from, to).filter(|(k, _)| keep(k)))
    }

    /// States grouped by (window start, group), each with its epoch span.
    pub fn group_windows<'a>(
        &'a self,
        states: impl IntoIterator<Item = (&'a SpeedKey, &'a Published)>,
    ) -> BTreeMap<(i64, GroupKey), Vec<EpochPart<'a>>> {
        let mut out: BTreeMap<(i64, GroupKey), Vec<EpochPart<'a>>> = BTreeMap::new();
        for (k, published) in states {
            out.entry((k.window_start, k.group.clone()))
                .or_default()
                .push((
                    self.span_of(k, published),
                    &published.state,
                    &published.counters,
                ));
        }
        out
    }

    /// The epoch span of a state's key: its end is known once sealed, and
    /// otherwise at least one past the highest offset it includes.
    pub fn span_of(&self, key: &SpeedKey, published: &Published) -> EpochSpan {
        let end = self
            .partitions
            .get(&key.partition)
            .and_then(|p| p.sealed.get(&key.epoch_start).copied())
            .unwrap_or(published.max_offset + 1);
        EpochSpan {
            partition: key.partition,
            start: key.epoch_start,
            end,
        }
    }
}

/// Writes a group key.
pub fn encode_group(w: &mut Writer, group: &GroupKey) {
    encode_group_values(w, group.iter().map(Option::as_deref));
}

/// [`encode_group`] of borrowed values, such as a
/// [`crate::fold::Group`]'s.
pub fn encode_group_values<'a>(
    w: &mut Writer,
    group: impl ExactSizeIterator<Item = Option<&'a str>>,
) {
    w.uvar(group.len() as u64);
    for g in group {
        match g {
            Some(v) => {
                w.u8(1);
                w.bytes(v.as_bytes());
            }
            None => w.u8(0),
        }
    }
}

/// Reads a group key.
pub fn decode_group(r: &mut Reader<'_>) -> Result<GroupKey, DecodeError> {
    let n = r.len("group", 1)?;
    let mut group = Vec::with_capacity(n);
    for _ in 0..n {
        group.push(match r.u8("group flag")? {
            0 => None,
            1 => Some(utf8(r.bytes("group value")?)?),
            _ => return Err(DecodeError::Invalid("group flag")),
        });
    }
    Ok(group)
}

/// Writes counters.
pub fn encode_counters(w: &mut Writer, c: &Counters) {
    w.uvar(c.readings);
    w.uvar(c.late_readings);
    w.uvar(c.pending_historical);
    w.uvar(c.duplicates_dropped);
}

/// Reads counters.
pub fn decode_counters(r: &mut Reader<'_>) -> Result<Counters, DecodeError> {
    Ok(Counters {
        readings: r.uvar("readings")?,
        late_readings: r.uvar("late readings")?,
        pending_historical: r.uvar("pending historical")?,
        duplicates_dropped: r.uvar("duplicates dropped")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::{Aggregate, Parts};

    #[test]
    fn messages_round_trip() {
        let mut state = AggState::new(Parts::for_aggregates(Aggregate::ALL));
        state.fold(2.5, 7);
        let msgs = [
            SpeedMessage::Restored {
                partition: 3,
                restore_id: u64::MAX,
                boundary: 100,
            },
            SpeedMessage::State {
                key: SpeedKey {
                    view: "v".into(),
                    window_start: -60_000,
                    group: vec![Some("a".into()), None],
                    partition: 3,
                    epoch_start: 100,
                },
                restore_id: 9,
                max_offset: 141,
                state,
                counters: Counters {
                    readings: 1,
                    late_readings: 0,
                    pending_historical: 4,
                    duplicates_dropped: 2,
                },
            },
            SpeedMessage::Sealed {
                restore_id: 9,
                span: EpochSpan {
                    partition: 3,
                    start: 100,
                    end: 142,
                },
            },
            SpeedMessage::Progress {
                restore_id: 9,
                partition: 3,
                next_offset: 142,
                max_event_ts: Some(-5),
            },
        ];
        for m in msgs {
            let back = SpeedMessage::from_bytes(&m.to_bytes()).unwrap();
            assert_eq!(back.to_bytes(), m.to_bytes());
            assert_eq!(back.partition(), 3);
        }
        assert!(SpeedMessage::from_bytes(&[1, 9]).is_err());
    }

    fn state_msg(restore_id: u64, epoch_start: i64, max_offset: i64, n: u64) -> SpeedMessage {
        let mut state = AggState::new(Parts::for_aggregates([Aggregate::Count]));
        for _ in 0..n {
            state.fold(1.0, 0);
        }
        SpeedMessage::State {
            key: SpeedKey {
                view: "v".into(),
                window_start: 0,
                group: vec![],
                partition: 0,
                epoch_start,
            },
            restore_id,
            max_offset,
            state,
            counters: Counters {
                readings: n,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn a_restore_supersedes_what_the_checkpoint_does_not_hold() {
        let mut t = SpeedTable::default();
        assert!(t.apply(state_msg(1, 0, 9, 10)));
        assert!(t.apply(SpeedMessage::Sealed {
            restore_id: 1,
            span: EpochSpan {
                partition: 0,
                start: 0,
                end: 10
            }
        }));
        // The old owner got to offset 19 in the open epoch, then died.
        assert!(t.apply(state_msg(1, 10, 19, 10)));
        // The new owner restores at boundary 10 and seals at 15 instead.
        assert!(t.apply(SpeedMessage::Restored {
            partition: 0,
            restore_id: 2,
            boundary: 10
        }));
        assert!(!t.apply(state_msg(1, 10, 25, 16)), "a zombie is ignored");
        assert!(t.apply(state_msg(2, 10, 14, 5)));
        assert!(t.apply(SpeedMessage::Sealed {
            restore_id: 2,
            span: EpochSpan {
                partition: 0,
                start: 10,
                end: 15
            }
        }));
        assert!(t.apply(state_msg(2, 15, 19, 5)));
        assert!(
            !t.apply(state_msg(2, 15, 18, 4)),
            "an older value of a key is ignored"
        );
        let total: u64 = t.partitions()[&0]
            .states
            .values()
            .map(|p| p.counters.readings)
            .sum();
        assert_eq!(total, 20, "offsets 0..20 counted once");
        let dropped = t.drop_below(&crate::merge::Cut([(0, 15)].into()));
        let gone: u64 = dropped.iter().map(|(_, p)| p.counters.readings).sum();
        assert_eq!(gone, 15, "the dropped states are handed back");
        let left: Vec<i64> = t.partitions()[&0]
            .states
            .keys()
            .map(|k| k.0.epoch_start)
            .collect();
        assert_eq!(left, vec![15]);
    }

    /// The skip scans find exactly what a filter over every state finds,
    /// for groups of one and two values, several views, partitions and
    /// epochs, and every range and lead.
    #[test]
    fn skip_scans_equal_a_filter() {
        let mut t = SpeedTable::default();
        let groups: Vec<GroupKey> = vec![
            vec![Some("d0".into())],
            vec![Some("d1".into()), Some("m1".into())],
            vec![Some("d1".into()), Some("m2".into())],
            vec![Some("d1".into()), None],
            vec![Some("d2".into()), Some("m1".into())],
            vec![None, Some("m1".into())],
            vec![],
        ];
        let mut n = 0;
        for view in ["a", "b", "c"] {
            for (gi, group) in groups.iter().enumerate() {
                for w in 0..8i64 {
                    // Not every group has every window.
                    if (w + gi as i64) % 3 == 0 {
                        continue;
                    }
                    for partition in 0..2 {
                        for epoch_start in [0, 100] {
                            n += 1;
                            assert!(t.apply(SpeedMessage::State {
                                key: SpeedKey {
                                    view: view.into(),
                                    window_start: w * 10,
                                    group: group.clone(),
                                    partition,
                                    epoch_start,
                                },
                                restore_id: 1,
                                max_offset: epoch_start + n,
                                state: AggState::new(Parts::for_aggregates([Aggregate::Count])),
                                counters: Counters::default(),
                            }));
                        }
                    }
                }
            }
        }
        let every: Vec<&SpeedKey> = t
            .partitions()
            .values()
            .flat_map(|p| p.states.keys().map(|k| &k.0))
            .collect();
        let bounds = [
            None,
            Some(-5),
            Some(0),
            Some(15),
            Some(20),
            Some(70),
            Some(200),
        ];
        fn sorted(mut v: Vec<&SpeedKey>) -> Vec<&SpeedKey> {
            v.sort();
            v
        }
        for from in bounds {
            for to in bounds {
                let in_range = |k: &&SpeedKey| {
                    k.view == "b"
                        && from.is_none_or(|f| k.window_start >= f)
                        && to.is_none_or(|t| k.window_start < t)
                };
                let want: Vec<&SpeedKey> = every.iter().copied().filter(in_range).collect();
                let got: Vec<&SpeedKey> = t.states_in("b", from, to).map(|(k, _)| k).collect();
                assert_eq!(sorted(got), sorted(want), "states_in [{from:?}, {to:?})");
                for lead in ["d0", "d1", "d2", "d3", ""] {
                    let want: Vec<&SpeedKey> = every
                        .iter()
                        .copied()
                        .filter(in_range)
                        .filter(|k| k.group.first().and_then(Option::as_deref) == Some(lead))
                        .collect();
                    let got: Vec<&SpeedKey> = t
                        .states_led_by("b", from, to, lead)
                        .into_iter()
                        .map(|(k, _)| k)
                        .collect();
                    assert_eq!(
                        sorted(got),
                        sorted(want),
                        "states_led_by {lead} [{from:?}, {to:?})"
                    );
                }
            }
        }
    }
}
