//! The device simulator behind `braid simulate` and `braid up --simulate`.
//!
//! [`Fleet`] generates readings for one scenario, deterministically for a
//! seed: car parks reporting occupancy, home meters reporting power draw,
//! farm probes reporting soil moisture (tagged with their field). Chosen
//! shares of readings arrive out of order, outdated, historical or twice,
//! and a share carry an injected anomaly (a spike), so every path of the
//! speed and batch layers is exercised. [`run`] sends them at a chosen
//! rate, straight to Kafka through the ingest crate's `ReadingSink` or
//! over HTTP to an ingest gateway ([`send::Target`]), retrying what was not
//! acknowledged with the same readings, and can write every acknowledged
//! reading to a file for `braid verify`. [`replay`] sends the real CSV
//! files of `../shared/datasets` instead, with their times shifted to now
//! and sped up.

pub mod replay;
pub mod send;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use braid_core::Reading;
use tokio_util::sync::CancellationToken;

use crate::send::{Sender, Target};

/// Which kind of fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Car parks: `occupancy` of a few hundred spaces, every 30 s.
    Parking,
    /// Home meters: `power_w`, every 2 s.
    Home,
    /// Farm probes: `soil_moisture` in %, tagged `field`, every 10 s.
    Farm,
}

impl Scenario {
    /// Parses `parking`, `home` or `farm`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "parking" => Some(Self::Parking),
            "home" => Some(Self::Home),
            "farm" => Some(Self::Farm),
            _ => None,
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Self::Parking => "occupancy",
            Self::Home => "power_w",
            Self::Farm => "soil_moisture",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Parking => "carpark",
            Self::Home => "meter",
            Self::Farm => "probe",
        }
    }
}

/// Shares of readings (each in `[0, 1]`) that are delivered unusually.
#[derive(Clone, Copy, Debug)]
pub struct Shares {
    /// Stamped up to a minute in the past (out of order, still current).
    pub out_of_order: f64,
    /// Stamped 2 to 50 minutes in the past (outdated: late but applied).
    pub outdated: f64,
    /// Stamped 2 to 24 hours in the past (historical: left to batch).
    pub historical: f64,
    /// Sent twice (the second copy must be dropped).
    pub duplicate: f64,
    /// Carrying a spike far outside the device's normal range.
    pub anomaly: f64,
}

impl Default for Shares {
    fn default() -> Self {
        Self {
            out_of_order: 0.05,
            outdated: 0.01,
            historical: 0.002,
            duplicate: 0.01,
            anomaly: 0.001,
        }
    }
}

/// A deterministic fleet.
#[derive(Clone, Debug)]
pub struct Fleet {
    scenario: Scenario,
    devices: usize,
    shares: Shares,
    rng: u64,
    seq: Vec<u64>,
}

impl Fleet {
    /// `devices` devices of `scenario`, random choices from `seed`.
    pub fn new(scenario: Scenario, devices: usize, shares: Shares, seed: u64) -> Self {
        Self {
            scenario,
            devices: devices.max(1),
            shares,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            seq: vec![0; devices.max(1)],
        }
    }

    fn next_f64(&mut self) -> f64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The device's normal value at time `ts`: a daily cycle plus noise.
    fn value(&mut self, device: usize, ts: i64) -> f64 {
        let day = (ts.rem_euclid(86_400_000)) as f64 / 86_400_000.0;
        let phase = (day * std::f64::consts::TAU).sin();
        let noise = self.next_f64() - 0.5;
        let base = (device % 7) as f64;
        match self.scenario {
            Scenario::Parking => (200.0 + 150.0 * phase + 10.0 * noise + base * 20.0)
                .round()
                .max(0.0),
            Scenario::Home => {
                (400.0 + 300.0 * phase.max(0.0) + 80.0 * noise + base * 30.0).max(0.0)
            }
            Scenario::Farm => (35.0 - 5.0 * phase + 2.0 * noise + base).clamp(0.0, 100.0),
        }
    }

    /// The readings of one tick at wall time `now_ms`: one per device, with
    /// the configured shares delivered unusually. Duplicates follow their
    /// original directly.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Reading> {
        let mut out = Vec::with_capacity(self.devices + 4);
        for d in 0..self.devices {
            let roll = self.next_f64();
            let s = self.shares;
            let lag = if roll < s.historical {
                7_200_000 + (self.next_f64() * 79_200_000.0) as i64
            } else if roll < s.historical + s.outdated {
                120_000 + (self.next_f64() * 2_880_000.0) as i64
            } else if roll < s.historical + s.outdated + s.out_of_order {
                (self.next_f64() * 60_000.0) as i64
            } else {
                0
            };
            let ts = now_ms - lag;
            let mut value = self.value(d, ts);
            if self.next_f64() < s.anomaly {
                value *= 5.0 + 5.0 * self.next_f64();
            }
            self.seq[d] += 1;
            let mut tags = BTreeMap::new();
            if self.scenario == Scenario::Farm {
                tags.insert("field".to_string(), format!("field-{}", d % 4));
            }
            let r = Reading {
                device_id: format!("{}-{d:04}", self.scenario.prefix()),
                metric: self.scenario.metric().into(),
                ts,
                value,
                seq: Some(self.seq[d]),
                tags,
            };
            if self.next_f64() < s.duplicate {
                out.push(r.clone());
            }
            out.push(r);
        }
        out
    }
}

/// How to run a fleet.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where readings go.
    pub target: Target,
    /// The fleet's scenario.
    pub scenario: Scenario,
    /// Devices.
    pub devices: usize,
    /// Readings per second, over the whole fleet.
    pub rate: f64,
    /// Delivery shares.
    pub shares: Shares,
    /// Random seed.
    pub seed: u64,
    /// Write every acknowledged reading here (NDJSON), for `braid verify`.
    pub acked: Option<PathBuf>,
    /// Stop after this long (absent: at shutdown).
    pub duration: Option<Duration>,
}

/// Why the simulator stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Kafka could not be reached.
    #[error(transparent)]
    Sink(#[from] braid_ingest::SinkError),
    /// The acknowledged-readings file could not be written.
    #[error("{path}: {source}")]
    Acked {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A dataset could not be read.
    #[error("{0}")]
    Dataset(String),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sends the fleet's readings until `shutdown` or the configured
/// duration; returns readings acknowledged.
pub async fn run(config: SimConfig, shutdown: CancellationToken) -> Result<u64, SimError> {
    let mut sender = Sender::connect(&config.target, config.acked.as_deref()).await?;
    let mut fleet = Fleet::new(config.scenario, config.devices, config.shares, config.seed);
    let per_tick = config.devices.max(1) as f64;
    let period = Duration::from_secs_f64((per_tick / config.rate.max(0.001)).max(0.01));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stop_after(&shutdown, config.duration);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {
                let readings = fleet.tick(now_ms());
                sender.send(&readings, &stop).await?;
            }
        }
    }
    sender.finish()
}

/// A token cancelled with `shutdown` or after `duration`.
fn stop_after(shutdown: &CancellationToken, duration: Option<Duration>) -> CancellationToken {
    let stop = shutdown.child_token();
    if let Some(d) = duration {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_fleet() {
        let mut a = Fleet::new(Scenario::Farm, 20, Shares::default(), 7);
        let mut b = Fleet::new(Scenario::Farm, 20, Shares::default(), 7);
        for t in 0..50 {
            assert_eq!(
                a.tick(1_700_000_000_000 + t * 1000),
                b.tick(1_700_000_000_000 + t * 1000)
            );
        }
    }

    #[test]
    fn shares_show_up_and_readings_are_valid() {
        let shares = Shares {
            out_of_order: 0.1,
            outdated: 0.1,
            historical: 0.1,
            duplicate: 0.1,
            anomaly: 0.0,
        };
        let mut f = Fleet::new(Scenario::Parking, 100, shares, 1);
        let now = 1_700_000_000_000;
        let rs: Vec<Reading> = (0..20).flat_map(|t| f.tick(now + t * 30_000)).collect();
        let historical = rs.iter().filter(|r| r.ts < now - 3_600_000).count();
        let dups = rs.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(historical > 100 && historical < 300, "{historical}");
        assert!(dups > 100 && dups < 300, "{dups}");
        for r in &rs {
            r.validate(now + 20 * 30_000, &braid_core::Limits::default())
                .unwrap();
        }
    }
}
