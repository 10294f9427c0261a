//! The speed layer's decisions without Kafka: per assigned partition, what
//! to do with the next message, the fold, what to publish, and sealing the
//! open epoch into a checkpoint.
//!
//! The worker moves messages between an [`Engine`] and Kafka (and handles
//! outages, dead letters and alerts); the model test drives an engine
//! directly, with crashes and rebalances between two of them, and checks
//! what they publish against the reference model. Every rule of the
//! speed layer's exactness lives here:
//!
//! - a partition is restored from its newest valid checkpoint (or folded
//!   from the start of the log without one, whatever offset the group
//!   committed) when its first message after
//!   an assignment arrives, under a fresh restore id, announced by a
//!   `Restored` message whose boundary is the checkpoint's offset;
//! - messages below the restored position are skipped, a consumer ahead
//!   of it is sent back ([`Offer::Seek`]);
//! - an epoch is sealed at every checkpoint, and also where a published
//!   batch run or an earlier restore sealed (so no epoch straddles a
//!   boundary a batch cut may use);
//! - a revoked partition is dropped without writing anything.

use std::collections::{BTreeMap, VecDeque};

use braid_core::fold::PartitionFolder;
use braid_core::merge::{Cut, EpochSpan};
use braid_core::speedlog::{SpeedKey, SpeedMessage};
use braid_core::{Reading, Record, ViewSet};
use braid_kafka::{Resume, Step};
use braid_store::layout::{read_sealed, write_sealed};
use braid_store::views::published_cuts;
use braid_store::{Blobs, Layout};

use crate::checkpoint::{Checkpoint, CheckpointError, StateKey};
use crate::table::PartitionTable;

/// One assigned partition.
struct Partition {
    restore_id: u64,
    folder: PartitionFolder,
    /// Where folding resumes.
    resume: Resume,
    epoch_start: i64,
    sealed: Vec<(i64, i64)>,
    boundaries: Vec<i64>,
    forced: VecDeque<i64>,
    table: PartitionTable,
    progressed: bool,
}

/// What to do with a message of an assigned partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Already folded: skip it.
    Skip,
    /// The consumer is ahead of the restored position: seek it back here.
    Seek(i64),
    /// Fold it; when `seal_first`, seal the open epoch before folding (the
    /// message's offset is a boundary an epoch must not straddle).
    Take {
        /// Seal before folding.
        seal_first: bool,
    },
}

/// A message to publish to `braid.speed`, and what to mark again if Kafka
/// does not take it.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The `braid.readings` partition it describes.
    pub partition: i32,
    /// The message.
    pub msg: SpeedMessage,
    key: Option<StateKey>,
}

/// A sealed epoch whose checkpoint is still to be written: the worker
/// writes it ([`SealJob::write`], again until it succeeds: the epoch is
/// sealed in memory already), then sends `msg` and commits `next_offset`
/// as a hint.
#[derive(Debug)]
pub struct SealJob {
    partition: i32,
    checkpoint: Checkpoint,
    boundaries: Vec<i64>,
    /// The `Sealed` message, to send once the checkpoint is written.
    pub msg: SpeedMessage,
    /// The first offset of the next epoch.
    pub next_offset: i64,
}

impl SealJob {
    /// Writes the checkpoint and the partition's sealed boundaries to the
    /// checkpoint store; returns the checkpoint's key. Writing the same
    /// job again writes the same objects.
    pub async fn write(&self, store: &Blobs) -> Result<String, CheckpointError> {
        let key = self.checkpoint.write(store, self.partition).await?;
        write_sealed(store, self.partition, &self.boundaries).await?;
        Ok(key)
    }
}

fn restore_id() -> u64 {
    let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
    hi ^ lo
}

/// The state of every partition a worker holds.
pub struct Engine {
    views: ViewSet,
    layout: Layout,
    store: Blobs,
    partitions: BTreeMap<i32, Partition>,
}

impl Engine {
    /// An engine holding no partition, reading published batch runs from
    /// `layout` and keeping checkpoints in `store`.
    pub fn new(views: ViewSet, layout: Layout, store: Blobs) -> Self {
        Self {
            views,
            layout,
            store,
            partitions: BTreeMap::new(),
        }
    }

    /// The checkpoint store.
    pub fn store(&self) -> &Blobs {
        &self.store
    }

    /// The views.
    pub fn views(&self) -> &ViewSet {
        &self.views
    }

    /// Whether partition `p` is held (restored since its assignment).
    pub fn holds(&self, p: i32) -> bool {
        self.partitions.contains_key(&p)
    }

    /// The partitions held.
    pub fn held(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    /// States held, over all partitions.
    pub fn state_count(&self) -> usize {
        self.partitions.values().map(|p| p.table.len()).sum()
    }

    /// Drops partition `p` (revoked) without writing anything; says
    /// whether it was held.
    pub fn revoke(&mut self, p: i32) -> bool {
        self.partitions.remove(&p).is_some()
    }

    /// Restores partition `p` from its newest valid checkpoint (each
    /// refused one reported to `refused`), or from the start of the log;
    /// returns the `Restored` message to send before anything else of it.
    pub async fn restore(
        &mut self,
        p: i32,
        refused: impl FnMut(CheckpointError),
    ) -> Result<SpeedMessage, CheckpointError> {
        let ckpt = Checkpoint::load(&self.store, p, refused).await?;
        let boundaries = match read_sealed(&self.store, p).await? {
            Some(b) => b,
            None => {
                // From now on a batch run cuts this partition only at
                // epoch boundaries the speed layer sealed (see batch's
                // choose_cut).
                write_sealed(&self.store, p, &[]).await?;
                Vec::new()
            }
        };
        // Seal where published batch runs cut too (a run taken before this
        // partition had a sealed epoch cut at the archive's end), so no
        // epoch straddles a cut.
        let cuts = published_cuts(&self.layout, p)?;
        let from = ckpt.as_ref().map_or(i64::MIN, |c| c.next_offset);
        let mut forced: Vec<i64> = boundaries
            .iter()
            .copied()
            .chain(cuts)
            .filter(|&b| b > from)
            .collect();
        forced.sort_unstable();
        forced.dedup();
        let id = restore_id();
        let part = match ckpt {
            Some(c) => {
                tracing::info!(
                    partition = p,
                    next_offset = c.next_offset,
                    states = c.states.len(),
                    "partition restored from checkpoint"
                );
                Partition {
                    restore_id: id,
                    folder: c.folder,
                    resume: Resume::at(Some(c.next_offset)),
                    epoch_start: c.next_offset,
                    sealed: c.sealed,
                    boundaries: boundaries
                        .into_iter()
                        .filter(|&b| b <= c.next_offset)
                        .collect(),
                    forced: forced.into(),
                    table: PartitionTable::from_states(c.states),
                    progressed: true,
                }
            }
            None => {
                tracing::info!(
                    partition = p,
                    "partition has no checkpoint: folding from the start of the log"
                );
                // From the log's start, not from wherever the group's
                // committed offset points: with every checkpoint refused
                // that offset says nothing about what this restore holds.
                Partition {
                    restore_id: id,
                    folder: PartitionFolder::new(&self.views.settings),
                    resume: Resume::at(Some(0)),
                    epoch_start: 0,
                    sealed: Vec::new(),
                    boundaries: Vec::new(),
                    forced: forced.into(),
                    table: PartitionTable::default(),
                    progressed: true,
                }
            }
        };
        // Nothing below the boundary is in this restore.
        let boundary = part.resume.next().unwrap_or(0);
        self.partitions.insert(p, part);
        Ok(SpeedMessage::Restored {
            partition: p,
            restore_id: id,
            boundary,
        })
    }

    /// Decides on the message at `offset` of held partition `p` (`Skip`
    /// when `p` is not held).
    pub fn offer(&mut self, p: i32, offset: i64) -> Offer {
        let Some(part) = self.partitions.get_mut(&p) else {
            return Offer::Skip;
        };
        match part.resume.step(offset) {
            Step::Skip => Offer::Skip,
            Step::Seek(expected) => Offer::Seek(expected),
            Step::Take => {
                let mut seal_first = false;
                while let Some(&b) = part.forced.front() {
                    if b > offset {
                        break;
                    }
                    part.forced.pop_front();
                    seal_first |= b == offset && offset > part.epoch_start;
                }
                Offer::Take { seal_first }
            }
        }
    }

    /// Folds the valid records of the message at `offset` of `p` (after
    /// [`Offer::Take`]) into its open epoch, calling `fresh` with each
    /// reading the fold did not drop as a duplicate.
    pub fn fold(
        &mut self,
        p: i32,
        offset: i64,
        records: &[Record],
        mut fresh: impl FnMut(&Reading),
    ) {
        let Some(part) = self.partitions.get_mut(&p) else {
            return;
        };
        for rec in records {
            let duplicate =
                part.table
                    .fold(&mut part.folder, &self.views.views, rec, part.epoch_start);
            if !duplicate {
                fresh(&rec.reading);
            }
        }
        part.resume.done(offset);
        part.progressed = true;
    }

    /// Every changed state as an absolute value, then each partition's
    /// progress; what Kafka does not take goes back with
    /// [`Engine::unsent`].
    pub fn take_changes(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for (&p, part) in &mut self.partitions {
            let restore_id = part.restore_id;
            part.table.take_changed(|key, entry| {
                out.push(Outgoing {
                    partition: p,
                    msg: SpeedMessage::State {
                        key: SpeedKey {
                            view: self.views.views[key.view].name.clone(),
                            window_start: key.window_start,
                            group: key.group.clone(),
                            partition: p,
                            epoch_start: key.epoch_start,
                        },
                        restore_id,
                        max_offset: entry.max_offset,
                        state: entry.state.clone(),
                        counters: entry.counters,
                    },
                    key: Some(key.to_key()),
                });
            });
            if std::mem::take(&mut part.progressed)
                && let Some(next) = part.resume.next()
            {
                out.push(Outgoing {
                    partition: p,
                    msg: SpeedMessage::Progress {
                        restore_id: part.restore_id,
                        partition: p,
                        next_offset: next,
                        max_event_ts: part.folder.max_event_ts(),
                    },
                    key: None,
                });
            }
        }
        out
    }

    /// Marks what a message from [`Engine::take_changes`] carried as
    /// changed again (Kafka did not acknowledge it).
    pub fn unsent(&mut self, out: &Outgoing) {
        if let Some(part) = self.partitions.get_mut(&out.partition) {
            match &out.key {
                Some(k) => part.table.mark_changed(k),
                None => part.progressed = true,
            }
        }
    }

    /// Partitions whose open epoch holds something to seal.
    pub fn advanced(&self) -> Vec<i32> {
        self.partitions
            .iter()
            .filter(|(_, part)| part.resume.next().is_some_and(|n| n > part.epoch_start))
            .map(|(&p, _)| p)
            .collect()
    }

    /// Seals the open epoch of `p` (call after every change was
    /// published): the next epoch starts here, and the job holds the
    /// checkpoint to write. `None` when `p` is not held or has not read
    /// anything yet.
    pub fn seal(&mut self, p: i32) -> Option<SealJob> {
        let part = self.partitions.get_mut(&p)?;
        let next = part.resume.next()?;
        let span = EpochSpan {
            partition: p,
            start: part.epoch_start,
            end: next,
        };
        part.sealed.push((span.start, span.end));
        part.boundaries.push(next);
        part.epoch_start = next;
        Some(SealJob {
            partition: p,
            checkpoint: Checkpoint {
                next_offset: next,
                sealed: part.sealed.clone(),
                folder: part.folder.clone(),
                states: part
                    .table
                    .iter()
                    .map(|(k, v)| (k.to_key(), v.clone()))
                    .collect(),
            },
            boundaries: part.boundaries.clone(),
            msg: SpeedMessage::Sealed {
                restore_id: part.restore_id,
                span,
            },
            next_offset: next,
        })
    }

    /// Drops the states of epochs below `cuts[view]` (the cut of each
    /// view's published batch run made from this definition), except
    /// those not yet published; returns how many.
    pub fn drop_below(&mut self, cuts: &[Option<&Cut>]) -> usize {
        let mut dropped = 0;
        for (&p, part) in &mut self.partitions {
            dropped += part.table.retain(|k, changed| {
                let cut = cuts
                    .get(k.view)
                    .copied()
                    .flatten()
                    .map_or(0, |c| c.offset(p));
                k.epoch_start >= cut || changed
            });
        }
        dropped
    }
}
