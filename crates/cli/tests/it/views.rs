//! `braid views check` and the help text.

use super::{braid, stderr, stdout};

#[test]
fn the_shipped_views_check_clean() {
    let out = braid(&["views", "check", "data/views.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));
}

#[test]
fn a_bad_file_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[views]]\nname = \"x\"\nwindow = \"5m\"\naggregates = [\"count\", \"avg\"]\n",
    )
    .unwrap();
    let out = braid(&["views", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(
        err.contains("line 4: view `x`: field `aggregates`: unknown aggregate `avg`"),
        "{err}"
    );
}

#[test]
fn help_lists_the_roles() {
    let out = braid(&["--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!(stdout(&out));
    let up = braid(&["up", "--help"]);
    insta::assert_snapshot!("up_help", stdout(&up));
}
