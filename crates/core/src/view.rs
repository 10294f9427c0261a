//! View definitions: `data/views.toml`, the one place every view is written.
//!
//! A view names its window (tumbling size, optional hop), its group keys
//! (`device_id`, `metric`, or any tag name), its aggregates, its lateness
//! bounds and optionally how many devices it expects per window. Both layers
//! and the serving layer read the same [`ViewSet`]; its [`ViewDef::hash`]
//! goes into every batch manifest so that a view changed under a stored run
//! is noticed.
//!
//! Errors name the line and the field: unknown fields are refused (a typo is
//! an error, not a default), and so are values that parse but make no sense
//! (a hop that does not divide the window, an unknown aggregate).

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use crate::agg::{Aggregate, Column, Parts};
use crate::encoding::{DecodeError, Reader, Writer};
use crate::hash::stable_hash;
use crate::lateness::LatenessBounds;
use crate::time::{format_duration, parse_duration};
use crate::window::Windowing;

/// A problem in a views file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewsError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The view, when the problem is inside one.
    pub view: Option<String>,
    /// The field at fault, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ViewsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(view) = &self.view {
            write!(f, "view `{view}`: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ViewsError {}

/// Settings that hold for all views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Duplicates are dropped within this much ingest time, ms.
    pub dedup_horizon_ms: i64,
    /// A partition with no data for this long (processing time) does not
    /// hold the watermark back, ms.
    pub idle_timeout_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dedup_horizon_ms: 3_600_000,
            idle_timeout_ms: 60_000,
        }
    }
}

/// One view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewDef {
    /// Unique name, `[a-z0-9_]`, used in URLs and paths.
    pub name: String,
    /// Free text for people.
    pub description: String,
    /// Metrics that feed the view; empty means every metric.
    pub metrics: Vec<String>,
    /// Window size and hop.
    pub windowing: Windowing,
    /// Group keys: `device_id`, `metric`, or tag names.
    pub group_by: Vec<String>,
    /// Aggregates, in the order written.
    pub aggregates: Vec<Aggregate>,
    /// Lateness bounds.
    pub lateness: LatenessBounds,
    /// Event-time slack before the watermark passes a reading, ms.
    pub max_out_of_orderness_ms: i64,
    /// Devices expected to report in each window, if known.
    pub expected_devices: Option<u64>,
}

impl ViewDef {
    /// The state parts this view's aggregates need.
    pub fn parts(&self) -> Parts {
        Parts::for_aggregates(self.aggregates.iter().copied())
    }

    /// Output columns, in order.
    pub fn columns(&self) -> Vec<Column> {
        self.aggregates
            .iter()
            .flat_map(|a| a.columns().iter().copied())
            .collect()
    }

    /// Whether a reading of `metric` feeds this view.
    pub fn accepts_metric(&self, metric: &str) -> bool {
        self.metrics.is_empty() || self.metrics.iter().any(|m| m == metric)
    }

    /// Writes the definition (for a plan shipped to another process: a
    /// Ballista executor folds with the very definition the run was given).
    pub fn encode(&self, w: &mut Writer) {
        let text = |w: &mut Writer, s: &str| w.bytes(s.as_bytes());
        text(w, &self.name);
        text(w, &self.description);
        w.uvar(self.metrics.len() as u64);
        self.metrics.iter().for_each(|m| text(w, m));
        w.ivar(self.windowing.size_ms);
        w.ivar(self.windowing.hop_ms);
        w.uvar(self.group_by.len() as u64);
        self.group_by.iter().for_each(|g| text(w, g));
        w.uvar(self.aggregates.len() as u64);
        self.aggregates.iter().for_each(|a| text(w, a.name()));
        w.ivar(self.lateness.current_ms);
        w.ivar(self.lateness.outdated_ms);
        w.ivar(self.max_out_of_orderness_ms);
        match self.expected_devices {
            Some(n) => {
                w.u8(1);
                w.uvar(n);
            }
            None => w.u8(0),
        }
    }

    /// Reads what [`ViewDef::encode`] wrote, checking it as the views file
    /// is checked.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        fn text(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
            String::from_utf8(r.bytes(what)?.to_vec()).map_err(|_| DecodeError::Invalid(what))
        }
        fn texts(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<String>, DecodeError> {
            let n = r.len(what, 1)?;
            (0..n).map(|_| text(r, what)).collect()
        }
        let name = text(r, "view name")?;
        let description = text(r, "view description")?;
        let metrics = texts(r, "view metrics")?;
        let size = r.ivar("window size")?;
        let hop = r.ivar("window hop")?;
        let windowing = Windowing::new(size, hop).map_err(|_| DecodeError::Invalid("windowing"))?;
        let group_by = texts(r, "view group keys")?;
        let aggregates = texts(r, "view aggregates")?
            .iter()
            .map(|a| Aggregate::parse(a).ok_or(DecodeError::Invalid("aggregate name")))
            .collect::<Result<_, _>>()?;
        let current = r.ivar("lateness current")?;
        let outdated = r.ivar("lateness outdated")?;
        let lateness = LatenessBounds::new(current, outdated)
            .map_err(|_| DecodeError::Invalid("lateness bounds"))?;
        let max_out_of_orderness_ms = r.ivar("max out of orderness")?;
        let expected_devices = match r.u8("expected devices flag")? {
            0 => None,
            1 => Some(r.uvar("expected devices")?),
            _ => return Err(DecodeError::Invalid("expected devices flag")),
        };
        Ok(Self {
            name,
            description,
            metrics,
            windowing,
            group_by,
            aggregates,
            lateness,
            max_out_of_orderness_ms,
            expected_devices,
        })
    }

    /// A stable hash of everything that changes the view's numbers.
    pub fn hash(&self) -> u64 {
        let canonical = format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.name,
            self.metrics.join(","),
            self.windowing.size_ms,
            self.windowing.hop_ms,
            self.group_by.join(","),
            self.aggregates
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(","),
            self.lateness.current_ms,
            self.lateness.outdated_ms,
            self.max_out_of_orderness_ms,
        );
        stable_hash(canonical.as_bytes())
    }
}

/// Every view of a deployment, with the shared settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewSet {
    /// Shared settings.
    pub settings: Settings,
    /// The views, in file order.
    pub views: Vec<ViewDef>,
}

impl ViewSet {
    /// A view by name.
    pub fn get(&self, name: &str) -> Option<&ViewDef> {
        self.views.iter().find(|v| v.name == name)
    }

    /// Parses and checks the text of a views file.
    pub fn parse(text: &str) -> Result<Self, ViewsError> {
        let file: FileToml = toml::from_str(text).map_err(|e| ViewsError {
            line: e.span().map(|s| line_of(text, s.start)),
            view: None,
            field: e.span().and_then(|s| key_at(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        let ctx = Ctx { text };
        let d = file.defaults.unwrap_or_default();
        let default_current = ctx.duration(None, "defaults.current", d.current.as_ref(), 60_000)?;
        let default_outdated =
            ctx.duration(None, "defaults.outdated", d.outdated.as_ref(), 3_600_000)?;
        let default_ooo = ctx.duration(
            None,
            "defaults.max_out_of_orderness",
            d.max_out_of_orderness.as_ref(),
            5_000,
        )?;
        let settings = Settings {
            dedup_horizon_ms: ctx.duration(
                None,
                "defaults.dedup_horizon",
                d.dedup_horizon.as_ref(),
                Settings::default().dedup_horizon_ms,
            )?,
            idle_timeout_ms: ctx.duration(
                None,
                "defaults.idle_timeout",
                d.idle_timeout.as_ref(),
                Settings::default().idle_timeout_ms,
            )?,
        };
        if file.views.is_empty() {
            return Err(ViewsError {
                line: None,
                view: None,
                field: Some("views".into()),
                message: "no views defined: add at least one [[views]] table".into(),
            });
        }
        let mut names = BTreeSet::new();
        let mut views = Vec::with_capacity(file.views.len());
        for v in file.views {
            let name = v.name.get_ref().clone();
            let at = |field: &str, span: std::ops::Range<usize>, message: String| ViewsError {
                line: Some(line_of(text, span.start)),
                view: Some(name.clone()),
                field: Some(field.into()),
                message,
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(at(
                    "name",
                    v.name.span(),
                    "must be non-empty lower-case letters, digits and `_`".into(),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(at("name", v.name.span(), "is defined twice".into()));
            }
            let size = ctx.view_duration(&name, "window", Some(&v.window), 0)?;
            let hop = ctx.view_duration(&name, "hop", v.hop.as_ref(), size)?;
            let windowing = Windowing::new(size, hop).map_err(|m| match &v.hop {
                Some(h) => at("hop", h.span(), m),
                None => at("window", v.window.span(), m),
            })?;
            let current =
                ctx.view_duration(&name, "current", v.current.as_ref(), default_current)?;
            let outdated =
                ctx.view_duration(&name, "outdated", v.outdated.as_ref(), default_outdated)?;
            let lateness = LatenessBounds::new(current, outdated).map_err(|m| {
                let span = v
                    .outdated
                    .as_ref()
                    .or(v.current.as_ref())
                    .map_or(v.name.span(), Spanned::span);
                at("outdated", span, m)
            })?;
            let ooo = ctx.view_duration(
                &name,
                "max_out_of_orderness",
                v.max_out_of_orderness.as_ref(),
                default_ooo,
            )?;
            let mut aggregates = Vec::new();
            for a in v.aggregates.get_ref() {
                let parsed = Aggregate::parse(a.get_ref()).ok_or_else(|| {
                    at(
                        "aggregates",
                        a.span(),
                        format!(
                            "unknown aggregate `{}` (known: {})",
                            a.get_ref(),
                            Aggregate::ALL.map(Aggregate::name).join(", ")
                        ),
                    )
                })?;
                if aggregates.contains(&parsed) {
                    return Err(at(
                        "aggregates",
                        a.span(),
                        format!("`{parsed}` is listed twice"),
                    ));
                }
                aggregates.push(parsed);
            }
            if aggregates.is_empty() {
                return Err(at(
                    "aggregates",
                    v.aggregates.span(),
                    "must list at least one aggregate".into(),
                ));
            }
            let mut group_by = Vec::new();
            for g in v.group_by.unwrap_or_default() {
                let key = g.get_ref();
                if key.is_empty() || group_by.contains(key) {
                    return Err(at(
                        "group_by",
                        g.span(),
                        format!("`{key}` is empty or repeated"),
                    ));
                }
                group_by.push(key.clone());
            }
            if let Some(e) = &v.expected_devices
                && *e.get_ref() == 0
            {
                return Err(at(
                    "expected_devices",
                    e.span(),
                    "must be at least 1 when given".into(),
                ));
            }
            views.push(ViewDef {
                name,
                description: v.description.unwrap_or_default(),
                metrics: v.metrics.unwrap_or_default(),
                windowing,
                group_by,
                aggregates,
                lateness,
                max_out_of_orderness_ms: ooo,
                expected_devices: v.expected_devices.map(Spanned::into_inner),
            });
        }
        Ok(Self { settings, views })
    }
}

impl fmt::Display for ViewDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: window {}",
            self.name,
            format_duration(self.windowing.size_ms)
        )?;
        if !self.windowing.is_tumbling() {
            write!(f, " every {}", format_duration(self.windowing.hop_ms))?;
        }
        write!(
            f,
            ", by [{}], {} (current <= {}, outdated <= {})",
            self.group_by.join(", "),
            self.aggregates
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", "),
            format_duration(self.lateness.current_ms),
            format_duration(self.lateness.outdated_ms),
        )
    }
}

struct Ctx<'a> {
    text: &'a str,
}

impl Ctx<'_> {
    fn duration(
        &self,
        view: Option<&str>,
        field: &str,
        value: Option<&Spanned<String>>,
        default: i64,
    ) -> Result<i64, ViewsError> {
        let Some(v) = value else { return Ok(default) };
        let ms = parse_duration(v.get_ref()).map_err(|message| ViewsError {
            line: Some(line_of(self.text, v.span().start)),
            view: view.map(str::to_string),
            field: Some(field.to_string()),
            message,
        })?;
        if ms <= 0 && !field.ends_with("current") {
            return Err(ViewsError {
                line: Some(line_of(self.text, v.span().start)),
                view: view.map(str::to_string),
                field: Some(field.to_string()),
                message: "must be greater than zero".into(),
            });
        }
        Ok(ms)
    }

    fn view_duration(
        &self,
        view: &str,
        field: &str,
        value: Option<&Spanned<String>>,
        default: i64,
    ) -> Result<i64, ViewsError> {
        self.duration(Some(view), field, value, default)
    }
}

/// The key assigned on the line holding `byte`, if that line is `key = ...`.
fn key_at(text: &str, byte: usize) -> Option<String> {
    let byte = byte.min(text.len());
    let start = text[..byte].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    plain.then(|| key.to_string())
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()[..byte.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    defaults: Option<DefaultsToml>,
    #[serde(default)]
    views: Vec<ViewToml>,
    /// Read by [`crate::detect::Detectors::parse`].
    #[serde(default, rename = "detectors")]
    _detectors: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefaultsToml {
    current: Option<Spanned<String>>,
    outdated: Option<Spanned<String>>,
    max_out_of_orderness: Option<Spanned<String>>,
    dedup_horizon: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewToml {
    name: Spanned<String>,
    description: Option<String>,
    metrics: Option<Vec<String>>,
    window: Spanned<String>,
    hop: Option<Spanned<String>>,
    group_by: Option<Vec<Spanned<String>>>,
    aggregates: Spanned<Vec<Spanned<String>>>,
    current: Option<Spanned<String>>,
    outdated: Option<Spanned<String>>,
    max_out_of_orderness: Option<Spanned<String>>,
    expected_devices: Option<Spanned<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[defaults]
current = "1m"

[[views]]
name = "occupancy"
window = "30m"
group_by = ["device_id"]
aggregates = ["mean", "max"]
expected_devices = 30
"#;

    #[test]
    fn parses_with_defaults() {
        let set = ViewSet::parse(GOOD).unwrap();
        let v = set.get("occupancy").unwrap();
        assert_eq!(v.windowing.size_ms, 1_800_000);
        assert!(v.windowing.is_tumbling());
        assert_eq!(v.lateness.outdated_ms, 3_600_000);
        assert_eq!(v.columns(), vec![Column::Mean, Column::Max]);
        assert_eq!(v.expected_devices, Some(30));
    }

    #[test]
    fn definitions_round_trip_through_their_encoding() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/views.toml"
        ))
        .unwrap();
        let mut views = ViewSet::parse(&text).unwrap().views;
        views.extend(ViewSet::parse(GOOD).unwrap().views);
        for v in &views {
            let mut w = Writer::new();
            v.encode(&mut w);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            assert_eq!(&ViewDef::decode(&mut r).unwrap(), v);
            r.finish().unwrap();
            // A cut-off definition is an error, not a panic.
            assert!(ViewDef::decode(&mut Reader::new(&bytes[..bytes.len() - 1])).is_err());
        }
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            (
                GOOD.replace("window = \"30m\"", "windw = \"30m\""),
                7,
                "windw",
            ),
            (GOOD.replace("\"30m\"", "\"30x\""), 7, "window"),
            (GOOD.replace("\"max\"", "\"maxx\""), 9, "aggregates"),
            (GOOD.replace("\"30m\"", "\"30m\"\nhop = \"7m\""), 8, "hop"),
            (
                GOOD.replace("current = \"1m\"", "current = 5"),
                3,
                "current",
            ),
        ];
        for (text, line, needle) in cases {
            let err = ViewSet::parse(&text).unwrap_err();
            assert_eq!(err.line, Some(line), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }
}
