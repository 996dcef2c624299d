//! Key strategies: the producer declares intent with a key, Kafka picks the partition.

use crate::event::Code;
use crate::partition::murmur2;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a record's key is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStrategy {
    /// `key = codigo`: order per code, but one partition carries a whole hot code.
    Code,
    /// `key = truck_id`: order per truck, codes of one truck share a partition.
    Truck,
    /// `key = codigo-<hash(truck) mod K>`: a hot code spreads over K sub-keys (K per code),
    /// each truck stays on one sub-key, so per-truck order within a code is kept.
    #[default]
    Composite,
    /// No key: the partitioner spreads records at random; no ordering at all.
    None,
}

impl std::str::FromStr for KeyStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "code" => Ok(KeyStrategy::Code),
            "truck" => Ok(KeyStrategy::Truck),
            "composite" => Ok(KeyStrategy::Composite),
            "none" => Ok(KeyStrategy::None),
            other => Err(format!(
                "unknown key strategy {other:?}; expected code, truck, composite or none"
            )),
        }
    }
}

/// `[keys]` in the topology file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Strategy. Default `composite`, the notes' choice ("hash(codigo + truck_id)").
    #[serde(default)]
    pub strategy: KeyStrategy,
    /// Sub-keys per code for `composite` when the code is not listed in `subkeys`. Default 1.
    #[serde(default = "one")]
    pub default_subkeys: u32,
    /// Sub-keys for hot codes, e.g. `{ "300" = 12 }`: the hot code may use up to 12 partitions.
    #[serde(default)]
    pub subkeys: BTreeMap<String, u32>,
}

fn one() -> u32 {
    1
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            strategy: KeyStrategy::Composite,
            default_subkeys: 1,
            subkeys: BTreeMap::new(),
        }
    }
}

/// Builds keys from a code and a truck id according to a strategy.
#[derive(Debug, Clone)]
pub struct KeyResolver {
    strategy: KeyStrategy,
    default_subkeys: u32,
    subkeys: BTreeMap<u32, u32>,
}

impl KeyResolver {
    /// Builds a resolver; `subkeys` keys must be codes and values at least 1 (checked by
    /// [`crate::Topology`] validation, which names the bad key).
    pub fn new(strategy: KeyStrategy, default_subkeys: u32, subkeys: BTreeMap<u32, u32>) -> Self {
        KeyResolver {
            strategy,
            default_subkeys: default_subkeys.max(1),
            subkeys,
        }
    }

    /// The same sub-key settings under another strategy (the lab compares strategies).
    pub fn with_strategy(&self, strategy: KeyStrategy) -> KeyResolver {
        KeyResolver {
            strategy,
            ..self.clone()
        }
    }

    /// The strategy in use.
    pub fn strategy(&self) -> KeyStrategy {
        self.strategy
    }

    /// Sub-keys used for `code` under the composite strategy.
    pub fn subkeys_for(&self, code: Code) -> u32 {
        self.subkeys
            .get(&code.0)
            .copied()
            .unwrap_or(self.default_subkeys)
    }

    /// Writes the key for `(code, truck)` into `out` (cleared first). Returns `false` for
    /// [`KeyStrategy::None`], meaning "send without a key".
    pub fn resolve_into(&self, code: Code, truck: &[u8], out: &mut Vec<u8>) -> bool {
        use crate::digits::push_decimal;
        out.clear();
        match self.strategy {
            KeyStrategy::None => return false,
            KeyStrategy::Code => push_decimal(out, u64::from(code.0), 1),
            KeyStrategy::Truck => out.extend_from_slice(truck),
            KeyStrategy::Composite => {
                let k = self.subkeys_for(code);
                let sub = ((murmur2(truck) & 0x7fff_ffff) as u32) % k;
                push_decimal(out, u64::from(code.0), 1);
                out.push(b'-');
                push_decimal(out, u64::from(sub), 1);
            }
        }
        true
    }

    /// Convenience form of [`KeyResolver::resolve_into`].
    pub fn resolve(&self, code: Code, truck: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.resolve_into(code, truck, &mut out).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn composite(hot: u32) -> KeyResolver {
        KeyResolver::new(KeyStrategy::Composite, 1, BTreeMap::from([(300, hot)]))
    }

    #[test]
    fn strategies_build_the_documented_keys() {
        let t = b"TRK-000001";
        assert_eq!(
            KeyResolver::new(KeyStrategy::Code, 1, BTreeMap::new()).resolve(Code(301), t),
            Some(b"301".to_vec())
        );
        assert_eq!(
            KeyResolver::new(KeyStrategy::Truck, 1, BTreeMap::new()).resolve(Code(301), t),
            Some(t.to_vec())
        );
        assert_eq!(
            KeyResolver::new(KeyStrategy::None, 1, BTreeMap::new()).resolve(Code(301), t),
            None
        );
        assert_eq!(composite(8).resolve(Code(301), t), Some(b"301-0".to_vec()));
    }

    #[test]
    fn hot_code_spreads_over_its_subkeys() {
        let r = composite(8);
        let keys: BTreeSet<Vec<u8>> = (0..1000)
            .map(|i| {
                r.resolve(Code(300), format!("TRK-{i:06}").as_bytes())
                    .unwrap()
            })
            .collect();
        assert_eq!(keys.len(), 8, "1000 trucks should use all 8 sub-keys");
    }

    proptest! {
        #[test]
        fn composite_key_is_stable_per_truck_and_bounded(truck in "[A-Z0-9-]{1,16}", k in 1u32..64, code in 0u32..1000) {
            let r = KeyResolver::new(KeyStrategy::Composite, k, BTreeMap::new());
            let a = r.resolve(Code(code), truck.as_bytes()).unwrap();
            prop_assert_eq!(&a, &r.resolve(Code(code), truck.as_bytes()).unwrap());
            let text = String::from_utf8(a).unwrap();
            let (c, sub) = text.split_once('-').unwrap();
            prop_assert_eq!(c.parse::<u32>().unwrap(), code);
            prop_assert!(sub.parse::<u32>().unwrap() < k);
        }
    }
}
