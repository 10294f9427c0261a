//! A partition's speed states: what the worker folds records into, seals
//! into checkpoints, and publishes.

use foldhash::{HashMap, HashSet};

use braid_core::agg::AggState;
use braid_core::fold::PartitionFolder;
use braid_core::hash::device_hash;
use braid_core::merge::Counters;
use braid_core::{Record, ViewDef};

use crate::checkpoint::{Entry, StateKey};

/// States per (view, window, group, epoch) of one partition, and which of
/// them changed since they were last published (hashed with foldhash,
/// seeded per process: group values come from devices).
#[derive(Clone, Debug, Default)]
pub struct PartitionTable {
    /// Every held state.
    pub states: HashMap<StateKey, Entry>,
    /// Keys changed since the last publish.
    pub dirty: HashSet<StateKey>,
}

impl PartitionTable {
    /// Folds one valid record of the partition, in offset order, into the
    /// epoch that starts at `epoch_start`; returns whether it was a
    /// duplicate.
    pub fn fold(
        &mut self,
        folder: &mut PartitionFolder,
        views: &[ViewDef],
        rec: &Record,
        epoch_start: i64,
    ) -> bool {
        let hash = device_hash(&rec.reading.device_id);
        let offset = rec.position.offset;
        let Self { states, dirty } = self;
        folder.fold(views, rec, |e| {
            let key = (e.view, e.window.start, e.group.clone(), epoch_start);
            let entry = match states.get_mut(&key) {
                Some(entry) => entry,
                None => states.entry(key.clone()).or_insert_with(|| Entry {
                    state: AggState::new(views[e.view].parts()),
                    counters: Counters::default(),
                    max_offset: offset,
                }),
            };
            entry.counters.count(e.outcome);
            if e.outcome.applies() {
                entry.state.fold(rec.reading.value, hash);
            }
            entry.max_offset = offset;
            if !dirty.contains(&key) {
                dirty.insert(key);
            }
        })
    }
}
