//! Small generated fixtures. Real third-party data lives in
//! `../shared/datasets` and is read from there, never copied in.

use std::collections::BTreeMap;

use braid_core::Reading;

/// One reading with no seq and no tags.
pub fn reading(device: &str, metric: &str, ts: i64, value: f64) -> Reading {
    Reading {
        device_id: device.to_string(),
        metric: metric.to_string(),
        ts,
        value,
        seq: None,
        tags: BTreeMap::new(),
    }
}

/// `per_device` readings from each of `devices` devices, every `step_ms`
/// from `start_ms`, with per-device sequence numbers and a value that
/// encodes device and sequence, so a lost or doubled reading is visible in
/// sums as well as counts.
pub fn fleet(devices: usize, per_device: usize, start_ms: i64, step_ms: i64) -> Vec<Reading> {
    let mut out = Vec::with_capacity(devices * per_device);
    for seq in 0..per_device {
        for d in 0..devices {
            out.push(Reading {
                device_id: format!("device-{d:04}"),
                metric: "value".into(),
                ts: start_ms + seq as i64 * step_ms,
                value: (d * 1_000_000 + seq) as f64,
                seq: Some(seq as u64),
                tags: BTreeMap::new(),
            });
        }
    }
    out
}
