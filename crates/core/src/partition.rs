//! Where Kafka clients place a keyed record. fleetstream never picks partitions itself (the
//! design notes forbid it); these functions exist so the lab can predict placement and tests can
//! check that the broker agrees.

use serde::{Deserialize, Serialize};

/// The producer's partitioner setting. Two producers with different partitioners send the same
/// key to different partitions, so a mixed-language fleet must agree on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// murmur2 of the key, as the Java client and Kafka's own tools do; random for keyless records.
    #[default]
    Murmur2Random,
    /// CRC32 of the key, librdkafka's (and so .NET's and Python's) default; random when keyless.
    ConsistentRandom,
}

impl Partitioner {
    /// The librdkafka `partitioner` value.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Partitioner::Murmur2Random => "murmur2_random",
            Partitioner::ConsistentRandom => "consistent_random",
        }
    }

    /// The partition a key lands on among `partitions`.
    pub fn partition(self, key: &[u8], partitions: u32) -> u32 {
        match self {
            Partitioner::Murmur2Random => murmur2_partition(key, partitions),
            Partitioner::ConsistentRandom => crc32_partition(key, partitions),
        }
    }
}

impl std::str::FromStr for Partitioner {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "murmur2_random" | "murmur2" => Ok(Partitioner::Murmur2Random),
            "consistent_random" | "crc32" => Ok(Partitioner::ConsistentRandom),
            other => Err(format!(
                "unknown partitioner {other:?}; expected murmur2_random or consistent_random"
            )),
        }
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`, seed `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java client placement: `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn murmur2_partition(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

/// librdkafka `consistent` placement: `crc32(key) % partitions`.
pub fn crc32_partition(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    crc32fast::hash(key) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Vectors from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_java_vectors() {
        let cases: [(&[u8], i32); 7] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
            (b"", 275646681),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                expected,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    proptest! {
        #[test]
        fn placement_is_in_range_and_stable(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1u32..500) {
            for p in [Partitioner::Murmur2Random, Partitioner::ConsistentRandom] {
                let a = p.partition(&key, n);
                prop_assert!(a < n);
                prop_assert_eq!(a, p.partition(&key, n));
            }
        }
    }
}
