//! Replaying the real sensor data of `../shared/datasets` as a live fleet.
//!
//! Two files are known by their header, each with a fixed mapping:
//!
//! - `birmingham-parking.csv` (`SystemCodeNumber,Capacity,Occupancy,LastUpdated`):
//!   device = the car park's code, metric `occupancy`, value = Occupancy,
//!   tag `capacity`, event time = LastUpdated read as Europe/London local
//!   time, `seq` = the car park's row number in time order.
//! - `wsn-single-hop.csv` (`reading,mote_id,indoor,humidity,temperature,label`):
//!   device `mote-<id>`, two readings per row (metrics `humidity` and
//!   `temperature`), tag `indoor`, event time = 2010-05-09T00:00:00Z + 5 s
//!   × reading (the dataset's own description), `seq` = reading.
//!
//! The replay keeps the data's order and spacing, shifted so that its
//! first reading is now and sped up by a factor: with `--speedup 600`, the
//! car parks' half-hourly readings arrive every 3 s, stamped 3 s apart.
//! Real quirks stay in (occupancy above capacity, negative occupancy, gaps
//! of days): the data is replayed as it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_core::Reading;
use chrono::{NaiveDateTime, TimeZone};
use tokio_util::sync::CancellationToken;

use crate::send::{Sender, Target};
use crate::{SimError, now_ms};

/// A known dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataset {
    /// Birmingham car-park occupancy.
    Parking,
    /// The single-hop sensor network's motes.
    Wsn,
}

const PARKING: [&str; 4] = ["SystemCodeNumber", "Capacity", "Occupancy", "LastUpdated"];
const WSN: [&str; 6] = [
    "reading",
    "mote_id",
    "indoor",
    "humidity",
    "temperature",
    "label",
];
/// 2010-05-09T00:00:00Z.
const WSN_START_MS: i64 = 1_273_363_200_000;

impl Dataset {
    /// Recognises a dataset by its header.
    pub fn detect(header: &csv::StringRecord) -> Option<Self> {
        let h: Vec<&str> = header.iter().collect();
        if h == PARKING {
            Some(Self::Parking)
        } else if h == WSN {
            Some(Self::Wsn)
        } else {
            None
        }
    }
}

/// How to replay a file.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Where readings go.
    pub target: Target,
    /// The CSV file.
    pub file: PathBuf,
    /// How many times faster than the data's own pace.
    pub speedup: f64,
    /// Write every acknowledged reading here (NDJSON), for `braid verify`.
    pub acked: Option<PathBuf>,
    /// Stop after this long (absent: at the end of the file or shutdown).
    pub duration: Option<Duration>,
}

/// Reads a dataset into readings with their original event times, in time
/// order (ties in file order).
pub fn load(path: &Path) -> Result<(Dataset, Vec<Reading>), SimError> {
    let bad = |line: u64, what: String| {
        SimError::Dataset(format!("{} line {line}: {what}", path.display()))
    };
    let mut rdr = csv::Reader::from_path(path)
        .map_err(|e| SimError::Dataset(format!("{}: {e}", path.display())))?;
    let header = rdr
        .headers()
        .map_err(|e| SimError::Dataset(format!("{}: {e}", path.display())))?
        .clone();
    let dataset = Dataset::detect(&header).ok_or_else(|| {
        SimError::Dataset(format!(
            "{}: unknown header `{}`: replay knows {} and {}",
            path.display(),
            header.iter().collect::<Vec<_>>().join(","),
            PARKING.join(","),
            WSN.join(",")
        ))
    })?;
    let mut out = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let row = row.map_err(|e| bad(line, e.to_string()))?;
        let field = |k: usize| row.get(k).unwrap_or_default().trim();
        let number = |k: usize, name: &str| {
            field(k)
                .parse::<f64>()
                .map_err(|_| bad(line, format!("{name} `{}` is not a number", field(k))))
        };
        match dataset {
            Dataset::Parking => {
                let local = NaiveDateTime::parse_from_str(field(3), "%Y-%m-%d %H:%M:%S")
                    .map_err(|e| bad(line, format!("LastUpdated `{}`: {e}", field(3))))?;
                let ts = chrono_tz::Europe::London
                    .from_local_datetime(&local)
                    .earliest()
                    .ok_or_else(|| {
                        bad(
                            line,
                            format!("LastUpdated `{}` does not exist in Europe/London", field(3)),
                        )
                    })?
                    .timestamp_millis();
                out.push(Reading {
                    device_id: field(0).to_string(),
                    metric: "occupancy".into(),
                    ts,
                    value: number(2, "Occupancy")?,
                    seq: None,
                    tags: [("capacity".to_string(), field(1).to_string())].into(),
                });
            }
            Dataset::Wsn => {
                let reading: i64 = field(0).parse().map_err(|_| {
                    bad(
                        line,
                        format!("reading `{}` is not a whole number", field(0)),
                    )
                })?;
                for (metric, k) in [("humidity", 3), ("temperature", 4)] {
                    out.push(Reading {
                        device_id: format!("mote-{}", field(1)),
                        metric: metric.into(),
                        ts: WSN_START_MS + 5_000 * reading,
                        value: number(k, metric)?,
                        seq: Some(reading as u64),
                        tags: [("indoor".to_string(), field(2).to_string())].into(),
                    });
                }
            }
        }
    }
    out.sort_by_key(|r| r.ts);
    if dataset == Dataset::Parking {
        let mut seq = std::collections::HashMap::<String, u64>::new();
        for r in &mut out {
            let n = seq.entry(r.device_id.clone()).or_default();
            *n += 1;
            r.seq = Some(*n);
        }
    }
    Ok((dataset, out))
}

/// Shifts `readings` (in time order) so the first is at `start_ms`, the
/// spacing divided by `speedup`.
pub fn shift(readings: &mut [Reading], start_ms: i64, speedup: f64) {
    let Some(t0) = readings.first().map(|r| r.ts) else {
        return;
    };
    let speedup = speedup.max(f64::MIN_POSITIVE);
    for r in readings {
        r.ts = start_ms + ((r.ts - t0) as f64 / speedup) as i64;
    }
}

/// Replays the file until its end, the configured duration or `shutdown`;
/// returns readings acknowledged.
pub async fn replay(config: ReplayConfig, shutdown: CancellationToken) -> Result<u64, SimError> {
    let file = config.file.clone();
    let (dataset, mut readings) = tokio::task::spawn_blocking(move || load(&file))
        .await
        .map_err(|e| SimError::Dataset(e.to_string()))??;
    tracing::info!(
        ?dataset,
        readings = readings.len(),
        speedup = config.speedup,
        "replaying"
    );
    let mut sender = Sender::connect(&config.target, config.acked.as_deref()).await?;
    shift(&mut readings, now_ms(), config.speedup);
    let stop = crate::stop_after(&shutdown, config.duration);
    let mut next = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while next < readings.len() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {
                let now = now_ms();
                let due = readings[next..].partition_point(|r| r.ts <= now);
                // One request carries at most 1,000 readings.
                for chunk in readings[next..next + due].chunks(1000) {
                    sender.send(chunk, &stop).await?;
                }
                next += due;
            }
        }
    }
    sender.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/datasets")
            .join(name)
    }

    #[test]
    fn the_parking_data_reads_with_its_mapping() {
        let (d, rs) = load(&dataset("birmingham-parking.csv")).unwrap();
        assert_eq!(d, Dataset::Parking);
        assert_eq!(rs.len(), 35_717);
        // The first row in time: BHMBCCMKT01, 61 of 577, 2016-10-04 07:59:42
        // London summer time (UTC+1).
        let first = rs.iter().find(|r| r.device_id == "BHMBCCMKT01").unwrap();
        assert_eq!(first.ts, 1_475_564_382_000);
        assert_eq!(first.value, 61.0);
        assert_eq!(first.tags["capacity"], "577");
        assert_eq!(first.seq, Some(1));
        assert!(rs.windows(2).all(|w| w[0].ts <= w[1].ts));
        for r in &rs {
            r.validate(r.ts, &braid_core::Limits::default()).unwrap();
        }
    }

    #[test]
    fn the_motes_give_two_readings_a_row() {
        let (d, rs) = load(&dataset("wsn-single-hop.csv")).unwrap();
        assert_eq!(d, Dataset::Wsn);
        assert_eq!(rs.len(), 2 * 18_914);
        let r = &rs[0];
        assert_eq!(
            (r.device_id.as_str(), r.metric.as_str()),
            ("mote-1", "humidity")
        );
        assert_eq!(
            (r.ts, r.value, r.seq),
            (WSN_START_MS + 5_000, 45.93, Some(1))
        );
        assert_eq!(rs[1].metric, "temperature");
        assert_eq!(rs[1].value, 27.97);
    }

    #[test]
    fn a_replay_keeps_order_and_divides_the_spacing() {
        let (_, mut rs) = load(&dataset("birmingham-parking.csv")).unwrap();
        let span = rs.last().unwrap().ts - rs[0].ts;
        shift(&mut rs, 1_000, 600.0);
        assert_eq!(rs[0].ts, 1_000);
        assert_eq!(rs.last().unwrap().ts - 1_000, (span as f64 / 600.0) as i64);
        assert!(rs.windows(2).all(|w| w[0].ts <= w[1].ts));
    }

    #[test]
    fn an_unknown_file_is_named_with_what_replay_knows() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.csv");
        std::fs::write(&f, "a,b\n1,2\n").unwrap();
        let e = load(&f).unwrap_err().to_string();
        assert!(
            e.contains("unknown header `a,b`") && e.contains("SystemCodeNumber"),
            "{e}"
        );
    }
}
