//! The core's one-pass reference model (what `braid verify` runs) against
//! the test kit's literal one (every rule read off the whole prefix of the
//! log, quadratic): random logs, a random batch cut per partition, the same
//! windows, counters per layer and state bytes.

use braid_core::ViewSet;
use braid_core::fold::Layer;
use braid_core::reference::recompute;
use braid_testkit::model::reference_view_in;
use braid_testkit::random::{VIEWS, event, log};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn one_pass_model_equals_the_literal_one(
        events in prop::collection::vec(event(), 0..60),
        cuts in prop::collection::vec(0i64..25, 3),
    ) {
        let set = ViewSet::parse(VIEWS).unwrap();
        let records = log(&events);
        let below = |r: &braid_core::Record| r.position.offset < cuts[r.position.partition as usize];
        let layer = |r: &braid_core::Record| if below(r) { Layer::Batch } else { Layer::Speed };
        for view in &set.views {
            let ours = recompute(view, &set.settings, &records, layer);
            // Everything as the speed layer applies it, and everything as a
            // batch run does, against the literal model.
            let as_batch = reference_view_in(view, &set.settings, &records, Layer::Batch);
            let as_speed = reference_view_in(view, &set.settings, &records, Layer::Speed);
            let whole = recompute(view, &set.settings, &records, |_| Layer::Speed);
            prop_assert_eq!(whole.len(), as_speed.len(), "view {}: windows", view.name);
            for (key, want) in &as_speed {
                let got = whole.get(key).expect("window present");
                prop_assert_eq!(got.speed.readings as usize, want.applied.len());
                prop_assert_eq!(got.speed.late_readings, want.late_readings);
                prop_assert_eq!(got.speed.pending_historical, want.pending_historical);
                prop_assert_eq!(got.speed.duplicates_dropped, want.duplicates_dropped);
                prop_assert_eq!(got.state.to_bytes(), want.state(view.parts()).to_bytes());
            }
            let all_batch = recompute(view, &set.settings, &records, |_| Layer::Batch);
            prop_assert_eq!(all_batch.len(), as_batch.len());
            for (key, want) in &as_batch {
                let got = all_batch.get(key).expect("window present");
                prop_assert_eq!(got.batch.readings as usize, want.applied.len());
                prop_assert_eq!(got.batch.late_readings, want.late_readings);
                prop_assert_eq!(got.batch.pending_historical, 0);
                prop_assert_eq!(got.batch.duplicates_dropped, want.duplicates_dropped);
                prop_assert_eq!(got.state.to_bytes(), want.state(view.parts()).to_bytes());
            }
            // Split at the cut, the counters of both layers add up to the
            // decisions made once per record.
            for (key, got) in &ours {
                let s = &as_speed[key];
                let b = &as_batch[key];
                prop_assert_eq!(got.batch.duplicates_dropped + got.speed.duplicates_dropped, s.duplicates_dropped);
                let late = got.batch.late_readings + got.speed.late_readings;
                prop_assert!(s.late_readings <= late && late <= b.late_readings);
                prop_assert_eq!(
                    got.batch.readings + got.speed.readings + got.speed.pending_historical,
                    b.applied.len() as u64
                );
            }
        }
    }
}
