//! Latency samples and what the table shows of them. Pure.

use std::time::Duration;

/// Latency samples of one phase, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    micros: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        self.micros
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Adds all samples of `other`.
    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
        self.sorted = false;
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// The `q` quantile (0.0..=1.0) by the nearest-rank method; `None` without samples.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        if self.micros.is_empty() {
            return None;
        }
        if !self.sorted {
            self.micros.sort_unstable();
            self.sorted = true;
        }
        let rank = (q.clamp(0.0, 1.0) * self.micros.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.micros.len()) - 1;
        Some(Duration::from_micros(self.micros[index]))
    }
}

/// What a load phase measured.
#[derive(Clone, Debug)]
pub struct LoadSummary {
    /// Completed operations per second.
    pub ops_per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Operations that failed (not counted in the throughput).
    pub errors: u64,
}

impl LoadSummary {
    /// Summarises `latencies` of operations completed in `elapsed`.
    pub fn new(mut latencies: Latencies, elapsed: Duration, errors: u64) -> LoadSummary {
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        LoadSummary {
            ops_per_sec: latencies.len() as f64 / secs,
            p50: latencies.quantile(0.50).unwrap_or_default(),
            p99: latencies.quantile(0.99).unwrap_or_default(),
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut l = Latencies::default();
        assert_eq!(l.quantile(0.5), None);
        for ms in (1..=100).rev() {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.quantile(0.50), Some(Duration::from_millis(50)));
        assert_eq!(l.quantile(0.99), Some(Duration::from_millis(99)));
        assert_eq!(l.quantile(1.0), Some(Duration::from_millis(100)));
        assert_eq!(l.quantile(0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn throughput_counts_completed_operations_per_second() {
        let mut l = Latencies::default();
        for _ in 0..500 {
            l.record(Duration::from_millis(2));
        }
        let s = LoadSummary::new(l, Duration::from_secs(2), 3);
        assert!((s.ops_per_sec - 250.0).abs() < 1e-9);
        assert_eq!((s.p50, s.errors), (Duration::from_millis(2), 3));
    }
}
