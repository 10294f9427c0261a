//! The anomaly detectors as the worker runs them: per (partition, device,
//! metric) detector states, and the seasonal baselines of the newest batch
//! run, reloaded when `baselines/CURRENT` moves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_core::Reading;
use braid_core::baseline::{Baselines, Profile, Season};
use braid_core::detect::{Alert, DetectorState, Detectors};
use braid_store::Layout;

/// How often `baselines/CURRENT` is looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// One metric's detector states of a device in a partition, and its
/// seasonal profile as of baselines generation `generation`.
#[derive(Debug)]
struct Slot {
    partition: i32,
    metric: String,
    states: Vec<DetectorState>,
    generation: u64,
    profile: Option<(Arc<Profile>, Season)>,
}

/// The detectors, their states and the baselines they judge against.
#[derive(Debug)]
pub struct Judge {
    detectors: Detectors,
    /// The loaded baselines (empty, run id "", before the first).
    baselines: Baselines,
    /// Bumped at each load, so slots look their profile up again.
    generation: u64,
    checked: Option<Instant>,
    /// The stamp of `baselines/CURRENT` when it was last read and acted on.
    stamp: Option<Option<braid_store::published::Stamp>>,
    /// By device id, then a short list of (partition, metric) slots: a
    /// reading is looked up by `&str` without allocating.
    states: HashMap<String, Vec<Slot>>,
}

impl Judge {
    /// A judge of `detectors`, without baselines until [`Judge::reload`].
    pub fn new(detectors: Detectors) -> Self {
        Self {
            detectors,
            baselines: Baselines::default(),
            generation: 0,
            checked: None,
            stamp: None,
            states: HashMap::new(),
        }
    }

    /// Whether any detector is configured.
    pub fn is_empty(&self) -> bool {
        self.detectors.defs.is_empty()
    }

    /// Uses `b` from now on (as if loaded from the store).
    pub fn set_baselines(&mut self, b: Baselines) {
        self.baselines = b;
        self.generation += 1;
    }

    /// Loads the current baselines if `CURRENT` names another run than the
    /// loaded one (looking at most every [`RELOAD_EVERY`]); a file that
    /// cannot be read keeps the loaded baselines, with a warning.
    pub fn reload(&mut self, layout: &Layout) {
        if !self.detectors.defs.iter().any(|d| d.seasonal.is_some())
            || self.checked.is_some_and(|t| t.elapsed() < RELOAD_EVERY)
        {
            return;
        }
        self.checked = Some(Instant::now());
        // Read only when it moved (an object store is not waited for).
        let Ok(stamp) = braid_store::baselines::current_stamp(layout) else {
            return;
        };
        if self.stamp.as_ref() == Some(&stamp) {
            return;
        }
        match braid_store::baselines::current_id(layout) {
            Ok(Some(id)) if self.baselines.run_id != id => {
                match braid_store::baselines::read(layout, &id) {
                    Ok(b) => {
                        tracing::info!(run = %id, metrics = b.metrics.len(), profiles = b.profiles(), "seasonal baselines loaded");
                        self.set_baselines(b);
                        self.stamp = Some(stamp);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "seasonal baselines not loaded; keeping the previous ones")
                    }
                }
            }
            Ok(_) => self.stamp = Some(stamp),
            Err(e) => tracing::warn!(error = %e, "cannot read baselines/CURRENT"),
        }
    }

    /// Judges one reading (not a duplicate) of `partition` with every
    /// detector of its metric, adding the alerts it raises to `out`.
    pub fn judge(&mut self, partition: i32, r: &Reading, out: &mut Vec<Alert>) {
        let mut defs = self.detectors.of(&r.metric).peekable();
        if defs.peek().is_none() {
            return;
        }
        let slots = match self.states.get_mut(r.device_id.as_str()) {
            Some(s) => s,
            None => self.states.entry(r.device_id.clone()).or_default(),
        };
        let i = match slots
            .iter()
            .position(|s| s.partition == partition && s.metric == r.metric)
        {
            Some(i) => i,
            None => {
                slots.push(Slot {
                    partition,
                    metric: r.metric.clone(),
                    states: Vec::new(),
                    generation: u64::MAX,
                    profile: None,
                });
                slots.len() - 1
            }
        };
        let slot = &mut slots[i];
        if slot.generation != self.generation {
            slot.generation = self.generation;
            slot.profile = self
                .baselines
                .metrics
                .get(&r.metric)
                .and_then(|m| m.devices.get(&r.device_id).map(|p| (p.clone(), m.season)));
        }
        let expected = slot
            .profile
            .as_ref()
            .and_then(|(p, season)| p.around(season, r.ts));
        for (k, d) in defs.enumerate() {
            if slot.states.len() <= k {
                slot.states.push(DetectorState::default());
            }
            let seasonal = expected.as_ref().filter(|_| d.seasonal.is_some());
            let (_, raised) = d.alerts(&mut slot.states[k], r, seasonal);
            out.extend(raised);
        }
    }

    /// Forgets the states of a revoked partition.
    pub fn revoke(&mut self, partition: i32) {
        self.states.retain(|_, slots| {
            slots.retain(|s| s.partition != partition);
            !slots.is_empty()
        });
    }
}
