//! The per-partition fold: every decision about one record, made once, in
//! the partition's log order, for both layers.
//!
//! [`PartitionFolder`] holds what those decisions need from earlier records
//! of the partition (the dedup state and the largest event time) and, for a
//! record, reports one [`Effect`] per view window it touches: applied (and
//! whether late), pending (historical), or dropped as a duplicate. The speed
//! layer carries the effects out on its states per epoch as records arrive;
//! the batch layer carries them out in a sequential pass over the archive in
//! offset order. Same rule, same order, same decisions.
//!
//! A record is late for a window when the window had ended by the
//! partition's watermark before it (the largest earlier event time of the
//! partition minus the view's `max_out_of_orderness`). Using the partition's
//! own watermark, not the view-wide minimum, keeps the flag a function of
//! the log alone, so a replay flags the same records.

use std::collections::BTreeMap;

use crate::agg::AggState;
use crate::dedup::{DedupKey, Deduper};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::hash::device_hash;
use crate::lateness::LatenessClass;
use crate::merge::Counters;
use crate::reading::{Reading, Record};
use crate::view::{Settings, ViewDef};
use crate::window::WindowBounds;

/// Group key values in the view's `group_by` order (`None`: tag absent).
pub type GroupKey = Vec<Option<String>>;

/// The group of a reading in a view.
pub fn group_key(view: &ViewDef, r: &Reading) -> GroupKey {
    Group::of(view, r).to_key()
}

/// The group of a reading in a view, borrowed from the reading: what an
/// [`Effect`] carries, so that deciding on a record allocates nothing and
/// only a state that is new takes an owned [`GroupKey`].
#[derive(Clone, Copy, Debug)]
pub struct Group<'a> {
    keys: &'a [String],
    reading: &'a Reading,
}

impl<'a> Group<'a> {
    /// The group of `r` in `view`.
    pub fn of(view: &'a ViewDef, r: &'a Reading) -> Self {
        Self {
            keys: &view.group_by,
            reading: r,
        }
    }

    /// The values in `group_by` order (`None`: tag absent).
    pub fn values(self) -> impl ExactSizeIterator<Item = Option<&'a str>> {
        let r = self.reading;
        self.keys.iter().map(move |k| r.key_value(k))
    }

    /// The owned key.
    pub fn to_key(self) -> GroupKey {
        self.values().map(|v| v.map(str::to_string)).collect()
    }

    /// Whether `key` holds the same values.
    pub fn matches(self, key: &GroupKey) -> bool {
        key.len() == self.keys.len() && self.values().zip(key).all(|(a, b)| a == b.as_deref())
    }
}

/// What a record does to one window of one view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Folded into the window's state.
    Applied {
        /// The window had already ended by the partition's watermark.
        late: bool,
    },
    /// Historical: left to the batch layer, counted as pending by the
    /// speed layer and applied by a batch run.
    Pending {
        /// The window had already ended by the partition's watermark.
        late: bool,
    },
    /// A duplicate: dropped and counted.
    Duplicate,
}

/// Which layer carries out the outcomes: the speed layer leaves historical
/// readings pending; a batch run covers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// The speed layer.
    Speed,
    /// A batch run.
    Batch,
}

impl Outcome {
    /// The outcome as `layer` carries it out.
    pub fn in_layer(self, layer: Layer) -> Self {
        match (self, layer) {
            (Self::Pending { late }, Layer::Batch) => Self::Applied { late },
            (o, _) => o,
        }
    }

    /// A one-byte code (see [`Outcome::from_code`]).
    pub fn code(self) -> u8 {
        match self {
            Self::Applied { late } => u8::from(late),
            Self::Pending { late } => 2 + u8::from(late),
            Self::Duplicate => 4,
        }
    }

    /// Reads [`Outcome::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 | 1 => Self::Applied { late: code == 1 },
            2 | 3 => Self::Pending { late: code == 3 },
            4 => Self::Duplicate,
            _ => return None,
        })
    }

    /// Whether the reading's value goes into the state.
    pub fn applies(self) -> bool {
        matches!(self, Self::Applied { .. })
    }
}

impl Counters {
    /// Counts one outcome.
    pub fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Applied { late } => {
                self.readings += 1;
                self.late_readings += u64::from(late);
            }
            Outcome::Pending { .. } => self.pending_historical += 1,
            Outcome::Duplicate => self.duplicates_dropped += 1,
        }
    }
}

/// One effect of one record.
#[derive(Debug)]
pub struct Effect<'a> {
    /// Index of the view in the view set.
    pub view: usize,
    /// The window.
    pub window: WindowBounds,
    /// The group.
    pub group: Group<'a>,
    /// What to do.
    pub outcome: Outcome,
}

/// The fold state of one partition.
#[derive(Clone, Debug)]
pub struct PartitionFolder {
    dedup: Deduper,
    max_ts: Option<i64>,
}

impl PartitionFolder {
    /// A partition with no records yet.
    pub fn new(settings: &Settings) -> Self {
        Self {
            dedup: Deduper::new(settings.dedup_horizon_ms),
            max_ts: None,
        }
    }

    /// The largest event time seen in the partition.
    pub fn max_event_ts(&self) -> Option<i64> {
        self.max_ts
    }

    /// Dedup keys held.
    pub fn dedup_keys(&self) -> usize {
        self.dedup.len()
    }

    /// Decides on the next record of the partition, in offset order,
    /// reporting each effect; returns whether the record is a duplicate.
    pub fn fold(
        &mut self,
        views: &[ViewDef],
        rec: &Record,
        mut effect: impl FnMut(Effect<'_>),
    ) -> bool {
        let r = &rec.reading;
        let duplicate = self.dedup.is_duplicate(DedupKey::of(r), rec.ingest_ts);
        let before = self.max_ts;
        self.max_ts = Some(before.map_or(r.ts, |m| m.max(r.ts)));
        for (view, def) in views.iter().enumerate() {
            if !def.accepts_metric(&r.metric) {
                continue;
            }
            let group = Group::of(def, r);
            let class = def.lateness.classify(r.ts, rec.ingest_ts);
            let watermark = before.map(|m| m.saturating_sub(def.max_out_of_orderness_ms));
            for window in def.windowing.assign(r.ts) {
                let late = watermark.is_some_and(|w| w >= window.end);
                let outcome = if duplicate {
                    Outcome::Duplicate
                } else if class == LatenessClass::Historical {
                    Outcome::Pending { late }
                } else {
                    Outcome::Applied { late }
                };
                effect(Effect {
                    view,
                    window,
                    group,
                    outcome,
                });
            }
        }
        duplicate
    }

    /// Writes the state for a checkpoint.
    pub fn encode(&self, w: &mut Writer) {
        match self.max_ts {
            Some(ts) => {
                w.u8(1);
                w.ivar(ts);
            }
            None => w.u8(0),
        }
        self.dedup.encode(w);
    }

    /// Reads what [`PartitionFolder::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let max_ts = match r.u8("folder max ts flag")? {
            0 => None,
            1 => Some(r.ivar("folder max ts")?),
            _ => return Err(DecodeError::Invalid("folder max ts flag")),
        };
        let dedup = Deduper::decode(r)?;
        Ok(Self { dedup, max_ts })
    }
}

/// A view's windows keyed by (view, window start, group): states and
/// counters, as a whole-log fold builds them (the batch layer, tests).
pub type ViewTable = BTreeMap<(usize, i64, GroupKey), (AggState, Counters)>;

/// Folds records of one partition, in offset order, into `table`, as
/// `layer` does.
pub fn fold_into(
    table: &mut ViewTable,
    folder: &mut PartitionFolder,
    views: &[ViewDef],
    layer: Layer,
    records: impl IntoIterator<Item = impl std::borrow::Borrow<Record>>,
) {
    for rec in records {
        let rec = rec.borrow();
        let hash = device_hash(&rec.reading.device_id);
        folder.fold(views, rec, |e| {
            let (state, counters) = table
                .entry((e.view, e.window.start, e.group.to_key()))
                .or_insert_with(|| (AggState::new(views[e.view].parts()), Counters::default()));
            let outcome = e.outcome.in_layer(layer);
            counters.count(outcome);
            if outcome.applies() {
                state.fold(rec.reading.value, hash);
            }
        });
    }
}
