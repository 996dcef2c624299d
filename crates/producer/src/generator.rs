//! Synthetic telemetry: Pareto-skewed codes over a truck population, ~200 B JSON, seedable.

use fleetstream_core::{Code, MAX_EVENT_BYTES};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::Write;

/// How codes are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CodeWeights {
    /// Zipf over `codes` (first is hottest) with this exponent.
    Zipf {
        /// Exponent s: weight of rank k is k^-s.
        exponent: f64,
    },
    /// Zipf whose exponent is fitted so the hottest `hot_fraction` of codes carry `hot_share`
    /// of the traffic (0.2 and 0.8: the notes' 80/20). The default.
    Pareto {
        /// Fraction of codes that are hot, e.g. 0.2.
        hot_fraction: f64,
        /// Share of traffic they carry, e.g. 0.8.
        hot_share: f64,
    },
    /// Explicit weights, one per code.
    Explicit(Vec<f64>),
}

/// Generator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Codes, hottest first. Default 300..=319 (so 300-303 are the hot 20%).
    pub codes: Vec<u32>,
    /// Code distribution. Default Pareto 80/20.
    pub weights: CodeWeights,
    /// Number of trucks. Default 5,000.
    pub trucks: u32,
    /// RNG seed: the same seed gives the same events. Default 42.
    pub seed: u64,
    /// Fraction of events made malformed on purpose, in `[0, 1]`, cycling through every
    /// [`PoisonKind`]. Exact, not random: after `n` events `floor(n * poison_rate)` were poison.
    /// Default 0 (none).
    #[serde(default)]
    pub poison_rate: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            codes: (300..320).collect(),
            weights: CodeWeights::Pareto {
                hot_fraction: 0.2,
                hot_share: 0.8,
            },
            trucks: 5_000,
            seed: 42,
            poison_rate: 0.0,
        }
    }
}

/// Why a generator configuration is invalid (names the key).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("generator setting `{key}` is invalid: {reason}")]
pub struct GeneratorError {
    /// Key at fault.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    (1..=n).map(|k| (k as f64).powf(-s)).collect()
}

/// Fits a Zipf exponent so the top `hot_fraction` of `n` ranks carry `hot_share` (bisection).
pub fn fit_zipf_exponent(n: usize, hot_fraction: f64, hot_share: f64) -> f64 {
    let hot = ((n as f64 * hot_fraction).round() as usize).clamp(1, n);
    let share = |s: f64| {
        let w = zipf_weights(n, s);
        w[..hot].iter().sum::<f64>() / w.iter().sum::<f64>()
    };
    let (mut lo, mut hi) = (0.0, 20.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if share(mid) < hot_share {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

impl GeneratorConfig {
    /// Normalised weights per code, after validation.
    pub fn resolved_weights(&self) -> Result<Vec<f64>, GeneratorError> {
        if self.codes.is_empty() {
            return Err(GeneratorError {
                key: "codes",
                reason: "must list at least one code".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.poison_rate) {
            return Err(GeneratorError {
                key: "poison_rate",
                reason: format!("must be a fraction in [0, 1], got {}", self.poison_rate),
            });
        }
        if self.trucks == 0 {
            return Err(GeneratorError {
                key: "trucks",
                reason: "must be at least 1".into(),
            });
        }
        let raw = match &self.weights {
            CodeWeights::Zipf { exponent } if exponent.is_finite() && *exponent >= 0.0 => {
                zipf_weights(self.codes.len(), *exponent)
            }
            CodeWeights::Zipf { .. } => {
                return Err(GeneratorError {
                    key: "weights.zipf.exponent",
                    reason: "must be a finite number >= 0".into(),
                })
            }
            CodeWeights::Pareto {
                hot_fraction,
                hot_share,
            } if (0.0..=1.0).contains(hot_fraction)
                && (0.0..1.0).contains(hot_share)
                && *hot_share > 0.0 =>
            {
                zipf_weights(
                    self.codes.len(),
                    fit_zipf_exponent(self.codes.len(), *hot_fraction, *hot_share),
                )
            }
            CodeWeights::Pareto { .. } => {
                return Err(GeneratorError {
                    key: "weights.pareto",
                    reason: "hot_fraction must be in [0,1] and hot_share in (0,1)".into(),
                })
            }
            CodeWeights::Explicit(w) => {
                if w.len() != self.codes.len() {
                    return Err(GeneratorError {
                        key: "weights.explicit",
                        reason: format!("{} weights for {} codes", w.len(), self.codes.len()),
                    });
                }
                if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
                    return Err(GeneratorError {
                        key: "weights.explicit",
                        reason: "weights must be >= 0 with a positive sum".into(),
                    });
                }
                w.clone()
            }
        };
        let total: f64 = raw.iter().sum();
        Ok(raw.into_iter().map(|w| w / total).collect())
    }
}

/// Writes `v` in decimal, zero-padded to at least `width` digits.
fn padded(out: &mut Vec<u8>, v: u64, width: usize) {
    fleetstream_core::digits::push_decimal(out, v, width);
}

/// Writes `v / 10^decimals` with exactly `decimals` decimals (as `{:.N}` would).
fn fixed(out: &mut Vec<u8>, v: i64, decimals: u32) {
    if v < 0 {
        out.push(b'-');
    }
    let a = v.unsigned_abs();
    let scale = 10u64.pow(decimals);
    padded(out, a / scale, 1);
    out.push(b'.');
    padded(out, a % scale, decimals as usize);
}

/// Produces events into a caller's buffer; no allocation per event.
pub struct Generator {
    rng: SmallRng,
    codes: Vec<u32>,
    cumulative: Vec<f64>,
    /// Per-truck sequence, indexed by the truck's place in this generator's shard.
    truck_seq: Vec<u64>,
    truck_first: usize,
    truck_stride: usize,
    truck_id: Vec<u8>,
    poison_rate: f64,
    /// Events drawn so far (counted only when poisoning).
    events: u64,
    /// Poison events made so far.
    poisoned: u64,
}

/// A malformed event the generator makes on purpose (see [`GeneratorConfig::poison_rate`]).
/// The first four have no extractable code, so the producer rejects them; the last two have a
/// valid code and are sent, for the workers to dead-letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoisonKind {
    /// Not JSON at all (an event cut off before its code's value).
    BadJson,
    /// JSON without `codigo`.
    MissingCode,
    /// `codigo` is a word, not a number.
    NonNumericCode,
    /// Invalid UTF-8 bytes where the code should be.
    InvalidUtf8,
    /// A valid event padded past [`MAX_EVENT_BYTES`], code intact.
    Oversize,
    /// Valid code, but required fields missing.
    SchemaInvalid,
}

impl PoisonKind {
    /// Every kind, in the order the generator cycles through them.
    pub const ALL: [PoisonKind; 6] = [
        PoisonKind::BadJson,
        PoisonKind::MissingCode,
        PoisonKind::NonNumericCode,
        PoisonKind::InvalidUtf8,
        PoisonKind::Oversize,
        PoisonKind::SchemaInvalid,
    ];

    /// Whether the producer can extract a code from this kind (and therefore sends it).
    pub fn has_code(self) -> bool {
        matches!(self, PoisonKind::Oversize | PoisonKind::SchemaInvalid)
    }

    /// Snake-case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PoisonKind::BadJson => "bad_json",
            PoisonKind::MissingCode => "missing_code",
            PoisonKind::NonNumericCode => "non_numeric_code",
            PoisonKind::InvalidUtf8 => "invalid_utf8",
            PoisonKind::Oversize => "oversize",
            PoisonKind::SchemaInvalid => "schema_invalid",
        }
    }
}

/// What [`Generator::next`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    /// The code written into the event, when it has a valid one (a hint: the send loop may
    /// skip extracting it again).
    pub code: Option<Code>,
    /// Which poison this is, if any.
    pub poison: Option<PoisonKind>,
}

impl Generator {
    /// Builds a generator.
    pub fn new(config: &GeneratorConfig) -> Result<Self, GeneratorError> {
        Self::shard(config, 0, 1)
    }

    /// Generator `index` of `shards` (one per sender thread): it draws only the trucks `t` with
    /// `t % shards == index`, so every truck's events come from one generator with increasing
    /// `seq`, and its RNG is seeded `seed + index` (shard 0 of 1 is [`Generator::new`]).
    pub fn shard(
        config: &GeneratorConfig,
        index: u32,
        shards: u32,
    ) -> Result<Self, GeneratorError> {
        let weights = config.resolved_weights()?;
        let shards = shards.max(1);
        if config.trucks < shards || index >= shards {
            return Err(GeneratorError {
                key: "trucks",
                reason: format!(
                    "{} trucks cannot be shared by {shards} sender threads",
                    config.trucks
                ),
            });
        }
        let own = (config.trucks - index).div_ceil(shards) as usize;
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        Ok(Generator {
            rng: SmallRng::seed_from_u64(config.seed.wrapping_add(u64::from(index))),
            codes: config.codes.clone(),
            cumulative,
            truck_seq: vec![0; own],
            truck_first: index as usize,
            truck_stride: shards as usize,
            truck_id: Vec::with_capacity(16),
            poison_rate: config.poison_rate,
            events: 0,
            poisoned: 0,
        })
    }

    /// Draws a code.
    pub fn next_code(&mut self) -> Code {
        let x: f64 = self.rng.gen();
        let i = self
            .cumulative
            .partition_point(|c| *c < x)
            .min(self.codes.len() - 1);
        Code(self.codes[i])
    }

    /// Writes the next event into `out` (cleared first) and returns its code. `ts_ms` is the
    /// event time.
    pub fn next_event(&mut self, ts_ms: u64, out: &mut Vec<u8>) -> Code {
        let code = self.next_code();
        let local = self.rng.gen_range(0..self.truck_seq.len());
        self.next_event_with_code(code, local, ts_ms, out);
        code
    }

    fn next_event_with_code(&mut self, code: Code, local: usize, ts_ms: u64, out: &mut Vec<u8>) {
        self.truck_seq[local] += 1;
        let seq = self.truck_seq[local];
        let truck = self.truck_first + local * self.truck_stride;
        let r = &mut self.rng;
        // Values are drawn as fixed-point integers and written digit by digit: float
        // formatting was a tenth of the producer's CPU (docs/BENCHMARKS.md).
        let lat_micro: i64 = -23_550_000 + r.gen_range(-500_000..500_000);
        let lon_micro: i64 = -46_630_000 + r.gen_range(-500_000..500_000);
        let speed_tenths: i64 = r.gen_range(0..1_100);
        let heading: u64 = r.gen_range(0..360);
        let fuel_tenths: i64 = r.gen_range(50..1_000);
        let temp_tenths: i64 = r.gen_range(700..1_050);
        // 100,000 km + 13.7 km per truck number + 0.05 km per event, in tenths.
        let odo_tenths = (10_000_000 + truck as i64 * 1_370 + seq as i64 * 5) / 10;
        out.clear();
        out.extend_from_slice(br#"{"truck_id":"TRK-"#);
        padded(out, truck as u64, 6);
        out.extend_from_slice(br#"","codigo":"#);
        padded(out, u64::from(code.0), 1);
        out.extend_from_slice(br#","ts":"#);
        padded(out, ts_ms, 1);
        out.extend_from_slice(br#","lat":"#);
        fixed(out, lat_micro, 6);
        out.extend_from_slice(br#","lon":"#);
        fixed(out, lon_micro, 6);
        out.extend_from_slice(br#","speed_kmh":"#);
        fixed(out, speed_tenths, 1);
        out.extend_from_slice(br#","heading":"#);
        padded(out, heading, 1);
        out.extend_from_slice(br#","seq":"#);
        padded(out, seq, 1);
        out.extend_from_slice(br#","fuel_pct":"#);
        fixed(out, fuel_tenths, 1);
        out.extend_from_slice(br#","engine_temp_c":"#);
        fixed(out, temp_tenths, 1);
        out.extend_from_slice(br#","odometer_km":"#);
        fixed(out, odo_tenths, 1);
        out.extend_from_slice(br#","driver_id":"DRV-"#);
        padded(out, (truck % 20_000) as u64, 5);
        out.extend_from_slice(br#""}"#);
        self.truck_id.clear();
        self.truck_id.extend_from_slice(b"TRK-");
        padded(&mut self.truck_id, truck as u64, 6);
    }

    /// Writes the next event into `out`: a valid one, or with [`GeneratorConfig::poison_rate`]
    /// a malformed one of the next [`PoisonKind`] in turn.
    pub fn next(&mut self, ts_ms: u64, out: &mut Vec<u8>) -> Generated {
        if self.poison_rate > 0.0 {
            self.events += 1;
            // Poison so that after n events exactly floor(n * rate) were poison (the epsilon
            // absorbs binary rounding: 6000 * 0.1 must be 600, not 599.99...).
            let due = (self.events as f64 * self.poison_rate + 1e-9).floor() as u64;
            if due > self.poisoned {
                let kind = PoisonKind::ALL[(self.poisoned % 6) as usize];
                self.poisoned += 1;
                let code = self.write_poison(kind, ts_ms, out);
                return Generated {
                    code,
                    poison: Some(kind),
                };
            }
        }
        Generated {
            code: Some(self.next_event(ts_ms, out)),
            poison: None,
        }
    }

    fn write_poison(&mut self, kind: PoisonKind, ts_ms: u64, out: &mut Vec<u8>) -> Option<Code> {
        let code = self.next_code();
        let local = self.rng.gen_range(0..self.truck_seq.len());
        let truck = self.truck_first + local * self.truck_stride;
        self.truck_id.clear();
        let _ = write!(self.truck_id, "TRK-{truck:06}");
        out.clear();
        let c = code.0;
        // Writing into a Vec cannot fail.
        let _ = match kind {
            PoisonKind::BadJson => write!(
                out,
                r#"{{"truck_id":"TRK-{truck:06}","ts":{ts_ms},"codigo":"#
            ),
            PoisonKind::MissingCode => write!(
                out,
                r#"{{"truck_id":"TRK-{truck:06}","ts":{ts_ms},"speed_kmh":12.5}}"#
            ),
            PoisonKind::NonNumericCode => write!(
                out,
                r#"{{"truck_id":"TRK-{truck:06}","codigo":"trezentos","ts":{ts_ms}}}"#
            ),
            PoisonKind::InvalidUtf8 => {
                let _ = write!(out, r#"{{"truck_id":"TRK-{truck:06}","codigo":"#);
                out.extend_from_slice(b"\xff\xfe\xfd}");
                Ok(())
            }
            PoisonKind::Oversize => {
                self.next_event_with_code(code, local, ts_ms, out);
                // Replace the closing brace with a padding field that crosses the limit.
                out.pop();
                out.extend_from_slice(br#","padding":""#);
                out.resize(out.len() + MAX_EVENT_BYTES, b'x');
                out.extend_from_slice(b"\"}");
                Ok(())
            }
            PoisonKind::SchemaInvalid => write!(
                out,
                r#"{{"truck_id":"TRK-{truck:06}","codigo":{c},"ts":{ts_ms}}}"#
            ),
        };
        kind.has_code().then_some(code)
    }

    /// Truck id of the last event.
    pub fn last_truck(&self) -> &[u8] {
        &self.truck_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetstream_core::{extract_code, extract_truck_id, TelemetryEvent};

    #[test]
    fn events_are_valid_200_byte_json() {
        let mut g = Generator::new(&GeneratorConfig::default()).unwrap();
        let mut buf = Vec::new();
        let mut total = 0;
        for i in 0..1000 {
            let code = g.next_event(1_700_000_000_000 + i, &mut buf);
            let ev = TelemetryEvent::parse(&buf).unwrap();
            assert_eq!(ev.codigo, code);
            assert_eq!(extract_code(&buf), Ok(code));
            assert_eq!(extract_truck_id(&buf), Some(g.last_truck()));
            total += buf.len();
        }
        let avg = total / 1000;
        assert!(
            (180..=240).contains(&avg),
            "average event size {avg} B, want ~200"
        );
    }

    proptest::proptest! {
        #[test]
        fn digit_writers_match_format(v in -10_000_000_000i64..10_000_000_000, d in 1u32..7, w in 1usize..8) {
            let mut out = Vec::new();
            fixed(&mut out, v, d);
            let want = format!("{}{}.{:0width$}", if v < 0 { "-" } else { "" }, v.unsigned_abs() / 10u64.pow(d), v.unsigned_abs() % 10u64.pow(d), width = d as usize);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), want);
            let mut out = Vec::new();
            padded(&mut out, v.unsigned_abs(), w);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), format!("{:0w$}", v.unsigned_abs()));
        }
    }

    #[test]
    fn default_distribution_is_80_20() {
        let mut g = Generator::new(&GeneratorConfig::default()).unwrap();
        let n = 200_000;
        let hot = (0..n)
            .filter(|_| (300..304).contains(&g.next_code().0))
            .count();
        let share = hot as f64 / n as f64;
        assert!((share - 0.8).abs() < 0.01, "hot share {share}");
    }

    #[test]
    fn same_seed_same_events() {
        let mut a = Generator::new(&GeneratorConfig::default()).unwrap();
        let mut b = Generator::new(&GeneratorConfig::default()).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            a.next_event(1, &mut x);
            b.next_event(1, &mut y);
            assert_eq!(x, y);
        }
    }

    #[test]
    fn poison_is_the_exact_fraction_and_cycles_every_kind() {
        let c = GeneratorConfig {
            poison_rate: 0.1,
            ..GeneratorConfig::default()
        };
        let mut g = Generator::new(&c).unwrap();
        let mut buf = Vec::new();
        let mut kinds = std::collections::BTreeMap::new();
        for _ in 0..6000 {
            let got = g.next(1, &mut buf);
            match got.poison {
                None => {
                    assert_eq!(extract_code(&buf).ok(), got.code);
                    assert!(TelemetryEvent::parse(&buf).is_ok());
                }
                Some(kind) => {
                    *kinds.entry(kind).or_insert(0) += 1;
                    // What the send loop relies on: code-less kinds fail extraction, the others
                    // extract (oversize from its first MAX_EVENT_BYTES) but fail the full parse.
                    let head = &buf[..buf.len().min(MAX_EVENT_BYTES)];
                    assert_eq!(extract_code(head).is_ok(), kind.has_code(), "{kind:?}");
                    assert_eq!(got.code.is_some(), kind.has_code());
                    assert!(TelemetryEvent::parse(&buf).is_err(), "{kind:?} parsed");
                }
            }
        }
        // 10% of 6,000, spread evenly over the six kinds.
        assert_eq!(kinds.values().sum::<u32>(), 600);
        assert_eq!(kinds.len(), 6);
        assert!(kinds.values().all(|n| *n == 100), "{kinds:?}");
        let expected = [
            (PoisonKind::BadJson, "not_json"),
            (PoisonKind::MissingCode, "missing_code"),
            (PoisonKind::NonNumericCode, "invalid_code"),
            (PoisonKind::InvalidUtf8, "not_utf8"),
            (PoisonKind::Oversize, "oversize"),
            (PoisonKind::SchemaInvalid, "schema"),
        ];
        for (kind, class) in expected {
            let mut g = Generator::new(&GeneratorConfig::default()).unwrap();
            g.write_poison(kind, 1, &mut buf);
            assert_eq!(
                TelemetryEvent::parse(&buf).unwrap_err().class(),
                class,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn no_poison_leaves_the_stream_unchanged() {
        let mut a = Generator::new(&GeneratorConfig::default()).unwrap();
        let mut b = Generator::new(&GeneratorConfig::default()).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            a.next_event(1, &mut x);
            assert_eq!(b.next(1, &mut y).poison, None);
            assert_eq!(x, y);
        }
    }

    #[test]
    fn shards_split_the_trucks() {
        let c = GeneratorConfig {
            trucks: 10,
            ..GeneratorConfig::default()
        };
        let mut buf = Vec::new();
        for index in 0..3 {
            let mut g = Generator::shard(&c, index, 3).unwrap();
            for _ in 0..200 {
                g.next_event(1, &mut buf);
                let t: u32 = std::str::from_utf8(&g.last_truck()[4..])
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(t % 3, index);
                assert!(t < 10);
            }
        }
        assert_eq!(Generator::shard(&c, 0, 11).err().unwrap().key, "trucks");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let c = GeneratorConfig {
            weights: CodeWeights::Explicit(vec![1.0]),
            ..GeneratorConfig::default()
        };
        assert_eq!(c.resolved_weights().unwrap_err().key, "weights.explicit");
        let c = GeneratorConfig {
            trucks: 0,
            ..GeneratorConfig::default()
        };
        assert_eq!(c.resolved_weights().unwrap_err().key, "trucks");
        let c = GeneratorConfig {
            poison_rate: 1.5,
            ..GeneratorConfig::default()
        };
        assert_eq!(c.resolved_weights().unwrap_err().key, "poison_rate");
    }
}
