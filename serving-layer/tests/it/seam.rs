//! The seam between batch and speed against the reference model: on random
//! logs (several partitions, out-of-order, outdated, historical and
//! duplicate readings) folded into speed states per random epoch and cut
//! into a batch run at a random sealed boundary, random `[from, to)` ranges
//! of every view answer exactly the model: each window once, none missed,
//! the same counters and values. The ranges are asked while a second run
//! with a later cut is published and loaded, from several threads at once,
//! the way the API asks (refresh, then the run taken under the table's
//! lock); each answer must equal the model at the cut of the run it used.

use std::collections::BTreeMap;
use std::sync::RwLock;

use braid_core::agg::AggState;
use braid_core::fold::{Layer, PartitionFolder, ViewTable, fold_into};
use braid_core::merge::{Counters, Cut, EpochSpan};
use braid_core::speedlog::{SpeedKey, SpeedMessage, SpeedTable};
use braid_core::{Record, ViewDef, ViewSet};
use braid_serving::batch::BatchViews;
use braid_serving::query::{Query, Row, rows};
use braid_store::Layout;
use braid_store::views::{Manifest, StagedRun};
use braid_testkit::model::{RefView, RefWindow, reference_view_in};
use braid_testkit::random::{VIEWS, event, log};
use proptest::prelude::*;
use serde_json::Value;

fn of_partition(records: &[Record], p: i32) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| r.position.partition == p)
        .collect()
}

/// The speed layer's published states: every record folded in offset
/// order, its effects kept per epoch (`bounds`: each partition's epoch
/// starts); every epoch but each partition's last sealed.
fn speed_table(set: &ViewSet, records: &[Record], bounds: &BTreeMap<i32, Vec<i64>>) -> SpeedTable {
    let mut table = SpeedTable::default();
    for (&p, starts) in bounds {
        table.apply(SpeedMessage::Restored {
            partition: p,
            restore_id: 1,
            boundary: 0,
        });
        let mut states: BTreeMap<SpeedKey, (i64, AggState, Counters)> = BTreeMap::new();
        let mut folder = PartitionFolder::new(&set.settings);
        let recs = of_partition(records, p);
        for rec in &recs {
            let o = rec.position.offset;
            let epoch = *starts.iter().rev().find(|&&s| s <= o).unwrap_or(&0);
            let hash = braid_core::hash::device_hash(&rec.reading.device_id);
            folder.fold(&set.views, rec, |e| {
                let view = &set.views[e.view];
                let (max, state, counters) = states
                    .entry(SpeedKey {
                        view: view.name.clone(),
                        window_start: e.window.start,
                        group: e.group.to_key(),
                        partition: p,
                        epoch_start: epoch,
                    })
                    .or_insert_with(|| (o, AggState::new(view.parts()), Counters::default()));
                let outcome = e.outcome.in_layer(Layer::Speed);
                counters.count(outcome);
                if outcome.applies() {
                    state.fold(rec.reading.value, hash);
                }
                *max = o;
            });
        }
        for (key, (max_offset, state, counters)) in states {
            table.apply(SpeedMessage::State {
                key,
                restore_id: 1,
                max_offset,
                state,
                counters,
            });
        }
        for w in starts.windows(2) {
            table.apply(SpeedMessage::Sealed {
                restore_id: 1,
                span: EpochSpan {
                    partition: p,
                    start: w[0],
                    end: w[1],
                },
            });
        }
        table.apply(SpeedMessage::Progress {
            restore_id: 1,
            partition: p,
            next_offset: recs.len() as i64,
            max_event_ts: folder.max_event_ts(),
        });
    }
    table
}

fn below(records: &[Record], cut: &Cut) -> Vec<Record> {
    records
        .iter()
        .filter(|r| r.position.offset < cut.offset(r.position.partition))
        .cloned()
        .collect()
}

/// Publishes a batch run of every view over the records below `cut`.
fn publish_run(layout: &Layout, set: &ViewSet, records: &[Record], cut: &Cut, run: &str) {
    let mut table = ViewTable::new();
    for &p in cut.0.keys() {
        let mut folder = PartitionFolder::new(&set.settings);
        let recs: Vec<&Record> = of_partition(records, p)
            .into_iter()
            .filter(|r| r.position.offset < cut.offset(p))
            .collect();
        fold_into(&mut table, &mut folder, &set.views, Layer::Batch, recs);
    }
    for (i, view) in set.views.iter().enumerate() {
        let windows: BTreeMap<_, _> = table
            .iter()
            .filter(|((v, ..), _)| *v == i)
            .map(|((_, start, group), sc)| ((*start, group.clone()), sc.clone()))
            .collect();
        let staged = StagedRun::new(layout, &view.name, run).unwrap();
        staged.write_rows(view, &windows).unwrap();
        staged
            .publish(&Manifest::new(view, set, run, cut.clone(), &windows))
            .unwrap();
    }
}

/// The model's merged answer at `cut`: the batch model of the records below
/// the cut, plus what the speed model adds for the records at or after it.
fn expected(view: &ViewDef, set: &ViewSet, records: &[Record], cut: &Cut) -> RefView {
    let prefix = below(records, cut);
    let mut out = reference_view_in(view, &set.settings, &prefix, Layer::Batch);
    let all = reference_view_in(view, &set.settings, records, Layer::Speed);
    let before = reference_view_in(view, &set.settings, &prefix, Layer::Speed);
    for (key, w) in all {
        let b = before.get(&key).cloned().unwrap_or_default();
        let mut applied = w.applied.clone();
        for x in &b.applied {
            let i = applied
                .iter()
                .position(|y| y == x)
                .expect("a prefix's value");
            applied.remove(i);
        }
        let rest = RefWindow {
            applied,
            late_readings: w.late_readings - b.late_readings,
            pending_historical: w.pending_historical - b.pending_historical,
            duplicates_dropped: w.duplicates_dropped - b.duplicates_dropped,
        };
        if rest == RefWindow::default() {
            continue;
        }
        let e = out.entry(key).or_default();
        e.applied.extend(rest.applied);
        e.late_readings += rest.late_readings;
        e.pending_historical += rest.pending_historical;
        e.duplicates_dropped += rest.duplicates_dropped;
    }
    out
}

/// Checks one answer against the model's windows in the range.
fn check(view: &ViewDef, model: &RefView, q: &Query, got: &[Row]) -> Result<(), String> {
    let device_pos = view.group_by.iter().position(|g| g == "device_id");
    let want: Vec<_> = model
        .iter()
        .filter(|((start, group), _)| {
            q.from.is_none_or(|f| *start >= f)
                && q.to.is_none_or(|t| *start < t)
                && match (device_pos, &q.device) {
                    (Some(i), Some(d)) => group[i].as_deref() == Some(d.as_str()),
                    _ => true,
                }
        })
        .collect();
    if want.len() != got.len() {
        return Err(format!(
            "{} [{:?}, {:?}): {} windows, the model has {}",
            view.name,
            q.from,
            q.to,
            got.len(),
            want.len()
        ));
    }
    for (((start, group), w), row) in want.into_iter().zip(got) {
        let row_group: Vec<Option<String>> = view
            .group_by
            .iter()
            .map(|name| row.group_value(name).map(String::from))
            .collect();
        if row.window_start != *start || &row_group != group {
            return Err(format!(
                "window {start} {group:?} answered as {} {row_group:?}",
                row.window_start
            ));
        }
        let counters = (
            row.readings,
            row.late_readings,
            row.pending_historical,
            row.duplicates_dropped,
        );
        let model_counters = (
            w.applied.len() as u64,
            w.late_readings,
            w.pending_historical,
            w.duplicates_dropped,
        );
        if counters != model_counters {
            return Err(format!(
                "{} {start} {group:?}: counters {counters:?}, the model {model_counters:?}",
                view.name
            ));
        }
        let state = w.state(view.parts());
        for col in view.columns() {
            let want = state
                .value(col)
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number);
            if row.field(col.name()) != Some(want.clone()) {
                return Err(format!(
                    "{} {start} {group:?} {}: {:?}, the model {want}",
                    view.name,
                    col.name(),
                    row.field(col.name())
                ));
            }
        }
    }
    Ok(())
}

/// A view, a range, and maybe one device.
type Ask = (usize, Option<i64>, Option<i64>, Option<String>);

fn range() -> impl Strategy<Value = Ask> {
    (
        0usize..3,
        prop::option::weighted(0.8, -40_000i64..160_000),
        prop::option::weighted(0.8, 0i64..60_000),
        prop::option::weighted(0.4, 0u8..5),
    )
        .prop_map(|(v, from, len, device)| {
            let to = from.zip(len).map(|(f, l)| f + l).or(len);
            (v, from, to, device.map(|d| format!("dev{d}")))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    #[test]
    fn ranges_across_the_seam_equal_the_model(
        events in prop::collection::vec(event(), 1..120),
        splits in prop::collection::vec(1usize..12, 6),
        cut_at in prop::collection::vec((0usize..4, 0usize..4), 3),
        ranges in prop::collection::vec(range(), 50),
    ) {
        let set = ViewSet::parse(VIEWS).unwrap();
        let records = log(&events);
        // Epoch starts per partition: 0, then random steps; each start is a
        // sealed boundary, the last epoch is open.
        let mut bounds = BTreeMap::new();
        for p in 0..3 {
            let n = of_partition(&records, p).len() as i64;
            let mut starts = vec![0i64];
            for k in 0.. {
                let next = starts.last().unwrap() + splits[k % splits.len()] as i64;
                if next >= n {
                    break;
                }
                starts.push(next);
            }
            bounds.insert(p, starts);
        }
        // Two cuts on sealed boundaries, the second at or after the first.
        let (mut first, mut second) = (Cut::default(), Cut::default());
        for (p, starts) in &bounds {
            let (a, b) = cut_at[*p as usize];
            let (a, b) = (a.min(b), a.max(b));
            first.0.insert(*p, starts[a.min(starts.len() - 1)]);
            second.0.insert(*p, starts[b.min(starts.len() - 1)]);
        }
        let models: BTreeMap<(String, usize), RefView> = set
            .views
            .iter()
            .flat_map(|v| {
                [(0, &first), (1, &second)]
                    .map(|(i, cut)| ((v.name.clone(), i), expected(v, &set, &records, cut)))
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        publish_run(&layout, &set, &records, &first, "run-1");
        let table = RwLock::new(speed_table(&set, &records, &bounds));
        let batch = BatchViews::new(layout.clone());
        let ask = |(v, from, to, device): Ask| -> Result<(), String> {
            let view = &set.views[v];
            let q = Query { from, to, device, ..Query::default() };
            batch.refresh(&set, view, &table).map_err(|e| e.to_string())?;
            let t = table.read().unwrap();
            let b = batch.cached(&view.name);
            let got = rows(&t, b.as_deref(), view, &q).map_err(|e| e.to_string())?;
            let which = match b.as_ref().map(|b| b.manifest.run_id.as_str()) {
                Some("run-1") => 0,
                Some("run-2") => 1,
                other => return Err(format!("no run used: {other:?}")),
            };
            check(view, &models[&(view.name.clone(), which)], &q, &got)
        };
        let (early, late) = ranges.split_at(ranges.len() / 2);
        for r in early {
            ask(r.clone()).map_err(TestCaseError::fail)?;
        }
        let failures: Vec<String> = std::thread::scope(|s| {
            let askers: Vec<_> = late
                .chunks(late.len().div_ceil(3))
                .map(|chunk| s.spawn(|| chunk.iter().filter_map(|r| ask(r.clone()).err()).collect::<Vec<_>>()))
                .collect();
            publish_run(&layout, &set, &records, &second, "run-2");
            for v in &set.views {
                batch.refresh(&set, v, &table).unwrap();
            }
            askers.into_iter().flat_map(|a| a.join().unwrap()).collect()
        });
        prop_assert!(failures.is_empty(), "{failures:#?}");
        // Every view now answers from the second run, the covered speed
        // states dropped, and still equals the model.
        for r in &ranges {
            ask(r.clone()).map_err(TestCaseError::fail)?;
        }
    }
}
