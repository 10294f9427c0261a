//! The exact merge of batch and speed, drawn in log positions.
//!
//! A batch run aggregates exactly the records with `offset < cut[partition]`.
//! The speed layer keeps its states per (window, group, partition, epoch),
//! where an epoch is a range of offsets of one partition, and cuts are chosen
//! only at sealed epoch boundaries. So every epoch lies wholly below or wholly
//! at-or-above the cut of its partition, and
//! `batch(cut) ⊕ speed(epochs at or after cut)` counts every record exactly
//! once. An epoch that straddles a cut is a broken invariant and an error,
//! never a silent double count.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::agg::AggState;

/// Per partition, the first offset a batch run did not include.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut(pub BTreeMap<i32, i64>);

impl Cut {
    /// The cut of `partition`; 0 (nothing in batch) when absent.
    pub fn offset(&self, partition: i32) -> i64 {
        self.0.get(&partition).copied().unwrap_or(0)
    }

    /// Whether a batch run with this cut includes the record at `offset`.
    pub fn includes(&self, partition: i32, offset: i64) -> bool {
        offset < self.offset(partition)
    }
}

/// The offsets `[start, end)` of one partition that one epoch covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EpochSpan {
    /// Kafka partition.
    pub partition: i32,
    /// First offset in the epoch.
    pub start: i64,
    /// First offset after the epoch.
    pub end: i64,
}

/// An epoch that straddles a batch cut.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error(
    "epoch [{}, {}) of partition {} straddles the batch cut at {}: cuts must fall on sealed epoch boundaries",
    span.start, span.end, span.partition, cut
)]
pub struct MisalignedCut {
    /// The epoch.
    pub span: EpochSpan,
    /// The cut of its partition.
    pub cut: i64,
}

impl EpochSpan {
    /// Whether this epoch's speed state counts beside a batch view with `cut`.
    pub fn counts_after(&self, cut: &Cut) -> Result<bool, MisalignedCut> {
        let c = cut.offset(self.partition);
        if self.start >= c {
            Ok(true)
        } else if self.end <= c {
            Ok(false)
        } else {
            Err(MisalignedCut {
                span: *self,
                cut: c,
            })
        }
    }
}

/// Bookkeeping that travels with every state: what was applied, late,
/// pending or dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counters {
    /// Readings folded into the state.
    pub readings: u64,
    /// Of those, readings that arrived after the window had closed.
    pub late_readings: u64,
    /// Historical readings seen but not applied (left to batch).
    pub pending_historical: u64,
    /// Duplicates dropped.
    pub duplicates_dropped: u64,
}

impl Counters {
    /// Adds another set of counters.
    pub fn add(&mut self, other: &Self) {
        self.readings += other.readings;
        self.late_readings += other.late_readings;
        self.pending_historical += other.pending_historical;
        self.duplicates_dropped += other.duplicates_dropped;
    }
}

/// Where a merged window's numbers came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// Only a batch run.
    #[serde(rename = "batch")]
    Batch,
    /// Only the speed layer.
    #[serde(rename = "speed")]
    Speed,
    /// Both.
    #[serde(rename = "batch+speed")]
    BatchSpeed,
}

impl Source {
    /// The name used in answers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Speed => "speed",
            Self::BatchSpeed => "batch+speed",
        }
    }
}

/// One window of one group, merged.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    /// The merged state.
    pub state: AggState,
    /// Counters of the batch part.
    pub batch: Counters,
    /// Counters of the speed part (epochs at or after the cut).
    pub speed: Counters,
    /// Where the readings came from.
    pub source: Source,
}

/// Merges a window's batch state with its speed states per epoch.
///
/// Returns `None` when neither side has anything for the window.
pub fn merge_window<'a>(
    batch: Option<(&AggState, &Counters)>,
    speed: impl IntoIterator<Item = (EpochSpan, &'a AggState, &'a Counters)>,
    cut: &Cut,
) -> Result<Option<Merged>, MisalignedCut> {
    let mut state = batch.map(|(s, _)| s.clone());
    let batch_counters = batch.map(|(_, c)| *c).unwrap_or_default();
    let mut speed_counters = Counters::default();
    let mut any_speed = false;
    for (span, s, c) in speed {
        if !span.counts_after(cut)? {
            continue;
        }
        any_speed = true;
        speed_counters.add(c);
        match &mut state {
            Some(acc) => acc.merge(s),
            None => state = Some(s.clone()),
        }
    }
    let source = match (batch.is_some(), any_speed) {
        (true, true) => Source::BatchSpeed,
        (true, false) => Source::Batch,
        (false, true) => Source::Speed,
        (false, false) => return Ok(None),
    };
    Ok(state.map(|state| Merged {
        state,
        batch: batch_counters,
        speed: speed_counters,
        source,
    }))
}

/// All partitions' speed states grouped by partition, for callers that keep
/// them in maps: a convenience over [`merge_window`].
pub type SpeedStates = BTreeMap<EpochSpan, (AggState, Counters)>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::{Aggregate, Column, Parts};

    fn state(values: &[f64]) -> AggState {
        let mut s = AggState::new(Parts::for_aggregates([Aggregate::Sum]));
        for &v in values {
            s.fold(v, 0);
        }
        s
    }

    #[test]
    fn each_epoch_counts_once() {
        let batch = state(&[1.0, 2.0]);
        let bc = Counters {
            readings: 2,
            ..Counters::default()
        };
        let old = state(&[1.0]);
        let new = state(&[4.0]);
        let c1 = Counters {
            readings: 1,
            ..Counters::default()
        };
        let cut = Cut([(0, 10)].into());
        let spans = [
            (
                EpochSpan {
                    partition: 0,
                    start: 0,
                    end: 10,
                },
                &old,
                &c1,
            ),
            (
                EpochSpan {
                    partition: 0,
                    start: 10,
                    end: 20,
                },
                &new,
                &c1,
            ),
        ];
        let m = merge_window(Some((&batch, &bc)), spans, &cut)
            .unwrap()
            .unwrap();
        assert_eq!(m.state.value(Column::Sum), Some(7.0));
        assert_eq!((m.batch.readings, m.speed.readings), (2, 1));
        assert_eq!(m.source, Source::BatchSpeed);
    }

    #[test]
    fn a_straddling_epoch_is_refused() {
        let s = state(&[1.0]);
        let c = Counters::default();
        let cut = Cut([(0, 5)].into());
        let err = merge_window(
            None,
            [(
                EpochSpan {
                    partition: 0,
                    start: 0,
                    end: 10,
                },
                &s,
                &c,
            )],
            &cut,
        )
        .unwrap_err();
        assert!(err.to_string().contains("straddles"));
        assert_eq!(merge_window(None, [], &cut), Ok(None));
    }
}
