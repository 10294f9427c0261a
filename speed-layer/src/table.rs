//! A partition's speed states: what the worker folds records into, seals
//! into checkpoints, and publishes.
//!
//! States are kept per series, one (view, group, epoch), each holding its
//! windows' cells sorted by window start. A record finds its series by a
//! hash of the borrowed group values (no key is built or cloned for a
//! state that exists) and its cell at or near the end of the series, where
//! readings mostly land. A cell costs its window start and its entry: no
//! key of its own, no hash slot, no copy in a change set.

use std::hash::{BuildHasher, Hash, Hasher};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use braid_core::agg::AggState;
use braid_core::fold::{Group, GroupKey, PartitionFolder};
use braid_core::hash::device_hash;
use braid_core::merge::Counters;
use braid_core::{Record, ViewDef};

use crate::checkpoint::{Entry, StateKey};

/// The key of one held state, borrowed from the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRef<'a> {
    /// Index of the view in the view set.
    pub view: usize,
    /// The window's start.
    pub window_start: i64,
    /// The group.
    pub group: &'a GroupKey,
    /// The start of the epoch the state belongs to.
    pub epoch_start: i64,
}

impl StateRef<'_> {
    /// The owned key.
    pub fn to_key(&self) -> StateKey {
        (
            self.view,
            self.window_start,
            self.group.clone(),
            self.epoch_start,
        )
    }
}

#[derive(Clone, Debug)]
struct Cell {
    start: i64,
    /// Changed since it was last published (and listed in `dirty`).
    dirty: bool,
    entry: Entry,
}

/// The windows of one (view, group, epoch), by start.
#[derive(Clone, Debug)]
struct Series {
    view: usize,
    epoch: i64,
    group: GroupKey,
    cells: Vec<Cell>,
}

impl Series {
    /// The index of the cell of `start`, or where it goes.
    fn find(&self, start: i64) -> Result<usize, usize> {
        match self.cells.last() {
            Some(c) if c.start == start => Ok(self.cells.len() - 1),
            Some(c) if c.start < start => Err(self.cells.len()),
            _ => self.cells.binary_search_by_key(&start, |c| c.start),
        }
    }

    fn key(&self, c: &Cell) -> StateRef<'_> {
        StateRef {
            view: self.view,
            window_start: c.start,
            group: &self.group,
            epoch_start: self.epoch,
        }
    }
}

/// States per (view, window, group, epoch) of one partition, and which of
/// them changed since they were last published (hashed with foldhash,
/// seeded per process: group values come from devices).
#[derive(Clone, Debug, Default)]
pub struct PartitionTable {
    hasher: RandomState,
    /// Series indices, by the hash of (view, epoch, group values).
    index: HashTable<u32>,
    series: Vec<Series>,
    /// Cells changed since the last publish: (series, window start).
    dirty: Vec<(u32, i64)>,
    cells: usize,
}

fn series_hash<'a>(
    hasher: &RandomState,
    view: usize,
    epoch: i64,
    group: impl Iterator<Item = Option<&'a str>>,
) -> u64 {
    let mut h = hasher.build_hasher();
    view.hash(&mut h);
    epoch.hash(&mut h);
    for v in group {
        v.hash(&mut h);
    }
    h.finish()
}

impl PartitionTable {
    /// A table holding `states` (a checkpoint's), none of them changed.
    pub fn from_states(states: impl IntoIterator<Item = (StateKey, Entry)>) -> Self {
        let mut t = Self::default();
        for ((view, start, group, epoch), entry) in states {
            let s = t.series_of_key(view, epoch, &group);
            let series = &mut t.series[s as usize];
            let at = match series.find(start) {
                Ok(i) => {
                    series.cells[i].entry = entry;
                    continue;
                }
                Err(at) => at,
            };
            series.cells.insert(
                at,
                Cell {
                    start,
                    dirty: false,
                    entry,
                },
            );
            t.cells += 1;
        }
        t
    }

    /// States held.
    pub fn len(&self) -> usize {
        self.cells
    }

    /// Whether no state is held.
    pub fn is_empty(&self) -> bool {
        self.cells == 0
    }

    /// Every held state with its key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (StateRef<'_>, &Entry)> {
        self.series
            .iter()
            .flat_map(|s| s.cells.iter().map(move |c| (s.key(c), &c.entry)))
    }

    /// The series of (view, epoch, group), made if new (the group given by
    /// owned values).
    fn series_of_key(&mut self, view: usize, epoch: i64, group: &GroupKey) -> u32 {
        let (hash, found) = self.find_series(view, epoch, group);
        match found {
            Some(i) => i,
            None => self.add_series(hash, view, epoch, group.clone()),
        }
    }

    /// The hash of (view, epoch, group) and its series, if there is one.
    fn find_series(&self, view: usize, epoch: i64, group: &GroupKey) -> (u64, Option<u32>) {
        let hash = series_hash(
            &self.hasher,
            view,
            epoch,
            group.iter().map(Option::as_deref),
        );
        let found = self.index.find(hash, |&i| {
            let s = &self.series[i as usize];
            s.view == view && s.epoch == epoch && s.group == *group
        });
        (hash, found.copied())
    }

    fn add_series(&mut self, hash: u64, view: usize, epoch: i64, group: GroupKey) -> u32 {
        let i = u32::try_from(self.series.len()).expect("fewer than 2^32 series");
        self.series.push(Series {
            view,
            epoch,
            group,
            cells: Vec::new(),
        });
        let Self {
            index,
            series,
            hasher,
            ..
        } = self;
        index.insert_unique(hash, i, |&j| {
            let s = &series[j as usize];
            series_hash(
                hasher,
                s.view,
                s.epoch,
                s.group.iter().map(Option::as_deref),
            )
        });
        i
    }

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
        folder.fold(views, rec, |e| {
            let s = self.series_of(e.view, epoch_start, e.group);
            let series = &mut self.series[s as usize];
            let i = match series.find(e.window.start) {
                Ok(i) => i,
                Err(at) => {
                    series.cells.insert(
                        at,
                        Cell {
                            start: e.window.start,
                            dirty: false,
                            entry: Entry {
                                state: AggState::new(views[e.view].parts()),
                                counters: Counters::default(),
                                max_offset: offset,
                            },
                        },
                    );
                    self.cells += 1;
                    at
                }
            };
            let cell = &mut series.cells[i];
            cell.entry.counters.count(e.outcome);
            if e.outcome.applies() {
                cell.entry.state.fold(rec.reading.value, hash);
            }
            cell.entry.max_offset = offset;
            if !cell.dirty {
                cell.dirty = true;
                self.dirty.push((s, cell.start));
            }
        })
    }

    /// The series of a record's group, made if new.
    fn series_of(&mut self, view: usize, epoch: i64, group: Group<'_>) -> u32 {
        let hash = series_hash(&self.hasher, view, epoch, group.values());
        let series = &self.series;
        let found = self.index.find(hash, |&i| {
            let s = &series[i as usize];
            s.view == view && s.epoch == epoch && group.matches(&s.group)
        });
        match found {
            Some(&i) => i,
            None => self.add_series(hash, view, epoch, group.to_key()),
        }
    }

    /// Hands every state changed since the last call to `f`, once each,
    /// and marks them unchanged.
    pub fn take_changed(&mut self, mut f: impl FnMut(StateRef<'_>, &Entry)) {
        for (s, start) in std::mem::take(&mut self.dirty) {
            let series = &mut self.series[s as usize];
            let Ok(i) = series.find(start) else {
                continue;
            };
            series.cells[i].dirty = false;
            let series = &self.series[s as usize];
            let c = &series.cells[i];
            f(series.key(c), &c.entry);
        }
    }

    /// Marks the state of `key` as changed again (its publish failed).
    pub fn mark_changed(&mut self, key: &StateKey) {
        let (view, start, group, epoch) = key;
        let (_, Some(s)) = self.find_series(*view, *epoch, group) else {
            return;
        };
        let series = &mut self.series[s as usize];
        if let Ok(i) = series.find(*start)
            && !series.cells[i].dirty
        {
            series.cells[i].dirty = true;
            self.dirty.push((s, *start));
        }
    }

    /// Keeps the states for which `keep(key, changed)` holds, where
    /// `changed` says the state is still to be published; returns how many
    /// were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(StateRef<'_>, bool) -> bool) -> usize {
        let before = self.cells;
        let old = std::mem::take(&mut self.series);
        self.index.clear();
        self.dirty.clear();
        self.cells = 0;
        for s in old {
            let Series {
                view,
                epoch,
                group,
                mut cells,
            } = s;
            cells.retain(|c| {
                let key = StateRef {
                    view,
                    window_start: c.start,
                    group: &group,
                    epoch_start: epoch,
                };
                keep(key, c.dirty)
            });
            if cells.is_empty() {
                continue;
            }
            let hash = series_hash(
                &self.hasher,
                view,
                epoch,
                group.iter().map(Option::as_deref),
            );
            let i = self.add_series(hash, view, epoch, group);
            for c in &cells {
                if c.dirty {
                    self.dirty.push((i, c.start));
                }
            }
            self.cells += cells.len();
            self.series[i as usize].cells = cells;
        }
        before - self.cells
    }
}
