//! Random logs (several partitions, out-of-order event times, outdated and
//! historical arrivals, duplicates): the core's incremental per-partition
//! fold gives, for every view, window and group, the same counters and the
//! same state bytes as the reference model's literal recomputation.

use std::collections::BTreeMap;

use braid_core::ViewSet;
use braid_core::fold::{Layer, PartitionFolder, ViewTable, fold_into};
use braid_testkit::model::reference_view;
use braid_testkit::random::{VIEWS, event, log};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn incremental_fold_equals_the_model(events in prop::collection::vec(event(), 0..60)) {
        let set = ViewSet::parse(VIEWS).unwrap();
        let records = log(&events);
        let mut table = ViewTable::new();
        for p in 0..3 {
            let mut folder = PartitionFolder::new(&set.settings);
            fold_into(&mut table, &mut folder, &set.views, Layer::Speed, records.iter().filter(|r| r.position.partition == p));
        }
        for (vi, view) in set.views.iter().enumerate() {
            let model = reference_view(view, &set.settings, &records);
            let ours: BTreeMap<_, _> = table
                .iter()
                .filter(|((v, _, _), _)| *v == vi)
                .map(|((_, start, group), sc)| ((*start, group.clone()), sc))
                .collect();
            prop_assert_eq!(ours.len(), model.len(), "view {}: window count", view.name);
            for (key, want) in &model {
                let (state, counters) = ours.get(key).expect("window present");
                prop_assert_eq!(counters.readings as usize, want.applied.len(), "view {} {:?}", view.name, key);
                prop_assert_eq!(counters.late_readings, want.late_readings, "late, view {} {:?}", view.name, key);
                prop_assert_eq!(counters.pending_historical, want.pending_historical);
                prop_assert_eq!(counters.duplicates_dropped, want.duplicates_dropped);
                prop_assert_eq!(state.to_bytes(), want.state(view.parts()).to_bytes());
            }
        }
    }
}
