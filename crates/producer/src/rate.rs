//! Rate control: a token bucket expressed as a schedule (GCRA). Each send gets an intended time;
//! the sender waits until it. Intended times are what latency is measured from, so a stalled
//! producer cannot hide latency (coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    burst: u64,
    /// Theoretical arrival time of the next send.
    next: Instant,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(rate: SharedRate, burst: u32, start: Instant) -> Self {
        Self::with_burst(rate, u64::from(burst), start)
    }

    /// A pacer whose bucket holds `burst` units (bytes, for a byte-rate bucket).
    pub fn with_burst(rate: SharedRate, burst: u64, start: Instant) -> Self {
        Pacer {
            rate,
            burst: burst.max(1),
            next: start,
        }
    }

    /// Takes one token at `now`: returns the intended send time. If it lies in the future the
    /// caller must wait until then. With rate 0 the intended time is `now`.
    pub fn take(&mut self, now: Instant) -> Instant {
        self.take_n(now, 1)
    }

    /// Takes `cost` tokens (e.g. a message's bytes) at `now`; see [`Pacer::take`]. A cost larger
    /// than the bucket is allowed: it simply pushes the schedule further out.
    pub fn take_n(&mut self, now: Instant, cost: u64) -> Instant {
        let rate = self.rate.get();
        if rate <= 0.0 || !rate.is_finite() {
            self.next = now;
            return now;
        }
        // Nanoseconds per token, kept fractional so high byte rates stay exact; each step is
        // rounded up so the schedule never runs faster than the rate.
        let per_token = 1e9 / rate;
        let step = |tokens: u64| Duration::from_nanos((per_token * tokens as f64).ceil() as u64);
        // A full bucket lets `burst` tokens through at once; older credit is forfeited.
        let earliest = now
            .checked_sub(step(self.burst.saturating_sub(1)))
            .unwrap_or(now);
        if self.next < earliest {
            self.next = earliest;
        }
        let intended = self.next;
        self.next += step(cost.max(1));
        intended
    }
}

/// The pacers of a run, shared by its sender threads: messages per second and, optionally,
/// bytes per second. A send waits for both.
#[derive(Debug)]
pub struct SharedPacer {
    messages: SharedRate,
    msg: Mutex<Pacer>,
    bytes: Option<Mutex<Pacer>>,
}

impl SharedPacer {
    /// Pacers starting at `start`; `bytes` is `(rate in bytes/s, burst in bytes)`.
    pub fn new(
        messages: SharedRate,
        burst: u32,
        bytes: Option<(SharedRate, u64)>,
        start: Instant,
    ) -> Self {
        SharedPacer {
            msg: Mutex::new(Pacer::new(messages.clone(), burst, start)),
            bytes: bytes.map(|(r, b)| Mutex::new(Pacer::with_burst(r, b, start))),
            messages,
        }
    }

    /// Intended send time of the next message, by the message rate.
    pub fn take_message(&self, now: Instant) -> Instant {
        // Unthrottled fast path: no schedule to keep, no lock.
        if self.messages.get() <= 0.0 {
            return now;
        }
        self.msg.lock().unwrap_or_else(|p| p.into_inner()).take(now)
    }

    /// Intended send time of `bytes` more bytes by the byte rate, when one is set.
    pub fn take_bytes(&self, now: Instant, bytes: u64) -> Option<Instant> {
        self.bytes.as_ref().map(|b| {
            b.lock()
                .unwrap_or_else(|p| p.into_inner())
                .take_n(now, bytes)
        })
    }
}

/// A rate profile over time: `1000..13000/60s` ramps linearly from 1,000 to 13,000 msg/s over
/// 60 s then holds; `1000,5000,10000@20s` holds each rate for 20 s, then holds the last.
#[derive(Debug, Clone, PartialEq)]
pub enum Ramp {
    /// Linear ramp.
    Linear {
        /// Rate at the start, msg/s.
        from: f64,
        /// Rate at the end and after, msg/s.
        to: f64,
        /// Ramp length.
        over: Duration,
    },
    /// Steps of equal length.
    Steps {
        /// Rates in order, msg/s.
        rates: Vec<f64>,
        /// Length of each step.
        every: Duration,
    },
}

/// Why a ramp specification does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("ramp {spec:?} is invalid: {reason} (examples: 1000..13000/60s, 1000,5000,10000@20s)")]
pub struct RampError {
    /// The text given.
    pub spec: String,
    /// What is wrong.
    pub reason: String,
}

impl std::str::FromStr for Ramp {
    type Err = RampError;
    fn from_str(s: &str) -> Result<Self, RampError> {
        let err = |reason: &str| RampError {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let rate = |t: &str| -> Result<f64, RampError> {
            let v: f64 = t
                .trim()
                .replace('_', "")
                .parse()
                .map_err(|_| err(&format!("{t:?} is not a rate in msg/s")))?;
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(err("rates must be >= 0"))
            }
        };
        let dur = |t: &str| -> Result<Duration, RampError> {
            let d = humantime::parse_duration(t.trim())
                .map_err(|e| err(&format!("{t:?} is not a duration: {e}")))?;
            if d.is_zero() {
                Err(err("the duration must be more than zero"))
            } else {
                Ok(d)
            }
        };
        if let Some((range, over)) = s.split_once('/') {
            let (from, to) = range
                .split_once("..")
                .ok_or_else(|| err("a linear ramp is FROM..TO/DURATION"))?;
            Ok(Ramp::Linear {
                from: rate(from)?,
                to: rate(to)?,
                over: dur(over)?,
            })
        } else if let Some((list, every)) = s.split_once('@') {
            let rates = list.split(',').map(rate).collect::<Result<Vec<_>, _>>()?;
            Ok(Ramp::Steps {
                rates,
                every: dur(every)?,
            })
        } else {
            Err(err("expected FROM..TO/DURATION or R1,R2,...@STEP"))
        }
    }
}

impl Ramp {
    /// The rate `elapsed` after the start.
    pub fn rate_at(&self, elapsed: Duration) -> f64 {
        match self {
            Ramp::Linear { from, to, over } => {
                let f = (elapsed.as_secs_f64() / over.as_secs_f64()).min(1.0);
                from + (to - from) * f
            }
            Ramp::Steps { rates, every } => {
                let i = (elapsed.as_secs_f64() / every.as_secs_f64()) as usize;
                rates
                    .get(i.min(rates.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0.0)
            }
        }
    }

    /// Rate at the start.
    pub fn initial(&self) -> f64 {
        self.rate_at(Duration::ZERO)
    }

    /// Drives `rate` along the profile until `done` is set or someone else changes the rate
    /// (e.g. `POST /rate`), which ends the ramp. Call on a thread of its own.
    pub fn drive(&self, rate: &SharedRate, start: Instant, done: &std::sync::atomic::AtomicBool) {
        let mut last = self.initial();
        rate.set(last);
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            if rate.get().to_bits() != last.to_bits() {
                tracing::info!(rate = rate.get(), "rate changed by hand; the ramp ends");
                return;
            }
            last = self.rate_at(start.elapsed());
            rate.set(last);
        }
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

    #[test]
    fn byte_bucket_spaces_by_cost() {
        let t0 = Instant::now();
        // 1,000 bytes/s, bucket of one byte: a 500 B message uses half a second.
        let mut p = Pacer::with_burst(SharedRate::new(1000.0), 1, t0);
        assert_eq!(p.take_n(t0, 500), t0);
        assert_eq!(p.take_n(t0, 500) - t0, Duration::from_millis(500));
        assert_eq!(p.take_n(t0, 1) - t0, Duration::from_millis(1000));
    }

    #[test]
    fn shared_pacer_waits_for_the_stricter_bucket() {
        let t0 = Instant::now();
        let p = SharedPacer::new(
            SharedRate::new(1000.0),
            1,
            Some((SharedRate::new(10_000.0), 1)),
            t0,
        );
        assert_eq!(p.take_message(t0), t0);
        assert_eq!(p.take_bytes(t0, 100), Some(t0));
        // 100 B at 10,000 B/s is 10 ms, stricter than the 1 ms of 1,000 msg/s.
        assert_eq!(p.take_message(t0) - t0, Duration::from_millis(1));
        assert_eq!(
            p.take_bytes(t0, 100).unwrap() - t0,
            Duration::from_millis(10)
        );
        let unthrottled = SharedPacer::new(SharedRate::new(0.0), 1, None, t0);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(unthrottled.take_message(later), later);
        assert_eq!(unthrottled.take_bytes(later, 100), None);
    }

    #[test]
    fn ramps_parse_and_interpolate() {
        let r: Ramp = "1000..13000/60s".parse().unwrap();
        assert_eq!(r.rate_at(Duration::ZERO), 1000.0);
        assert_eq!(r.rate_at(Duration::from_secs(30)), 7000.0);
        assert_eq!(r.rate_at(Duration::from_secs(600)), 13000.0);
        let s: Ramp = "1000,5000,10000@20s".parse().unwrap();
        assert_eq!(s.rate_at(Duration::from_secs(19)), 1000.0);
        assert_eq!(s.rate_at(Duration::from_secs(20)), 5000.0);
        assert_eq!(s.rate_at(Duration::from_secs(45)), 10000.0);
        assert_eq!(s.rate_at(Duration::from_secs(4000)), 10000.0);
        for bad in [
            "",
            "1000",
            "a..b/1s",
            "1..2/0s",
            "1,x@5s",
            "1..2/forever",
            "-5..3/1s",
        ] {
            assert!(bad.parse::<Ramp>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_hand_set_rate_ends_the_ramp() {
        let r: Ramp = "10..20/1h".parse().unwrap();
        let rate = SharedRate::new(0.0);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| r.drive(&rate, Instant::now(), &done));
            // Wait until the ramp has set its initial rate, then override it.
            while rate.get() < 10.0 {
                std::thread::yield_now();
            }
            rate.set(500.0);
            // drive() returns by itself: `done` is never set.
            let _ = h.join();
        });
        assert_eq!(rate.get(), 500.0);
        assert!(!done.load(Ordering::Relaxed));
    }

    proptest! {
        /// A ramp's rate always lies between its smallest and largest configured rate.
        #[test]
        fn ramp_stays_within_its_bounds(from in 0.0f64..1e6, to in 0.0f64..1e6, secs in 1u64..600, at_ms in 0u64..2_000_000) {
            let r = Ramp::Linear { from, to, over: Duration::from_secs(secs) };
            let v = r.rate_at(Duration::from_millis(at_ms));
            prop_assert!(v >= from.min(to) - 1e-6 && v <= from.max(to) + 1e-6);
        }

        /// Byte pacing: sends with intended time <= horizon carry at most rate*horizon + burst
        /// + one message of bytes.
        #[test]
        fn byte_bucket_never_exceeds_rate_plus_burst(rate in 1_000.0f64..10_000_000.0, burst in 1u64..100_000, size in 1u64..5_000, horizon_ms in 1u64..2000) {
            let t0 = Instant::now();
            let mut p = Pacer::with_burst(SharedRate::new(rate), burst, t0);
            let horizon = t0 + Duration::from_millis(horizon_ms);
            let mut bytes = 0u64;
            while p.take_n(t0, size) <= horizon {
                bytes += size;
                if bytes > 1_000_000_000 { break; }
            }
            let bound = rate * horizon_ms as f64 / 1000.0 + burst as f64 + size as f64;
            prop_assert!((bytes as f64) <= bound + 1.0, "bytes={} bound={}", bytes, bound);
        }

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
