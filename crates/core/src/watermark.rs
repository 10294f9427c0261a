//! Watermarks and window states.
//!
//! A partition's watermark is the largest event time it has delivered minus
//! the view's `max_out_of_orderness`. A view's watermark is the minimum over
//! partitions that are not idle (no data for `idle_timeout` of processing
//! time); when every partition is idle it is the maximum, so a quiet fleet
//! still closes its windows. Time is passed in, never read here.

use std::collections::BTreeMap;

/// Progress of each partition in event time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watermarks {
    partitions: BTreeMap<i32, Progress>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    max_ts: i64,
    last_active_ms: i64,
}

impl Watermarks {
    /// Notes a record of `partition` with event time `ts`, seen at `now_ms`.
    pub fn observe(&mut self, partition: i32, ts: i64, now_ms: i64) {
        let p = self.partitions.entry(partition).or_insert(Progress {
            max_ts: ts,
            last_active_ms: now_ms,
        });
        p.max_ts = p.max_ts.max(ts);
        p.last_active_ms = p.last_active_ms.max(now_ms);
    }

    /// Forgets a partition (revoked from this worker).
    pub fn remove(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// The largest event time `partition` delivered.
    pub fn max_event_ts(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).map(|p| p.max_ts)
    }

    /// The watermark of one partition.
    pub fn partition_watermark(&self, partition: i32, max_out_of_orderness_ms: i64) -> Option<i64> {
        self.max_event_ts(partition)
            .map(|ts| ts.saturating_sub(max_out_of_orderness_ms))
    }

    /// The view's watermark at `now_ms`.
    pub fn watermark(
        &self,
        now_ms: i64,
        max_out_of_orderness_ms: i64,
        idle_timeout_ms: i64,
    ) -> Option<i64> {
        let active = self
            .partitions
            .values()
            .filter(|p| now_ms.saturating_sub(p.last_active_ms) < idle_timeout_ms)
            .map(|p| p.max_ts)
            .min();
        active
            .or_else(|| self.partitions.values().map(|p| p.max_ts).max())
            .map(|ts| ts.saturating_sub(max_out_of_orderness_ms))
    }
}

/// How settled a window's numbers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowState {
    /// The watermark has not passed its end: more on-time data may come.
    Open,
    /// The watermark passed its end; late data may still change it.
    Closed,
    /// A batch run covers it completely and nothing is pending.
    Final,
}

impl WindowState {
    /// The state of a window ending at `end`. `batch_complete` is the
    /// serving layer's finding that a batch run covers the window with no
    /// speed contribution and no pending historical readings left.
    pub fn of(end: i64, watermark: Option<i64>, batch_complete: bool) -> Self {
        if batch_complete {
            Self::Final
        } else if watermark.is_some_and(|w| w >= end) {
            Self::Closed
        } else {
            Self::Open
        }
    }

    /// The name used in answers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Final => "final",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_active_partitions() {
        let mut w = Watermarks::default();
        w.observe(0, 1_000, 0);
        w.observe(1, 5_000, 0);
        w.observe(0, 900, 10);
        assert_eq!(w.partition_watermark(0, 100), Some(900));
        assert_eq!(w.watermark(10, 100, 60_000), Some(900));
        // Partition 0 goes idle; partition 1 keeps talking.
        w.observe(1, 6_000, 70_000);
        assert_eq!(w.watermark(70_000, 100, 60_000), Some(5_900));
        // Everyone idle: the maximum.
        assert_eq!(w.watermark(1_000_000, 100, 60_000), Some(5_900));
        w.remove(1);
        assert_eq!(w.watermark(1_000_000, 100, 60_000), Some(900));
    }

    #[test]
    fn window_states() {
        assert_eq!(WindowState::of(100, None, false), WindowState::Open);
        assert_eq!(WindowState::of(100, Some(99), false), WindowState::Open);
        assert_eq!(WindowState::of(100, Some(100), false), WindowState::Closed);
        assert_eq!(WindowState::of(100, Some(0), true), WindowState::Final);
    }
}
