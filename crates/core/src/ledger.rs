//! Message ids and the id ledger that proves "nothing lost": every acked id must be found
//! dispatched or dead-lettered. Counted by id, never by subtracting counters.

use std::fmt::Write;

/// A producer run's message id: `<run as 16 hex digits>-<sequence>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// Random id of the producer run (one per process start).
    pub run: u64,
    /// Sequence within the run, from 0.
    pub seq: u64,
}

impl MessageId {
    /// Writes the id's text form into `out` (cleared first).
    pub fn write_to(&self, out: &mut String) {
        out.clear();
        let _ = write!(out, "{:016x}-{}", self.run, self.seq);
    }

    /// Parses the text form.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let (run, seq) = text.split_once('-')?;
        if run.len() != 16 {
            return None;
        }
        Some(MessageId {
            run: u64::from_str_radix(run, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", self.run, self.seq)
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct BitSet {
    pub(crate) words: Vec<u64>,
    pub(crate) count: u64,
}

impl BitSet {
    /// Sets bit `i`; returns whether it was newly set.
    pub(crate) fn insert(&mut self, i: u64) -> bool {
        let w = (i / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let mask = 1u64 << (i % 64);
        let new = self.words[w] & mask == 0;
        self.words[w] |= mask;
        self.count += u64::from(new);
        new
    }
    pub(crate) fn contains(&self, i: u64) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }
}

/// Which ids of one producer run were acked, dispatched and dead-lettered.
#[derive(Debug, Clone)]
pub struct IdLedger {
    run: u64,
    acked: BitSet,
    dispatched: BitSet,
    dead_lettered: BitSet,
    foreign: u64,
}

/// The ledger's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct LedgerReport {
    /// Distinct ids acked by Kafka.
    pub acked: u64,
    /// Distinct ids with a dispatch effect.
    pub dispatched: u64,
    /// Distinct ids dead-lettered.
    pub dead_lettered: u64,
    /// Acked ids found neither dispatched nor dead-lettered.
    pub lost: u64,
    /// Up to 10 lost ids, for the investigation.
    pub lost_sample: Vec<String>,
    /// Ids seen downstream that this run never acked (another run's, or a bug).
    pub foreign: u64,
}

impl IdLedger {
    /// A ledger for producer run `run`.
    pub fn new(run: u64) -> Self {
        IdLedger {
            run,
            acked: BitSet::default(),
            dispatched: BitSet::default(),
            dead_lettered: BitSet::default(),
            foreign: 0,
        }
    }

    /// Records that Kafka acked `seq`.
    pub fn acked(&mut self, seq: u64) {
        self.acked.insert(seq);
    }

    /// Records a dispatch effect for `id`; returns whether it was the first for that id.
    pub fn dispatched(&mut self, id: MessageId) -> bool {
        if id.run != self.run {
            self.foreign += 1;
            return false;
        }
        self.dispatched.insert(id.seq)
    }

    /// Records a dead-letter write for `id`; returns whether it was the first for that id.
    pub fn dead_lettered(&mut self, id: MessageId) -> bool {
        if id.run != self.run {
            self.foreign += 1;
            return false;
        }
        self.dead_lettered.insert(id.seq)
    }

    /// Compares acked ids with what came out the other end.
    pub fn report(&self) -> LedgerReport {
        let mut lost = 0;
        let mut lost_sample = Vec::new();
        for (w, word) in self.acked.words.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let seq = w as u64 * 64 + b;
                if !self.dispatched.contains(seq) && !self.dead_lettered.contains(seq) {
                    lost += 1;
                    if lost_sample.len() < 10 {
                        lost_sample.push(MessageId { run: self.run, seq }.to_string());
                    }
                }
            }
        }
        LedgerReport {
            acked: self.acked.count,
            dispatched: self.dispatched.count,
            dead_lettered: self.dead_lettered.count,
            lost,
            lost_sample,
            foreign: self.foreign,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip() {
        let id = MessageId {
            run: 0xdead_beef,
            seq: 12345,
        };
        let mut s = String::new();
        id.write_to(&mut s);
        assert_eq!(s, "00000000deadbeef-12345");
        assert_eq!(MessageId::parse(s.as_bytes()), Some(id));
        assert_eq!(MessageId::parse(b"nope"), None);
        assert_eq!(MessageId::parse(b"dead-1"), None);
    }

    #[test]
    fn ledger_finds_the_missing_id() {
        let mut l = IdLedger::new(7);
        for seq in 0..1000 {
            l.acked(seq);
        }
        for seq in 0..1000 {
            if seq == 500 {
                continue;
            }
            let id = MessageId { run: 7, seq };
            if seq % 100 == 0 {
                assert!(l.dead_lettered(id));
            } else {
                assert!(l.dispatched(id));
            }
        }
        assert!(
            !l.dispatched(MessageId { run: 7, seq: 1 }),
            "second effect is not new"
        );
        l.dispatched(MessageId { run: 8, seq: 1 });
        let r = l.report();
        assert_eq!(r.acked, 1000);
        assert_eq!(r.lost, 1);
        assert_eq!(
            r.lost_sample,
            vec![MessageId { run: 7, seq: 500 }.to_string()]
        );
        assert_eq!(r.dead_lettered, 9);
        assert_eq!(r.foreign, 1);
    }
}
