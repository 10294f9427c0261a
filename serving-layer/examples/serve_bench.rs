//! The serving bench's server: a replica over generated data, no Kafka.
//!
//! `serve_bench DEVICES` builds a `per_device` view of 1-minute windows for
//! DEVICES devices: a published batch run holding 18 hours, and speed states
//! for the 12 hours after its cut, in hourly epochs (the last one open). It
//! serves the real query routes twice: `query`, with no answer cache, so
//! every request merges and writes its rows; and `cached`, with the answer
//! cache, while the speed table moves every 100 ms (the speed layer's
//! default publish interval: each move makes the kept answer outdated). On
//! a third port a bare warp route answers the same bytes as the
//! benchmarked query. It prints the three addresses and runs until stdin
//! closes.
//!
//! The query `scripts/bench serve` asks: one device, one day of windows
//! across the seam (6 h to 30 h: 720 windows from batch, 720 from speed).

#![allow(clippy::unwrap_used)] // a bench harness: fail loudly

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use braid_core::ViewSet;
use braid_core::agg::AggState;
use braid_core::merge::{Counters, Cut, EpochSpan};
use braid_core::speedlog::{SpeedKey, SpeedMessage};
use braid_serving::{
    OPENAPI, Serving, api, batch::BatchViews, cache::AnswerCache, feed::SpeedFeed, metrics,
};
use braid_store::Layout;
use braid_store::views::{Manifest, StagedRun};
use warp::Filter;

const VIEWS: &str = r#"
[[views]]
name = "per_device"
window = "1m"
group_by = ["device_id"]
aggregates = ["count", "mean", "min", "max", "stddev"]
"#;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const D0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const READINGS_PER_WINDOW: u64 = 6;

fn state(set: &ViewSet, device: usize, w: i64) -> (AggState, Counters) {
    let mut s = AggState::new(set.views[0].parts());
    let hash = braid_core::hash::device_hash(&format!("dev-{device:05}"));
    for i in 0..READINGS_PER_WINDOW {
        s.fold(
            ((w / MIN) % 97) as f64 + i as f64 * 0.25 + device as f64,
            hash,
        );
    }
    let c = Counters {
        readings: READINGS_PER_WINDOW,
        ..Counters::default()
    };
    (s, c)
}

#[tokio::main]
async fn main() {
    let devices: usize = std::env::args()
        .nth(1)
        .map_or(100, |a| a.parse().expect("DEVICES"));
    let set = ViewSet::parse(VIEWS).unwrap();
    let view = &set.views[0];
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let cut_offset = (18 * HOUR / MIN) * devices as i64;

    // The batch run: 18 hours.
    let mut windows = BTreeMap::new();
    for w in (D0..D0 + 18 * HOUR).step_by(MIN as usize) {
        for d in 0..devices {
            windows.insert((w, vec![Some(format!("dev-{d:05}"))]), state(&set, d, w));
        }
    }
    let staged = StagedRun::new(&layout, &view.name, "bench").unwrap();
    staged.write_rows(view, &windows).unwrap();
    staged
        .publish(&Manifest::new(
            view,
            &set,
            "bench",
            Cut([(0, cut_offset)].into()),
            &windows,
        ))
        .unwrap();
    drop(windows);

    // The speed layer: the 12 hours after the cut, one epoch per hour (as
    // offsets: one record per window and device), the last one open.
    let feed = SpeedFeed::default();
    {
        let mut t = feed.table.write().unwrap();
        t.apply(SpeedMessage::Restored {
            partition: 0,
            restore_id: 1,
            boundary: 0,
        });
        let per_hour = (HOUR / MIN) * devices as i64;
        for h in 0..12 {
            let epoch = cut_offset + h * per_hour;
            for m in 0..HOUR / MIN {
                let w = D0 + (18 + h) * HOUR + m * MIN;
                for d in 0..devices {
                    let (state, counters) = state(&set, d, w);
                    t.apply(SpeedMessage::State {
                        key: SpeedKey {
                            view: view.name.clone(),
                            window_start: w,
                            group: vec![Some(format!("dev-{d:05}"))],
                            partition: 0,
                            epoch_start: epoch,
                        },
                        restore_id: 1,
                        max_offset: epoch + m * devices as i64 + d as i64,
                        state,
                        counters,
                    });
                }
            }
            if h < 11 {
                t.apply(SpeedMessage::Sealed {
                    restore_id: 1,
                    span: EpochSpan {
                        partition: 0,
                        start: epoch,
                        end: epoch + per_hour,
                    },
                });
            }
        }
        t.apply(SpeedMessage::Progress {
            restore_id: 1,
            partition: 0,
            next_offset: cut_offset + 12 * per_hour,
            max_event_ts: Some(D0 + 30 * HOUR),
        });
    }
    let table = feed.table.into_inner().unwrap();
    let replica = |cache_bytes: usize| {
        let feed = SpeedFeed {
            table: std::sync::RwLock::new(table.clone()),
            ..SpeedFeed::default()
        };
        feed.caught_up.store(true, Ordering::Relaxed);
        Arc::new(Serving {
            views: set.clone(),
            feed: Arc::new(feed),
            baselines: braid_serving::forecast::BaselineCache::new(layout.clone()),
            batch: BatchViews::new(layout.clone()),
            archive: braid_store::Blobs::local(layout.root()),
            http: metrics::HttpMetrics::default(),
            openapi: serde_json::from_str(OPENAPI).unwrap(),
            tokens: None,
            alerts: Arc::new(braid_serving::alerts::AlertFeed::default()),
            detectors: Default::default(),
            webhook: None,
            answers: AnswerCache::new(cache_bytes),
        })
    };
    let serving = replica(0);
    let cached = replica(braid_serving::ANSWER_CACHE_BYTES);
    // The cached replica's table moves as a live feed's does: a message
    // read every 100 ms.
    let moving = Arc::clone(&cached.feed);
    std::thread::spawn(move || {
        let mut next = 1;
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            moving.table.write().unwrap().read_to(0, next);
            next += 1;
        }
    });

    let path = format!(
        "/v1/views/per_device?device=dev-00007&from={}&to={}",
        D0 + 6 * HOUR,
        D0 + 30 * HOUR
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(api::routes(serving)).incoming(listener).run());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cached_addr = listener.local_addr().unwrap();
    let cached_stats = Arc::clone(&cached);
    tokio::spawn(warp::serve(api::routes(cached)).incoming(listener).run());
    let get = |addr: std::net::SocketAddr| {
        let url = format!("http://{addr}{path}");
        async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() }
    };
    let body = get(addr).await;
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["rows"].as_array().map(Vec::len), Some(1440));
    // The cached replica loads the batch run at its first query too: made
    // before the bench, so that no measured request pays for it.
    let warm: serde_json::Value = serde_json::from_slice(&get(cached_addr).await).unwrap();
    assert_eq!(warm["rows"], answer["rows"]);
    let bare = warp::get()
        .and(warp::path!("bare"))
        .map(move || warp::reply::with_header(body.to_vec(), "content-type", "application/json"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(bare).incoming(listener).run());
    println!("query http://{addr}{path}");
    println!("cached http://{cached_addr}{path}");
    println!("bare http://{bare_addr}/bare");
    println!(
        "ready: {devices} devices, {} batch windows, {} speed states",
        18 * 60 * devices,
        12 * 60 * devices
    );
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .unwrap();
    let a = &cached_stats.answers;
    eprintln!(
        "answer cache: {} hits, {} misses",
        a.hits.load(Ordering::Relaxed),
        a.misses.load(Ordering::Relaxed)
    );
}
