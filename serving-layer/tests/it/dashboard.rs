//! The dashboard in a real browser: headless Chromium (Debian's `chromium`
//! package; `BRAID_CHROMIUM` names another binary) loads `GET /` from a
//! replica serving the comparison fixture, runs its script until it has
//! drawn, and must log nothing to the console. A screenshot is saved under
//! the target directory for people to look at.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::compare::{fixture, fixture_with};

fn chromium() -> PathBuf {
    let bin = std::env::var_os("BRAID_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        bin.exists(),
        "{} not found: install Debian's chromium package (apt-get install chromium), or set BRAID_CHROMIUM",
        bin.display()
    );
    bin
}

/// Runs headless Chromium on `url` with `extra` arguments; its stdout and
/// stderr.
fn run_chromium(url: &str, profile: &Path, extra: &[String]) -> (String, String) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1100",
            // Virtual time runs the page's 2 s refresh a few times, and
            // waits for its requests.
            "--virtual-time-budget=12000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium starts");
    assert!(out.status.success(), "chromium failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of attribute `name` on the page's `<body>` tag.
fn body_attr<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let body = &dom[dom.find("<body")?..];
    let tag = &body[..body.find('>')?];
    let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
    Some(&tag[at..at + tag[at..].find('"')?])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_without_console_errors() {
    let fx = fixture().await;
    let url = format!("{}/", fx.base);
    let profile = tempfile::tempdir().unwrap();
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let (dom, dom_log, shot_log) = {
        let (url, profile, shot) = (url.clone(), profile.path().to_path_buf(), shot.clone());
        tokio::task::spawn_blocking(move || {
            let (dom, log) = run_chromium(&url, &profile.join("a"), &["--dump-dom".into()]);
            let (_, shot_log) = run_chromium(
                &url,
                &profile.join("b"),
                &[format!("--screenshot={}", shot.display())],
            );
            (dom, log, shot_log)
        })
        .await
        .unwrap()
    };
    for log in [&dom_log, &shot_log] {
        let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
        assert!(console.is_empty(), "console output: {console:#?}");
    }
    assert_eq!(body_attr(&dom, "data-errors"), Some("0"), "{dom}");
    assert_eq!(body_attr(&dom, "data-drawn"), Some("1"), "{dom}");
    // Five windows and groups in the fixture, all drawn.
    let points: usize = body_attr(&dom, "data-points").unwrap().parse().unwrap();
    assert!(points >= 1, "{dom}");
    assert!(dom.contains("run-1"), "the last batch run is shown: {dom}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{}", shot.display());
    println!("screenshot: {}", shot.display());
}

/// With read tokens, the page without one says it needs one; given one
/// (`#token=`, then kept for the tab) it sends it and draws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_sends_a_read_token() {
    use braid_ingest::auth::{Tokens, hash_secret};
    let tokens = Tokens::parse(&format!(
        "[[tokens]]\nname = \"viewer\"\nsha256 = \"{}\"\naccess = [\"read\"]\ndevices = [\"*\"]\n",
        hash_secret("let-me-see")
    ))
    .unwrap();
    let fx = fixture_with(Some(std::sync::Arc::new(tokens))).await;
    let profile = tempfile::tempdir().unwrap();
    let (without, with) = {
        let (base, profile) = (fx.base.clone(), profile.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            let dump = ["--dump-dom".to_string()];
            let (without, _) = run_chromium(&format!("{base}/"), &profile.join("a"), &dump);
            let (with, log) = run_chromium(
                &format!("{base}/#token=let-me-see"),
                &profile.join("b"),
                &dump,
            );
            let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
            assert!(console.is_empty(), "console output: {console:#?}");
            (without, with)
        })
        .await
        .unwrap()
    };
    assert!(without.contains("needs a read token"), "{without}");
    assert_eq!(body_attr(&with, "data-errors"), Some("0"), "{with}");
    assert_eq!(body_attr(&with, "data-drawn"), Some("1"), "{with}");
    assert!(!with.contains("needs a read token"), "{with}");
}
