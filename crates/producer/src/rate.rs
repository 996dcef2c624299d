//! Rate control: a token bucket expressed as a schedule (GCRA). Each send gets an intended time;
//! the sender waits until it. Intended times are what latency is measured from, so a stalled
//! producer cannot hide latency (coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A rate that can be changed while running (msg/s; 0 = unthrottled).
#[derive(Debug, Clone)]
pub struct SharedRate(Arc<AtomicU64>);

impl SharedRate {
    /// A rate in messages per second.
    pub fn new(per_sec: f64) -> Self {
        SharedRate(Arc::new(AtomicU64::new(per_sec.to_bits())))
    }
    /// Current rate.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    /// Changes the rate; takes effect on the next send.
    pub fn set(&self, per_sec: f64) {
        self.0.store(per_sec.to_bits(), Ordering::Relaxed)
    }
}

/// Token bucket of `burst` tokens refilled at the shared rate.
#[derive(Debug)]
pub struct Pacer {
    rate: SharedRate,
    burst: u32,
    /// Theoretical arrival time of the next send.
    next: Instant,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(rate: SharedRate, burst: u32, start: Instant) -> Self {
        Pacer {
            rate,
            burst: burst.max(1),
            next: start,
        }
    }

    /// Takes one token at `now`: returns the intended send time. If it lies in the future the
    /// caller must wait until then. With rate 0 the intended time is `now`.
    pub fn take(&mut self, now: Instant) -> Instant {
        let rate = self.rate.get();
        if rate <= 0.0 || !rate.is_finite() {
            self.next = now;
            return now;
        }
        // Rounded up to whole nanoseconds so the schedule never runs faster than the rate.
        let interval = Duration::from_nanos((1e9 / rate).ceil().max(1.0) as u64);
        // A full bucket lets `burst` sends through at once; older credit is forfeited.
        let earliest = now.checked_sub(interval * (self.burst - 1)).unwrap_or(now);
        if self.next < earliest {
            self.next = earliest;
        }
        let intended = self.next;
        self.next += interval;
        intended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schedule_spaces_sends_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(SharedRate::new(1000.0), 1, t0);
        let times: Vec<_> = (0..5).map(|_| p.take(t0)).collect();
        for (i, t) in times.iter().enumerate() {
            assert_eq!(*t - t0, Duration::from_millis(i as u64));
        }
    }

    #[test]
    fn burst_allows_catch_up_but_no_more() {
        let t0 = Instant::now();
        let mut p = Pacer::new(SharedRate::new(1000.0), 10, t0);
        let later = t0 + Duration::from_secs(1);
        // Idle for a second: only 10 sends may go immediately (intended <= later).
        let immediate = (0..100)
            .map(|_| p.take(later))
            .filter(|t| *t <= later)
            .count();
        assert_eq!(immediate, 10);
    }

    #[test]
    fn rate_changes_apply_to_the_next_send() {
        let t0 = Instant::now();
        let rate = SharedRate::new(1000.0);
        let mut p = Pacer::new(rate.clone(), 1, t0);
        p.take(t0);
        rate.set(100.0);
        let a = p.take(t0);
        let b = p.take(t0);
        assert_eq!(b - a, Duration::from_millis(10));
        rate.set(0.0);
        assert_eq!(p.take(t0), t0);
    }

    proptest! {
        /// Over any horizon, sends with intended time <= horizon never exceed rate*horizon+burst.
        #[test]
        fn never_exceeds_rate_plus_burst(rate in 10.0f64..100_000.0, burst in 1u32..1000, horizon_ms in 1u64..2000) {
            let t0 = Instant::now();
            let mut p = Pacer::new(SharedRate::new(rate), burst, t0);
            let horizon = t0 + Duration::from_millis(horizon_ms);
            let mut n = 0u64;
            while p.take(t0) <= horizon {
                n += 1;
                if n > 10_000_000 { break; }
            }
            let bound = rate * horizon_ms as f64 / 1000.0 + 1.0;
            prop_assert!((n as f64) <= bound + 1.0, "n={} bound={}", n, bound);
        }
    }
}
