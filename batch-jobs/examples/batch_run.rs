//! `braid batch run` as a library call, for `scripts/bench batch`: the same
//! `braid_batch::recompute::run` the CLI calls, without the rest of the
//! binary (so the bench builds only the batch layer).
//!
//! Usage: `batch_run DATA_DIR VIEWS_FILE THREADS`

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, views, threads] = &args[..] else {
        eprintln!("usage: batch_run DATA_DIR VIEWS_FILE THREADS");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(views).expect("views file");
    let set = braid_core::ViewSet::parse(&text).expect("views parse");
    let mut config = braid_batch::recompute::RunConfig::new(dir.into(), set);
    config.threads = threads.parse().expect("THREADS");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt
        .block_on(braid_batch::recompute::run(config))
        .expect("batch run");
    eprintln!(
        "run {}: {} records in {:.1} s",
        report.run_id,
        report.records,
        report.elapsed.as_secs_f64()
    );
}
