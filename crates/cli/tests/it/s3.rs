//! The archive, the speed checkpoints and the published views on an
//! S3-compatible server (moto, started by the test on loopback), through a
//! switch that can cut the network to it.
//!
//! Every role runs as a process with `BRAID_ARCHIVE_URL=s3://braid/run`,
//! `BRAID_CHECKPOINT_URL=s3://braid/speed-state` and
//! `BRAID_VIEWS_URL=s3://braid/published`. A fleet sends readings for 95 s;
//! 12 s in, the bucket goes away for 60 s. While it is away no roll marker
//! and no checkpoint appears (no offset counts as archived or
//! checkpointed), the archiver and the speed layer say they hold, a batch
//! run fails naming the store and publishes nothing, and ingest and
//! serving go on. Afterwards both catch up; the speed worker is killed
//! with `kill -9` and restarted, and with more readings it restores every
//! partition from the bucket (the data directory has no checkpoint); an
//! import goes to the bucket; a batch run reads the archive, the import and
//! the sealed boundaries from S3 and publishes there, serving picks the run up from the bucket, and
//! `braid verify` finds every offset of the log archived exactly once and
//! every served window equal to a from-scratch recomputation.

use std::time::{Duration, Instant};

use braid_store::{Blobs, Put};
use braid_testkit::moto::{Moto, Switch};

use crate::cluster::{Cluster, Setup, at, runtime};

/// Options for a client that talks to `addr` directly.
pub(crate) fn direct_options(addr: &str) -> Vec<(String, String)> {
    Moto::env(addr)
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

#[test]
fn blobs_on_s3_are_create_only() {
    let moto = Moto::start();
    moto.create_bucket("blobs");
    let b = Blobs::open_with("s3://blobs/pre/fix", &direct_options(&moto.addr)).expect("open");
    runtime().block_on(async {
        let put = |v: &'static [u8]| b.put_create("a/b/one", bytes::Bytes::from_static(v));
        assert_eq!(put(b"1").await.expect("first put"), Put::Created);
        // The conditional put refuses the second: the first stays.
        assert_eq!(put(b"2").await.expect("second put"), Put::Existed);
        assert_eq!(b.get("a/b/one").await.expect("get").expect("there"), "1");
        assert_eq!(b.get("a/none").await.expect("get"), None);
        b.put_create("a/two", bytes::Bytes::from_static(b"2"))
            .await
            .expect("put");
        assert_eq!(b.list("a").await.expect("list"), ["a/b/one", "a/two"]);
        b.delete("a/two").await.expect("delete");
        b.delete("a/two").await.expect("a second delete is fine");
        assert_eq!(b.list("a").await.expect("list"), ["a/b/one"]);
    });
    // Unreachable: a clear error naming the key and the store.
    let gone = Blobs::open_with("s3://blobs/x", &direct_options("127.0.0.1:9")).expect("open");
    let err = runtime()
        .block_on(gone.get("k"))
        .expect_err("nothing listens on port 9")
        .to_string();
    assert!(err.contains("reading k in s3://blobs/x"), "{err}");
}

/// Views and baselines published to S3 read back as written; the stamp of
/// `CURRENT` moves with a publish; pruning keeps the newest runs and the
/// current one; an upload that never got its manifest is not a run and is
/// removed.
#[test]
fn views_and_baselines_publish_to_s3() {
    use braid_core::ViewSet;
    use braid_core::agg::AggState;
    use braid_core::merge::{Counters, Cut};
    use braid_store::published::STAMP_EVERY;
    use braid_store::views::{self, Manifest, StagedRun};
    use braid_store::{Layout, baselines};

    let moto = Moto::start();
    moto.create_bucket("views");
    let url = "s3://views/pub";
    let store = Blobs::open_with(url, &direct_options(&moto.addr)).expect("open");
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = Layout::new(dir.path()).publish_in(&store);
    let reader = Layout::new(dir.path().join("elsewhere")).publish_in(&store);
    let set = ViewSet::parse(
        "[[views]]\nname = \"v\"\nwindow = \"1m\"\ngroup_by = [\"device_id\"]\naggregates = [\"count\", \"mean\"]\n",
    )
    .expect("views");
    let v = &set.views[0];
    let windows_of = |n: u64| {
        let mut w = std::collections::BTreeMap::new();
        for i in 0..n {
            let mut state = AggState::new(v.parts());
            state.fold(i as f64 * 1.5, 0);
            let c = Counters {
                readings: 1,
                ..Counters::default()
            };
            w.insert((i as i64 * 60_000, vec![Some(format!("d{i}"))]), (state, c));
        }
        w
    };
    assert_eq!(views::current_run(&reader, "v").expect("current"), None);
    assert_eq!(views::current_stamp(&reader, "v").expect("stamp"), None);
    assert_eq!(
        views::runs(&reader, "v").expect("runs"),
        Vec::<String>::new()
    );
    for (k, run) in ["r1", "r2", "r3"].into_iter().enumerate() {
        let windows = windows_of(k as u64 + 2);
        let staged = StagedRun::new(&writer, "v", run).expect("stage");
        staged.write_rows(v, &windows).expect("rows");
        std::fs::write(staged.dir().join("extra.bin"), run).expect("extra");
        let cut = Cut([(0, 10 * (k as i64 + 1))].into());
        let where_ = staged
            .publish(&Manifest::new(v, &set, run, cut, &windows))
            .expect("publish");
        assert!(where_.display().to_string().starts_with(url), "{where_:?}");
        views::prune(&writer, "v", 2).expect("prune");
        let bv = views::read_current(&reader, v)
            .expect("read")
            .expect("published");
        assert_eq!(bv.manifest.run_id, run);
        let want: Vec<_> = windows
            .iter()
            .map(|(k, (s, c))| (k.clone(), s.to_bytes(), *c))
            .collect();
        let got: Vec<_> = bv
            .windows
            .iter()
            .map(|(k, (s, c))| (k.clone(), s.to_bytes(), *c))
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            views::read_run_file(&reader, "v", run, "extra.bin").expect("file"),
            Some(run.as_bytes().to_vec())
        );
        assert_eq!(
            views::published_cuts(&reader, 0).expect("cuts"),
            [10 * (k as i64 + 1)]
        );
    }
    assert_eq!(views::runs(&reader, "v").expect("runs"), ["r2", "r3"]);
    // The stamp moves with a publish (and only then). A fresh reader asks
    // the store; one that asked before answers what it asked last and asks
    // again in the background, at most every STAMP_EVERY.
    let fresh = || Layout::new(dir.path()).publish_in(&store);
    let before = views::current_stamp(&fresh(), "v").expect("stamp");
    assert!(before.is_some());
    let watcher = fresh();
    assert_eq!(views::current_stamp(&watcher, "v").expect("stamp"), before);
    std::thread::sleep(STAMP_EVERY * 2);
    assert_eq!(views::current_stamp(&fresh(), "v").expect("stamp"), before);
    let windows = windows_of(1);
    let staged = StagedRun::new(&writer, "v", "r4").expect("stage");
    staged.write_rows(v, &windows).expect("rows");
    staged
        .publish(&Manifest::new(v, &set, "r4", Cut::default(), &windows))
        .expect("publish");
    assert_ne!(views::current_stamp(&fresh(), "v").expect("stamp"), before);
    let t = Instant::now();
    while views::current_stamp(&watcher, "v").expect("stamp") == before {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the stamp never moved"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A killed upload: rows but no manifest.
    runtime()
        .block_on(store.put("views/v/r5/part-0.parquet", bytes::Bytes::from_static(b"x")))
        .expect("put");
    assert_eq!(views::runs(&reader, "v").expect("runs"), ["r2", "r3", "r4"]);
    views::remove_stale(&writer, "v").expect("remove stale");
    let keys = runtime().block_on(store.list("views/v/r5")).expect("list");
    assert!(keys.is_empty(), "{keys:?}");
    // Nothing of it was kept in the data directory.
    assert!(!dir.path().join("views/v/r4").exists());

    let b = braid_core::baseline::Baselines {
        run_id: "r4".into(),
        ..Default::default()
    };
    baselines::publish(&writer, &b, 2).expect("baselines");
    assert_eq!(baselines::read_current(&reader).expect("read"), Some(b));
}

#[test]
fn the_archive_on_s3_rides_out_a_bucket_outage() {
    let moto = Moto::start();
    moto.create_bucket("braid");
    let switch = Switch::start(&moto.addr);
    let url = "s3://braid/run";
    let state_url = "s3://braid/speed-state";
    let views_url = "s3://braid/published";
    let mut env = Moto::env(&switch.addr);
    env.push(("BRAID_ARCHIVE_URL".into(), url.into()));
    env.push(("BRAID_CHECKPOINT_URL".into(), state_url.into()));
    env.push(("BRAID_VIEWS_URL".into(), views_url.into()));
    let mut c = Cluster::start(Setup {
        roll_age: "2s",
        env,
        ..Setup::default()
    });
    let direct = Blobs::open_with(url, &direct_options(&moto.addr)).expect("open");
    let rt = runtime();
    let markers = || {
        rt.block_on(direct.list("archive/rolls"))
            .expect("list markers")
    };
    let state = Blobs::open_with(state_url, &direct_options(&moto.addr)).expect("open");
    let checkpoints = || {
        rt.block_on(state.list("speed/checkpoints"))
            .expect("list checkpoints")
    };

    let start = Instant::now();
    let mut sim = c.home_fleet(95, 13);
    at(start, 12.0);
    assert!(
        !markers().is_empty(),
        "nothing archived in 12 s: {}",
        c.logs("archive")
    );
    assert!(
        !checkpoints().is_empty(),
        "no checkpoint in 12 s: {}",
        c.logs("speed")
    );
    switch.cut();
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let before = markers();
    let checkpoints_before = checkpoints();
    // A batch run cannot read the archive now: it fails, saying where, and
    // publishes nothing.
    let published_store = Blobs::open_with(views_url, &direct_options(&moto.addr)).expect("open");
    let current = || {
        rt.block_on(published_store.get("views/home_power/CURRENT"))
            .expect("read CURRENT")
    };
    let published = current();
    let out = c.try_batch_run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "braid batch run: {err}");
    assert!(
        [url, views_url].iter().any(|u| err.contains(u)),
        "the error does not name the store: {err}"
    );
    assert_eq!(current(), published);
    while cut.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(
            markers(),
            before,
            "a roll was marked while the bucket was away"
        );
        assert_eq!(
            checkpoints(),
            checkpoints_before,
            "a checkpoint was written while the bucket was away"
        );
    }
    let logs = c.logs("archive");
    assert!(
        logs.contains("archive store failed") && logs.contains("holding"),
        "the archiver never said it holds: {logs}"
    );
    assert!(c.running("archive"), "the archiver gave up: {logs}");
    let logs = c.logs("speed");
    assert!(
        logs.contains("checkpoint store failed") && logs.contains("holding"),
        "the speed layer never said it holds: {logs}"
    );
    assert!(c.running("speed"), "the speed layer gave up: {logs}");
    switch.restore();
    println!("outage over after {:?}", cut.elapsed());

    assert!(
        sim.wait().expect("simulator").success(),
        "the simulator failed"
    );
    // Waits until the archive holds every offset of the log.
    let caught_up = |c: &Cluster| {
        let ends = braid_testkit::logs::log_ends(&braid_testkit::logs::read_log(&c.brokers));
        let t = Instant::now();
        loop {
            let inv = rt
                .block_on(braid_batch::archive::inventory(&direct))
                .expect("inventory");
            let archived: std::collections::BTreeMap<i32, i64> = inv
                .iter()
                .filter_map(|(p, rs)| Some((*p, rs.last()?.last + 1)))
                .collect();
            if archived == ends {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the archive never caught up: {archived:?} of {ends:?}\n{}",
                c.logs("archive")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    caught_up(&c);
    assert!(markers().len() > before.len(), "no roll after the outage");
    assert_ne!(
        checkpoints(),
        checkpoints_before,
        "no checkpoint after the outage"
    );
    // The speed worker's machine is lost: a new one restores every
    // partition from the bucket.
    c.kill("speed");
    c.spawn("speed");
    // More readings, so the new worker restores every partition.
    assert!(
        c.home_fleet(5, 14).wait().expect("simulator").success(),
        "the simulator failed"
    );
    caught_up(&c);
    assert!(!c.data_dir().join("speed").exists());
    // History backfilled into the archive in the bucket: the batch run
    // includes it, and verify reads it from there.
    c.import_history();
    let imports = rt
        .block_on(braid_store::layout::complete_imports(&direct))
        .expect("list imports");
    assert_eq!(imports.len(), 1, "{imports:?}");
    c.batch_run();
    let report = c.verify_clean("s3 outage");
    let log = braid_testkit::logs::read_log(&c.brokers);
    assert_eq!(
        report["archived"].as_u64(),
        Some(log.len() as u64),
        "{report}"
    );
    // The archive and the checkpoints are in the bucket, not the data
    // directory.
    assert!(!c.data_dir().join("archive").exists());
    assert!(!c.data_dir().join("speed").exists());
    assert!(current().is_some(), "no run published in the bucket");
    assert!(!c.data_dir().join("views/home_power/CURRENT").exists());
    let logs = std::fs::read_to_string(c.dir().join("speed-2.log")).expect("log");
    assert!(
        logs.contains("partition restored from checkpoint"),
        "the restarted worker restored nothing: {logs}"
    );
}
