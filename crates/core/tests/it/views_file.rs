//! The shipped `data/views.toml` and the error messages of bad files.

use braid_core::{Aggregate, ViewSet};

fn shipped() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/views.toml");
    std::fs::read_to_string(path).expect("data/views.toml is readable")
}

#[test]
fn the_shipped_views_parse() {
    let set = ViewSet::parse(&shipped()).unwrap_or_else(|e| panic!("data/views.toml: {e}"));
    for name in [
        "parking_occupancy",
        "home_power",
        "farm_soil_moisture",
        "device_summary",
    ] {
        assert!(set.get(name).is_some(), "view {name} is missing");
    }
    let parking = set.get("parking_occupancy").unwrap();
    assert!(parking.aggregates.contains(&Aggregate::Quantiles));
    assert_eq!(parking.expected_devices, Some(30));
}

#[test]
fn every_error_names_line_and_field() {
    let text = shipped();
    let cases = [
        (
            "aggregates = [",
            "aggregates = [\"median\", ",
            "unknown aggregate `median`",
        ),
        ("window = ", "windw = ", "unknown field `windw`"),
        ("outdated = \"1h\"", "outdated = \"1q\"", "unknown unit `q`"),
        (
            "expected_devices = 30",
            "expected_devices = -3",
            "expected_devices",
        ),
        (
            "expected_devices = 30",
            "expected_devices = 30\nexpected_devices = 31",
            "duplicate key",
        ),
    ];
    for (from, to, needle) in cases {
        assert!(text.contains(from), "fixture lost `{from}`");
        let bad = text.replacen(from, to, 1);
        let err = ViewSet::parse(&bad).unwrap_err();
        let msg = err.to_string();
        assert!(err.line.is_some(), "no line in `{msg}`");
        assert!(msg.contains(needle), "`{msg}` lacks `{needle}`");
        assert!(
            err.field.is_some() || msg.contains("duplicate"),
            "no field in `{msg}`"
        );
    }
}

#[test]
fn a_second_view_of_the_same_name_is_refused() {
    let text = shipped()
        + "\n[[views]]\nname = \"home_power\"\nwindow = \"1m\"\naggregates = [\"count\"]\n";
    let err = ViewSet::parse(&text).unwrap_err();
    assert!(err.to_string().contains("defined twice"), "{err}");
}
