//! The speed layer against a from-scratch model, with crashes, restarts,
//! corrupt checkpoints and rebalances between two workers.
//!
//! Two [`Engine`]s (the worker's decisions, without Kafka) share a data
//! directory as two `braid speed` processes on one machine do. A simulated
//! consumer group hands the three partitions of a random log (out of
//! order, outdated, historical, duplicates) to one or the other, starting
//! each assignment at the group's committed offset as Kafka does. Random
//! steps deliver messages, publish (sometimes only part of what changed, as
//! when the broker stops acknowledging), seal epochs, kill a worker (also
//! between writing a checkpoint and announcing it), damage a partition's
//! newest checkpoint, and rebalance. Every message published goes, in
//! order, into one reader's [`SpeedTable`], as `braid.speed` would.
//!
//! Checked every time a partition's published picture is whole (its
//! holder's last publish was complete, or it was just restored): its
//! states, merged over epochs, equal the model of that partition's records
//! below the published progress (or the restore's boundary). At the end,
//! with everything read and published, the whole table equals the model of
//! the whole log.

use std::collections::BTreeMap;
use std::path::Path;

use braid_core::speedlog::{SpeedMessage, SpeedTable};
use braid_core::{Record, ViewSet};
use braid_speed::checkpoint;
use braid_speed::engine::{Engine, Offer};
use braid_store::{Blobs, Layout};
use braid_testkit::logs::assert_speed_matches_model_where;
use braid_testkit::random::{VIEWS, event, log};
use proptest::prelude::*;

const PARTITIONS: i32 = 3;

#[derive(Clone, Debug)]
enum Op {
    /// The worker's consumer hands it up to this many messages of its
    /// partitions, round robin.
    Deliver { worker: usize, messages: usize },
    /// Publishes what changed; `None`: all of it is acknowledged, `Some`:
    /// only a prefix, the rest is marked changed again.
    Publish {
        worker: usize,
        acked: Option<prop::sample::Index>,
    },
    /// The periodic checkpoint: publish all, then seal every advanced
    /// partition.
    Seal { worker: usize },
    /// `kill -9`, optionally just after writing a checkpoint and before
    /// announcing it; the worker restarts at once and the group hands the
    /// partitions out again (bit p of `assign`: partition p's worker).
    Crash {
        worker: usize,
        mid_seal: bool,
        assign: u8,
    },
    /// A rebalance: every partition revoked, then handed out by `assign`.
    Rebalance { assign: u8 },
    /// The newest checkpoint of a partition is damaged on disk.
    Corrupt { partition: i32 },
}

fn op() -> impl Strategy<Value = Op> {
    let worker = 0usize..2;
    prop_oneof![
        6 => (worker.clone(), 1usize..8).prop_map(|(worker, messages)| Op::Deliver { worker, messages }),
        3 => (worker.clone(), prop::option::weighted(0.3, any::<prop::sample::Index>()))
            .prop_map(|(worker, acked)| Op::Publish { worker, acked }),
        2 => worker.clone().prop_map(|worker| Op::Seal { worker }),
        1 => (worker, any::<bool>(), any::<u8>())
            .prop_map(|(worker, mid_seal, assign)| Op::Crash { worker, mid_seal, assign }),
        1 => any::<u8>().prop_map(|assign| Op::Rebalance { assign }),
        1 => (0..PARTITIONS).prop_map(|partition| Op::Corrupt { partition }),
    ]
}

/// The two workers, the consumer group, and the reader of `braid.speed`.
struct Sim<'a> {
    set: ViewSet,
    dir: &'a Path,
    log: Vec<Record>,
    engines: [Engine; 2],
    /// Partition to worker.
    owner: BTreeMap<i32, usize>,
    /// The owner's consumer position per partition.
    position: BTreeMap<i32, i64>,
    committed: BTreeMap<i32, i64>,
    table: SpeedTable,
    /// Per partition, the boundary of its last restore.
    boundary: BTreeMap<i32, i64>,
    /// Per partition, whether the table shows a whole picture of it.
    whole: BTreeMap<i32, bool>,
    /// Runs the engines' checkpoint reads and writes (a local store).
    rt: tokio::runtime::Runtime,
}

fn engine(set: &ViewSet, dir: &Path) -> Engine {
    Engine::new(set.clone(), Layout::new(dir), Blobs::local(dir))
}

impl<'a> Sim<'a> {
    fn new(set: ViewSet, dir: &'a Path, log: Vec<Record>) -> Self {
        let engines = [engine(&set, dir), engine(&set, dir)];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut sim = Self {
            rt,
            set,
            dir,
            log,
            engines,
            owner: BTreeMap::new(),
            position: BTreeMap::new(),
            committed: BTreeMap::new(),
            table: SpeedTable::default(),
            boundary: BTreeMap::new(),
            whole: BTreeMap::new(),
        };
        sim.assign(0);
        sim
    }

    fn end(&self, p: i32) -> i64 {
        self.log
            .iter()
            .filter(|r| r.position.partition == p)
            .count() as i64
    }

    fn record(&self, p: i32, offset: i64) -> &Record {
        self.log
            .iter()
            .find(|r| r.position.partition == p && r.position.offset == offset)
            .expect("offset in the log")
    }

    fn send(&mut self, msg: SpeedMessage) {
        if let SpeedMessage::Restored {
            partition,
            boundary,
            ..
        } = &msg
        {
            self.boundary.insert(*partition, *boundary);
            self.whole.insert(*partition, true);
        }
        self.table.apply(msg);
    }

    /// Hands every partition out by `assign`, each consumer starting at
    /// the committed offset (or the log's start).
    fn assign(&mut self, assign: u8) {
        for p in 0..PARTITIONS {
            let w = usize::from(assign >> p & 1);
            self.owner.insert(p, w);
            self.position
                .insert(p, self.committed.get(&p).copied().unwrap_or(0));
        }
    }

    fn revoke_all(&mut self) {
        for (&p, &w) in &self.owner {
            self.engines[w].revoke(p);
        }
        self.owner.clear();
    }

    fn deliver(&mut self, w: usize, messages: usize) {
        for k in 0..messages {
            let ready: Vec<i32> = self
                .owner
                .iter()
                .filter(|&(&p, &o)| o == w && self.position[&p] < self.end(p))
                .map(|(&p, _)| p)
                .collect();
            if ready.is_empty() {
                return;
            }
            let p = ready[k % ready.len()];
            self.deliver_one(w, p);
        }
    }

    fn deliver_one(&mut self, w: usize, p: i32) {
        let offset = self.position[&p];
        if !self.engines[w].holds(p) {
            let restored = self
                .rt
                .block_on(self.engines[w].restore(p, |_| {}))
                .expect("restore from the checkpoint");
            self.send(restored);
        }
        match self.engines[w].offer(p, offset) {
            Offer::Skip => {}
            Offer::Seek(to) => {
                self.position.insert(p, to);
                return;
            }
            Offer::Take { seal_first } => {
                if seal_first {
                    self.publish(w, None);
                    self.seal(w, p, false);
                }
                let rec = self.record(p, offset).clone();
                self.engines[w].fold(p, offset, std::slice::from_ref(&rec), |_| {});
            }
        }
        self.position.insert(p, offset + 1);
    }

    fn publish(&mut self, w: usize, acked: Option<prop::sample::Index>) {
        let out = self.engines[w].take_changes();
        let n = acked.map_or(out.len(), |ix| ix.index(out.len() + 1));
        for (i, o) in out.iter().enumerate() {
            if i < n {
                self.send(o.msg.clone());
            } else {
                self.whole.insert(o.partition, false);
                self.engines[w].unsent(o);
            }
        }
        if n == out.len() {
            for p in self.engines[w].held() {
                self.whole.insert(p, true);
            }
            self.check_whole(w);
        }
    }

    /// Seals `p` of worker `w`: the checkpoint written, then (unless the
    /// worker dies first) the `Sealed` message and the commit.
    fn seal(&mut self, w: usize, p: i32, die_before_announcing: bool) {
        let Some(job) = self.engines[w].seal(p) else {
            return;
        };
        let store = Blobs::local(self.dir);
        self.rt
            .block_on(job.write(&store))
            .expect("checkpoint written");
        if die_before_announcing {
            return;
        }
        let next = job.next_offset;
        self.send(job.msg);
        self.committed.insert(p, next);
    }

    fn seal_all(&mut self, w: usize) {
        self.publish(w, None);
        for p in self.engines[w].advanced() {
            self.seal(w, p, false);
        }
    }

    fn crash(&mut self, w: usize, mid_seal: bool, assign: u8) {
        if mid_seal && let Some(&p) = self.engines[w].advanced().first() {
            self.publish(w, None);
            self.seal(w, p, true);
        }
        self.engines[w] = engine(&self.set, self.dir);
        // The survivor's partitions are revoked too: the group rebalances.
        self.revoke_all();
        self.assign(assign);
    }

    fn corrupt(&self, p: i32) {
        let d = self.dir.join(checkpoint::dir(p));
        let Ok(entries) = std::fs::read_dir(&d) else {
            return;
        };
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|f| f.extension().is_some_and(|x| x == "ckpt"))
            .collect();
        files.sort();
        if let Some(newest) = files.last() {
            let mut bytes = std::fs::read(newest).expect("read checkpoint");
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(newest, bytes).expect("damage checkpoint");
        }
    }

    /// The records of `p` the table should show: below its published
    /// progress, or below its last restore's boundary before any.
    fn shown(&self, p: i32) -> i64 {
        self.table
            .partitions()
            .get(&p)
            .and_then(|ps| ps.progress)
            .map_or_else(
                || self.boundary.get(&p).copied().unwrap_or(0),
                |(next, _)| next,
            )
    }

    fn check_whole(&self, w: usize) {
        for p in self.engines[w].held() {
            if self.whole.get(&p) == Some(&true) {
                self.check(p);
            }
        }
    }

    fn check(&self, p: i32) {
        let upto = self.shown(p);
        let prefix: Vec<Record> = self
            .log
            .iter()
            .filter(|r| r.position.partition == p && r.position.offset < upto)
            .cloned()
            .collect();
        assert_speed_matches_model_where(&self.table, &self.set, &prefix, |k| k.partition == p);
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Deliver { worker, messages } => self.deliver(worker, messages),
            Op::Publish { worker, acked } => self.publish(worker, acked),
            Op::Seal { worker } => self.seal_all(worker),
            Op::Crash {
                worker,
                mid_seal,
                assign,
            } => self.crash(worker, mid_seal, assign),
            Op::Rebalance { assign } => {
                self.revoke_all();
                self.assign(assign);
            }
            Op::Corrupt { partition } => self.corrupt(partition),
        }
    }

    /// Reads everything left and publishes it.
    fn finish(&mut self) {
        for w in 0..2 {
            self.deliver(w, usize::MAX);
            self.publish(w, None);
        }
        assert_speed_matches_model_where(&self.table, &self.set, &self.log, |_| true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn two_workers_with_crashes_and_rebalances_publish_the_model(
        events in prop::collection::vec(event(), 0..60),
        ops in prop::collection::vec(op(), 0..40),
    ) {
        let set = ViewSet::parse(VIEWS).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut sim = Sim::new(set, dir.path(), log(&events));
        for op in &ops {
            sim.step(op);
        }
        sim.finish();
    }
}
