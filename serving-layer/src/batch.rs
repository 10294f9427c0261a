//! The batch side: each view's published run, read from
//! `views/<view>/CURRENT` and cached until `CURRENT` names another run.
//!
//! A query looks at `CURRENT` (one small file) and loads a run only when it
//! changed, so a new batch run is answered from as soon as it is published.
//! When every view has a run, the speed states of epochs below the smallest
//! cut are dropped from the speed table: the batch side counts them now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use braid_core::merge::Cut;
use braid_core::speedlog::SpeedTable;
use braid_core::{ViewDef, ViewSet};
use braid_store::views::{BatchView, current_run, definition_hash, read_run};
use braid_store::{Layout, StoreError};

use crate::compare::Retired;

/// The published batch views of one data directory.
#[derive(Debug)]
pub struct BatchViews {
    layout: Layout,
    cache: RwLock<HashMap<String, Arc<BatchView>>>,
    stale: RwLock<HashMap<String, String>>,
    retired: Mutex<Retired>,
}

impl BatchViews {
    /// Batch views under `layout`.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            cache: RwLock::new(HashMap::new()),
            stale: RwLock::new(HashMap::new()),
            retired: Mutex::new(Retired::default()),
        }
    }

    /// The storage layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Loads the published run of `view` if `CURRENT` moved, and then drops
    /// the speed states that every view's run covers.
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
        let bv = Arc::new(read_run(&self.layout, view, &run)?);
        let want = definition_hash(view, views);
        if bv.manifest.definition_hash != want {
            tracing::warn!(view = %view.name, run = %run, "the published batch run was made from another definition of the view: not used until the next batch run");
            if let Ok(mut stale) = self.stale.write() {
                stale.insert(view.name.clone(), run);
            }
            return Ok(());
        }
        tracing::info!(view = %view.name, run = %run, windows = bv.windows.len(), "batch run loaded");
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
    pub fn cached(&self, view: &str) -> Option<Arc<BatchView>> {
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
