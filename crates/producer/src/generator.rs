//! Synthetic telemetry: Pareto-skewed codes over a truck population, ~200 B JSON, seedable.

use fleetstream_core::Code;
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

/// Produces events into a caller's buffer; no allocation per event.
pub struct Generator {
    rng: SmallRng,
    codes: Vec<u32>,
    cumulative: Vec<f64>,
    truck_seq: Vec<u64>,
    truck_id: Vec<u8>,
}

impl Generator {
    /// Builds a generator.
    pub fn new(config: &GeneratorConfig) -> Result<Self, GeneratorError> {
        let weights = config.resolved_weights()?;
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        Ok(Generator {
            rng: SmallRng::seed_from_u64(config.seed),
            codes: config.codes.clone(),
            cumulative,
            truck_seq: vec![0; config.trucks as usize],
            truck_id: Vec::with_capacity(16),
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
        let truck = self.rng.gen_range(0..self.truck_seq.len());
        self.truck_seq[truck] += 1;
        let seq = self.truck_seq[truck];
        let r = &mut self.rng;
        let lat = -23.55 + r.gen_range(-0.5..0.5);
        let lon = -46.63 + r.gen_range(-0.5..0.5);
        let speed: f32 = r.gen_range(0.0..110.0);
        let heading: u16 = r.gen_range(0..360);
        let fuel: f32 = r.gen_range(5.0..100.0);
        let temp: f32 = r.gen_range(70.0..105.0);
        let odo = 100_000.0 + truck as f64 * 13.7 + seq as f64 * 0.05;
        out.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            r#"{{"truck_id":"TRK-{truck:06}","codigo":{code},"ts":{ts_ms},"lat":{lat:.6},"lon":{lon:.6},"speed_kmh":{speed:.1},"heading":{heading},"seq":{seq},"fuel_pct":{fuel:.1},"engine_temp_c":{temp:.1},"odometer_km":{odo:.1},"driver_id":"DRV-{driver:05}"}}"#,
            code = code.0,
            driver = truck % 20_000,
        );
        self.truck_id.clear();
        let _ = write!(self.truck_id, "TRK-{truck:06}");
        code
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
    }
}
