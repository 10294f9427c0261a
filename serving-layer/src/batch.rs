//! The batch side: each view's published run, read from
//! `views/<view>/CURRENT` and cached until `CURRENT` names another run.
//!
//! A query looks at `CURRENT` (one small file) and loads a run only when it
//! changed, so a new batch run is answered from as soon as it is published.
//! When every view has a run, the speed states of epochs below the smallest
//! cut are dropped from the speed table: the batch side counts them now.
//!
//! A loaded run is kept as a [`ServedRun`]: its windows in key order in one
//! vector, found by binary search, with the positions of each device's
//! windows beside them, so one device's range costs a search, not a seek
//! per window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use braid_core::agg::{AggState, Column};
use braid_core::fold::GroupKey;
use braid_core::merge::{Counters, Cut};
use braid_core::speedlog::SpeedTable;
use braid_core::{ViewDef, ViewSet};
use braid_store::views::{
    BatchView, CurrentStamp, Manifest, current_run, current_stamp, definition_hash, read_run,
};
use braid_store::{Layout, StoreError};

use crate::compare::Retired;

/// A batch run's window: its key, its state and counters, and its value
/// per column of the view (see [`ServedRun::new`]).
pub type BatchEntry<'a> = (&'a (i64, GroupKey), &'a (AggState, Counters), &'a [f64]);

/// A published run as the serving layer keeps it.
#[derive(Debug)]
pub struct ServedRun {
    /// The manifest.
    pub manifest: Manifest,
    /// State and counters per (window start, group), in key order.
    windows: Vec<((i64, GroupKey), (AggState, Counters))>,
    /// Per first group value (the device, in views grouped by device
    /// first), the positions in `windows` of its windows, ascending.
    by_lead: HashMap<String, Vec<usize>>,
    /// Each window's value per column, `columns` to a window, in the order
    /// of `windows`: a window the batch run alone answers for is written
    /// from these, with no state rounded per query.
    values: Vec<f64>,
    columns: usize,
}

impl ServedRun {
    /// Indexes `run`, whose view has `columns` (NaN where a window has no
    /// value).
    pub fn new(run: BatchView, columns: &[Column]) -> Self {
        let windows: Vec<_> = run.windows.into_iter().collect();
        let values = windows
            .iter()
            .flat_map(|(_, (state, _))| columns.iter().map(|&c| state.value(c).unwrap_or(f64::NAN)))
            .collect();
        let mut by_lead: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, ((_, group), _)) in windows.iter().enumerate() {
            if let Some(Some(lead)) = group.first() {
                match by_lead.get_mut(lead) {
                    Some(at) => at.push(i),
                    None => {
                        by_lead.insert(lead.clone(), vec![i]);
                    }
                }
            }
        }
        Self {
            manifest: run.manifest,
            windows,
            by_lead,
            values,
            columns: columns.len(),
        }
    }

    fn entry(&self, i: usize) -> BatchEntry<'_> {
        let (k, v) = &self.windows[i];
        (k, v, &self.values[i * self.columns..(i + 1) * self.columns])
    }

    /// How many windows the run holds.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether the run holds no window.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The windows starting in `[from, to)`, in key order.
    pub fn range(
        &self,
        from: Option<i64>,
        to: Option<i64>,
    ) -> impl Iterator<Item = BatchEntry<'_>> {
        let lo = from.map_or(0, |f| self.windows.partition_point(|((s, _), _)| *s < f));
        let hi = to.map_or(self.windows.len(), |t| {
            self.windows.partition_point(|((s, _), _)| *s < t)
        });
        (lo..hi.max(lo)).map(|i| self.entry(i))
    }

    /// The windows starting in `[from, to)` whose group's first value is
    /// `lead`, in key order.
    pub fn led_by(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        lead: &str,
    ) -> impl Iterator<Item = BatchEntry<'_>> {
        let at = self.by_lead.get(lead).map_or(&[][..], Vec::as_slice);
        let start = |i: &usize| self.windows[*i].0.0;
        let lo = from.map_or(0, |f| at.partition_point(|i| start(i) < f));
        let hi = to.map_or(at.len(), |t| at.partition_point(|i| start(i) < t));
        at[lo..hi.max(lo)].iter().map(|&i| self.entry(i))
    }
}

/// The published batch views of one data directory.
#[derive(Debug)]
pub struct BatchViews {
    layout: Layout,
    cache: RwLock<HashMap<String, Arc<ServedRun>>>,
    /// Per view, the stamp of `CURRENT` when it was last read and acted on.
    seen: RwLock<HashMap<String, Option<CurrentStamp>>>,
    stale: RwLock<HashMap<String, String>>,
    retired: Mutex<Retired>,
    last_unreachable: Mutex<Option<std::time::Instant>>,
}

impl BatchViews {
    /// Batch views under `layout`.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            cache: RwLock::new(HashMap::new()),
            seen: RwLock::new(HashMap::new()),
            stale: RwLock::new(HashMap::new()),
            retired: Mutex::new(Retired::default()),
            last_unreachable: Mutex::new(None),
        }
    }

    /// The storage layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Loads the published run of `view` if `CURRENT` moved, and then drops
    /// the speed states that every view's run covers. While the stamp of
    /// `CURRENT` is the one last acted on, nothing is read (a stat, not a
    /// read, per query).
    ///
    /// Call it before taking the speed table's read lock for a query, and
    /// take the run with [`BatchViews::cached`] under that lock: a drop
    /// needs the write lock, and happens only after the cache holds the run
    /// that covers what it drops, so a query never pairs an older run with
    /// a table missing the epochs that run did not cover.
    pub fn refresh(
        &self,
        views: &ViewSet,
        view: &ViewDef,
        table: &RwLock<SpeedTable>,
    ) -> Result<(), StoreError> {
        // Taken before `CURRENT` is read: if it moves in between, the next
        // query sees another stamp and reads again.
        let stamp = match current_stamp(&self.layout, &view.name) {
            Ok(stamp) => stamp,
            Err(e) => return self.unreachable(view, e),
        };
        if self
            .seen
            .read()
            .is_ok_and(|seen| seen.get(&view.name) == Some(&stamp))
        {
            return Ok(());
        }
        if let Err(e) = self.load(views, view, table) {
            return self.unreachable(view, e);
        }
        if let Ok(mut seen) = self.seen.write() {
            seen.insert(view.name.clone(), stamp);
        }
        Ok(())
    }

    /// An object store holding the published runs that does not answer:
    /// the run loaded last goes on answering (answers name it, and its
    /// time), with a warning at most every 10 s. Anything else is an
    /// error.
    fn unreachable(&self, view: &ViewDef, e: StoreError) -> Result<(), StoreError> {
        if !matches!(e, StoreError::Blob(_)) {
            return Err(e);
        }
        if let Ok(mut last) = self.last_unreachable.lock()
            && last.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(10))
        {
            *last = Some(std::time::Instant::now());
            tracing::warn!(view = %view.name, error = %e, "the store of published batch runs does not answer: the run loaded last goes on answering");
        }
        Ok(())
    }

    /// [`BatchViews::refresh`] after its stamp check.
    fn load(
        &self,
        views: &ViewSet,
        view: &ViewDef,
        table: &RwLock<SpeedTable>,
    ) -> Result<(), StoreError> {
        let Some(run) = current_run(&self.layout, &view.name)? else {
            if let Ok(mut cache) = self.cache.write() {
                cache.remove(&view.name);
            }
            return Ok(());
        };
        if let Ok(cache) = self.cache.read()
            && let Some(bv) = cache.get(&view.name)
            && bv.manifest.run_id == run
        {
            return Ok(());
        }
        let bv = read_run(&self.layout, view, &run)?;
        let want = definition_hash(view, views);
        if bv.manifest.definition_hash != want {
            tracing::warn!(view = %view.name, run = %run, "the published batch run was made from another definition of the view: not used until the next batch run");
            if let Ok(mut stale) = self.stale.write() {
                stale.insert(view.name.clone(), run);
            }
            return Ok(());
        }
        // Indexed only once it is known to be used.
        let bv = Arc::new(ServedRun::new(bv, &view.columns()));
        tracing::info!(view = %view.name, run = %run, windows = bv.len(), "batch run loaded");
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(view.name.clone(), bv);
        }
        if let Ok(mut stale) = self.stale.write() {
            stale.remove(&view.name);
        }
        self.drop_covered(views, table);
        Ok(())
    }

    /// The run of `view` that was made from another view definition, if
    /// that is why no run is used.
    pub fn stale(&self, view: &str) -> Option<String> {
        self.stale.read().ok()?.get(view).cloned()
    }

    /// The cached run of `view`, without looking at `CURRENT`.
    pub fn cached(&self, view: &str) -> Option<Arc<ServedRun>> {
        self.cache.read().ok()?.get(view).cloned()
    }

    /// The smallest cut over `views`, when every one has a run.
    pub fn common_cut(&self, views: &ViewSet) -> Option<Cut> {
        let cache = self.cache.read().ok()?;
        let mut out: Option<Cut> = None;
        for v in &views.views {
            let cut = &cache.get(&v.name)?.manifest.cut;
            out = Some(match out {
                None => cut.clone(),
                Some(mut acc) => {
                    let parts: Vec<i32> = acc.0.keys().chain(cut.0.keys()).copied().collect();
                    for p in parts {
                        acc.0.insert(p, acc.offset(p).min(cut.offset(p)));
                    }
                    acc
                }
            });
        }
        out
    }

    /// The speed states dropped from the table, kept per epoch for the
    /// comparison.
    pub fn retired(&self) -> std::sync::MutexGuard<'_, Retired> {
        self.retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops speed states that every view's batch run now covers; the
    /// comparison keeps them.
    fn drop_covered(&self, views: &ViewSet, table: &RwLock<SpeedTable>) {
        if let Some(cut) = self.common_cut(views)
            && let Ok(mut t) = table.write()
        {
            let dropped = t.drop_below(&cut);
            self.retired().absorb(dropped);
        }
    }
}
