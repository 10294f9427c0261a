//! Window assignment: which event-time windows a reading falls in.
//!
//! Windows are aligned to the Unix epoch: a tumbling window of size `s`
//! starts at multiples of `s`; a hopping window of size `s` and hop `h`
//! (`h` divides `s`) starts at multiples of `h`, so a reading falls in
//! `s / h` windows. Times before 1970 use floor division, so they align too.

/// Window size and hop, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Windowing {
    /// Length of each window.
    pub size_ms: i64,
    /// Distance between window starts; equal to `size_ms` when tumbling.
    pub hop_ms: i64,
}

/// One window, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowBounds {
    /// First millisecond inside.
    pub start: i64,
    /// First millisecond after.
    pub end: i64,
}

impl Windowing {
    /// Checks that the size is positive and the hop divides it.
    pub fn new(size_ms: i64, hop_ms: i64) -> Result<Self, String> {
        if size_ms <= 0 || hop_ms <= 0 {
            return Err("window and hop must be greater than zero".into());
        }
        if hop_ms > size_ms || size_ms % hop_ms != 0 {
            return Err(format!(
                "the hop ({hop_ms} ms) must divide the window size ({size_ms} ms)"
            ));
        }
        Ok(Self { size_ms, hop_ms })
    }

    /// A tumbling window.
    pub fn tumbling(size_ms: i64) -> Self {
        Self {
            size_ms,
            hop_ms: size_ms,
        }
    }

    /// Whether windows do not overlap.
    pub fn is_tumbling(&self) -> bool {
        self.size_ms == self.hop_ms
    }

    /// Windows per reading.
    pub fn windows_per_reading(&self) -> usize {
        (self.size_ms / self.hop_ms) as usize
    }

    /// The windows containing `ts`, latest start first.
    pub fn assign(&self, ts: i64) -> impl Iterator<Item = WindowBounds> + use<> {
        let last_start = ts.div_euclid(self.hop_ms) * self.hop_ms;
        let (size, hop) = (self.size_ms, self.hop_ms);
        (0..self.windows_per_reading() as i64).map(move |k| {
            let start = last_start - k * hop;
            WindowBounds {
                start,
                end: start + size,
            }
        })
    }

    /// The window that starts at `start`.
    pub fn at(&self, start: i64) -> WindowBounds {
        WindowBounds {
            start,
            end: start + self.size_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_and_hopping() {
        let t = Windowing::tumbling(10);
        assert_eq!(
            t.assign(25).collect::<Vec<_>>(),
            vec![WindowBounds { start: 20, end: 30 }]
        );
        assert_eq!(t.assign(-1).next().unwrap().start, -10);
        let h = Windowing::new(30, 10).unwrap();
        let starts: Vec<i64> = h.assign(25).map(|w| w.start).collect();
        assert_eq!(starts, vec![20, 10, 0]);
        for w in h.assign(25) {
            assert!(w.start <= 25 && 25 < w.end);
        }
        assert!(Windowing::new(30, 7).is_err());
        assert!(Windowing::new(0, 0).is_err());
    }
}
