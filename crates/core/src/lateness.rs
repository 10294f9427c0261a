//! Lateness classes: how far behind its event time a reading arrived.
//!
//! Arrival lag is `ingest_ts - ts`, both stored in the record, so a replay
//! classifies every reading the same way. `current` and `outdated` readings
//! are applied by the speed layer; `historical` ones are left to the batch
//! layer and counted as pending until a batch run includes them.

/// The two bounds of a view, in milliseconds of lag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LatenessBounds {
    /// Lag up to this is current.
    pub current_ms: i64,
    /// Lag up to this (and over `current_ms`) is outdated; more is
    /// historical.
    pub outdated_ms: i64,
}

/// The class of one reading for one view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LatenessClass {
    /// On time: applied by the speed layer.
    Current,
    /// Late but within allowed lateness: applied by the speed layer.
    Outdated,
    /// Too late for the speed layer: left to the next batch run.
    Historical,
}

impl LatenessBounds {
    /// Checks `0 <= current <= outdated`.
    pub fn new(current_ms: i64, outdated_ms: i64) -> Result<Self, String> {
        if current_ms < 0 || outdated_ms < current_ms {
            return Err(format!(
                "needs 0 <= current ({current_ms} ms) <= outdated ({outdated_ms} ms)"
            ));
        }
        Ok(Self {
            current_ms,
            outdated_ms,
        })
    }

    /// The class of a reading with event time `ts` accepted at `ingest_ts`.
    /// Readings stamped ahead of the clock (negative lag) are current.
    pub fn classify(&self, ts: i64, ingest_ts: i64) -> LatenessClass {
        let lag = ingest_ts.saturating_sub(ts);
        if lag <= self.current_ms {
            LatenessClass::Current
        } else if lag <= self.outdated_ms {
            LatenessClass::Outdated
        } else {
            LatenessClass::Historical
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_at_the_bounds() {
        let b = LatenessBounds::new(60_000, 3_600_000).unwrap();
        assert_eq!(b.classify(0, 60_000), LatenessClass::Current);
        assert_eq!(b.classify(0, 60_001), LatenessClass::Outdated);
        assert_eq!(b.classify(0, 3_600_000), LatenessClass::Outdated);
        assert_eq!(b.classify(0, 3_600_001), LatenessClass::Historical);
        assert_eq!(b.classify(10, 0), LatenessClass::Current);
        assert!(LatenessBounds::new(10, 5).is_err());
    }
}
