//! The audit's account, id by id, across processes and restarts: which ids the producers had
//! acknowledged ([`AckedIds`], read from the files producers write with `--acked-ids`), which
//! effects the dispatchers applied (sink lines), which ids the dead-letter topics hold, and the
//! anomalies between them, named as Jepsen's Kafka checker names them:
//!
//! - **lost** (Jepsen's *lost-write*): acked, the pipeline drained (no lag), yet neither
//!   dispatched nor dead-lettered.
//! - **unseen**: acked and not found while the pipeline still had lag: it may yet arrive.
//! - **duplicate**: an id with more than one effect at one target (the dispatcher promises one).
//! - **nonmonotonic**: for one partition and code, an effect whose producer sequence is lower than
//!   one already applied there (in the sink's write order). Every key lives in one partition and
//!   carries one code (composite keys are `code-bucket`), and a run's sequence grows in send
//!   order, so this is a per-key order violation or a stronger one: the pipeline keeps the order
//!   of a partition's records of one code (batches are delivered per code, in record order).
//!
//! Pure and in memory: a bit per acked id plus a map of the few ids seen more than once, so an
//! hour at 13,000 msg/s (47 M ids) fits in a few MiB.
//!
//! ```
//! use fleetstream_core::audit::{AckedIds, Audit};
//! use fleetstream_core::MessageId;
//! let mut acked = AckedIds::new(7);
//! acked.insert_range(0, 2);
//! let mut audit = Audit::default();
//! audit.add_acked(&acked);
//! audit.effect("archive", MessageId { run: 7, seq: 0 }, None);
//! audit.dead_lettered(Some(MessageId { run: 7, seq: 1 }));
//! let report = audit.report(true);
//! assert_eq!((report.acked, report.lost, report.duplicated), (3, 1, 0));
//! ```

use crate::ledger::{BitSet, MessageId};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// First line of an acked-ids file, followed by the run id in hex.
pub const ACKED_IDS_MAGIC: &str = "fleetstream-acked-ids v1 run=";

/// An acked-ids file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AckedIdsError {
    /// The first line is not `fleetstream-acked-ids v1 run=<16 hex digits>`.
    #[error("not an acked-ids file (first line must be `{ACKED_IDS_MAGIC}<16 hex digits>`)")]
    Header,
    /// A line in the middle of the file is not a sequence or a range.
    #[error("line {line}: `{text}` is not a sequence number or a range `a-b`")]
    Line {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// The sequence numbers one producer run had acknowledged.
#[derive(Debug, Clone)]
pub struct AckedIds {
    run: u64,
    seqs: BitSet,
}

impl AckedIds {
    /// No ids of run `run` yet.
    pub fn new(run: u64) -> Self {
        AckedIds {
            run,
            seqs: BitSet::default(),
        }
    }

    /// The producer run.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Distinct acked sequences.
    pub fn len(&self) -> u64 {
        self.seqs.count
    }

    /// No acked sequence.
    pub fn is_empty(&self) -> bool {
        self.seqs.count == 0
    }

    /// Marks `first..=last` acked.
    pub fn insert_range(&mut self, first: u64, last: u64) {
        for seq in first..=last {
            self.seqs.insert(seq);
        }
    }

    /// Whether `seq` was acked.
    pub fn contains(&self, seq: u64) -> bool {
        self.seqs.contains(seq)
    }

    /// Parses an acked-ids file: the header line, then one `seq` or `first-last` per line. A
    /// last line without its newline is a write the producer did not finish (it was killed):
    /// it is ignored, as it was never a complete record of an ack.
    pub fn parse(text: &str) -> Result<Self, AckedIdsError> {
        let mut lines = text.split_inclusive('\n');
        let header = lines.next().ok_or(AckedIdsError::Header)?;
        let run = header
            .trim_end()
            .strip_prefix(ACKED_IDS_MAGIC)
            .filter(|h| h.len() == 16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or(AckedIdsError::Header)?;
        let mut ids = AckedIds::new(run);
        for (i, line) in lines.enumerate() {
            let Some(body) = line.strip_suffix('\n') else {
                break; // torn last line
            };
            let bad = || AckedIdsError::Line {
                line: i + 2,
                text: body.chars().take(80).collect(),
            };
            match body.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (u64, u64) =
                        (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                    if b < a {
                        return Err(bad());
                    }
                    ids.insert_range(a, b);
                }
                None => {
                    let s: u64 = body.parse().map_err(|_| bad())?;
                    ids.insert_range(s, s);
                }
            }
        }
        Ok(ids)
    }
}

/// Encodes sorted, distinct sequences as acked-ids lines (`seq` or `first-last`), appended to
/// `out`. The producer's writer calls it with each batch of newly acked sequences.
pub fn encode_ranges(sorted: &[u64], out: &mut String) {
    let mut i = 0;
    while i < sorted.len() {
        let first = sorted[i];
        let mut last = first;
        while i + 1 < sorted.len() && sorted[i + 1] == last + 1 {
            i += 1;
            last = sorted[i];
        }
        if first == last {
            let _ = writeln!(out, "{first}");
        } else {
            let _ = writeln!(out, "{first}-{last}");
        }
        i += 1;
    }
}

/// The header line of an acked-ids file for `run`.
pub fn acked_ids_header(run: u64) -> String {
    format!("{ACKED_IDS_MAGIC}{run:016x}\n")
}

#[derive(Debug, Default)]
struct RunAccount {
    acked: BitSet,
    dispatched: BitSet,
    dead_lettered: BitSet,
}

#[derive(Debug, Default)]
struct TargetEffects {
    once: BitSet,
    /// Effects beyond the first, by (run, seq): rare, so a map.
    extra: HashMap<(u64, u64), u32>,
}

/// Collects acked ids, effects and dead letters, then reports the anomalies.
#[derive(Debug, Default)]
pub struct Audit {
    runs: HashMap<u64, RunAccount>,
    /// Per target, per run.
    effects: BTreeMap<String, HashMap<u64, TargetEffects>>,
    /// Per (run, order key): the highest sequence applied so far.
    last_seq: HashMap<(u64, String), u64>,
    nonmonotonic: u64,
    nonmonotonic_sample: Vec<String>,
    foreign_effects: u64,
    foreign_dead_letters: u64,
}

/// The audit's verdict. `ok` is false on any lost id or duplicated effect.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct AuditReport {
    /// No lost id, no duplicated effect and nothing unseen.
    pub ok: bool,
    /// Producer runs whose acked ids were read.
    pub runs: u64,
    /// Distinct acked ids.
    pub acked: u64,
    /// Acked ids with an effect at some target.
    pub dispatched: u64,
    /// Acked ids found in a dead-letter topic.
    pub dead_lettered: u64,
    /// Acked ids neither dispatched nor dead-lettered, with the pipeline drained.
    pub lost: u64,
    /// Acked ids not found while the pipeline still had lag.
    pub unseen: u64,
    /// Up to 10 lost or unseen ids.
    pub missing_sample: Vec<String>,
    /// Ids with more than one effect at one target (id, target pairs).
    pub duplicated: u64,
    /// Effects beyond the first, summed over those pairs.
    pub extra_effects: u64,
    /// Up to 10 `target:id` pairs with more than one effect.
    pub duplicated_sample: Vec<String>,
    /// Effects written out of producer order for one partition and code.
    pub nonmonotonic: u64,
    /// Up to 10 such effects, as `topic/partition/code:id`.
    pub nonmonotonic_sample: Vec<String>,
    /// Effects per target (all runs, all effects).
    pub effects_by_target: BTreeMap<String, u64>,
    /// Effects of ids from runs whose acked ids were not given (another producer's traffic).
    pub foreign_effects: u64,
    /// Dead letters of such ids (or without a message id).
    pub foreign_dead_letters: u64,
    /// Each anomaly by Jepsen's name, with its count.
    pub anomalies: BTreeMap<String, u64>,
}

impl Audit {
    /// Adds a run's acked ids (two files of one run add up).
    pub fn add_acked(&mut self, ids: &AckedIds) {
        let account = self.runs.entry(ids.run).or_default();
        for (w, word) in ids.seqs.words.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let b = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                account.acked.insert(w as u64 * 64 + b);
            }
        }
    }

    /// An effect of `id` at `target`, in the order the target wrote it; `order_key` (when
    /// known: the record's partition and code, see the module docs) checks per-key order.
    pub fn effect(&mut self, target: &str, id: MessageId, order_key: Option<&str>) {
        let Some(account) = self.runs.get_mut(&id.run) else {
            self.foreign_effects += 1;
            return;
        };
        account.dispatched.insert(id.seq);
        let per_run = match self.effects.get_mut(target) {
            Some(t) => t,
            None => self.effects.entry(target.to_owned()).or_default(),
        };
        let effects = per_run.entry(id.run).or_default();
        if !effects.once.insert(id.seq) {
            *effects.extra.entry((id.run, id.seq)).or_default() += 1;
            return; // a repeated effect is counted as a duplicate, not an order violation
        }
        if let Some(order) = order_key {
            let key = (id.run, format!("{target}/{order}"));
            match self.last_seq.get_mut(&key) {
                Some(last) if id.seq < *last => {
                    self.nonmonotonic += 1;
                    if self.nonmonotonic_sample.len() < 10 {
                        self.nonmonotonic_sample.push(format!("{order}:{id}"));
                    }
                }
                Some(last) => *last = id.seq,
                None => {
                    self.last_seq.insert(key, id.seq);
                }
            }
        }
    }

    /// One line of a `jsonl` target's file (`{"message_id", "code", "topic", "partition", ...}`)
    /// as an effect at `target`. Returns false for a line that is not one (a torn last line
    /// after a crash, or another writer's): the caller counts them.
    pub fn effect_line(&mut self, target: &str, line: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Line<'a> {
            #[serde(borrow)]
            message_id: std::borrow::Cow<'a, str>,
            code: Option<u32>,
            #[serde(borrow)]
            topic: Option<std::borrow::Cow<'a, str>>,
            partition: Option<i32>,
        }
        let Ok(parsed) = serde_json::from_slice::<Line<'_>>(line) else {
            return false;
        };
        let Some(id) = MessageId::parse(parsed.message_id.as_bytes()) else {
            self.foreign_effects += 1;
            return true;
        };
        let order_key = match (&parsed.topic, parsed.partition, parsed.code) {
            (Some(t), Some(p), Some(c)) => Some(format!("{t}/{p}/{c}")),
            _ => None,
        };
        self.effect(target, id, order_key.as_deref());
        true
    }

    /// A dead-letter record of `id` (`None`: it had no message id).
    pub fn dead_lettered(&mut self, id: Option<MessageId>) {
        match id.and_then(|id| Some((self.runs.get_mut(&id.run)?, id))) {
            Some((account, id)) => {
                account.dead_lettered.insert(id.seq);
            }
            None => self.foreign_dead_letters += 1,
        }
    }

    /// The verdict. `drained`: the workers had no lag when the effects and dead letters were
    /// read, so a missing id is lost rather than unseen.
    pub fn report(&self, drained: bool) -> AuditReport {
        let mut r = AuditReport {
            runs: self.runs.len() as u64,
            nonmonotonic: self.nonmonotonic,
            nonmonotonic_sample: self.nonmonotonic_sample.clone(),
            foreign_effects: self.foreign_effects,
            foreign_dead_letters: self.foreign_dead_letters,
            ..AuditReport::default()
        };
        let mut runs: Vec<_> = self.runs.iter().collect();
        runs.sort_by_key(|(run, _)| **run);
        let mut missing = 0;
        for (run, account) in runs {
            r.acked += account.acked.count;
            for (w, word) in account.acked.words.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let b = u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    let seq = w as u64 * 64 + b;
                    let dispatched = account.dispatched.contains(seq);
                    let dead = account.dead_lettered.contains(seq);
                    r.dispatched += u64::from(dispatched);
                    r.dead_lettered += u64::from(dead);
                    if !dispatched && !dead {
                        missing += 1;
                        if r.missing_sample.len() < 10 {
                            r.missing_sample
                                .push(MessageId { run: *run, seq }.to_string());
                        }
                    }
                }
            }
        }
        if drained {
            r.lost = missing;
        } else {
            r.unseen = missing;
        }
        for (target, per_run) in &self.effects {
            let mut total = 0;
            for effects in per_run.values() {
                total += effects.once.count;
                let mut extra: Vec<_> = effects.extra.iter().collect();
                extra.sort();
                for ((run, seq), n) in extra {
                    total += u64::from(*n);
                    r.duplicated += 1;
                    r.extra_effects += u64::from(*n);
                    if r.duplicated_sample.len() < 10 {
                        let id = MessageId {
                            run: *run,
                            seq: *seq,
                        };
                        r.duplicated_sample.push(format!("{target}:{id}"));
                    }
                }
            }
            r.effects_by_target.insert(target.clone(), total);
        }
        for (name, n) in [
            ("lost-write", r.lost),
            ("unseen", r.unseen),
            ("duplicate", r.duplicated),
            ("nonmonotonic", r.nonmonotonic),
        ] {
            if n > 0 {
                r.anomalies.insert(name.to_owned(), n);
            }
        }
        r.ok = r.lost == 0 && r.unseen == 0 && r.duplicated == 0;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(run: u64, seq: u64) -> MessageId {
        MessageId { run, seq }
    }

    #[test]
    fn ranges_round_trip_through_the_file_format() {
        let mut text = acked_ids_header(0xabc);
        encode_ranges(&[0, 1, 2, 5, 7, 8], &mut text);
        assert_eq!(
            text,
            "fleetstream-acked-ids v1 run=0000000000000abc\n0-2\n5\n7-8\n"
        );
        let ids = AckedIds::parse(&text).unwrap();
        assert_eq!(ids.run(), 0xabc);
        assert_eq!(ids.len(), 6);
        assert!(ids.contains(5) && !ids.contains(6));
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_bad_line_named() {
        let text = format!("{}0-9\n10-1", acked_ids_header(1));
        assert_eq!(AckedIds::parse(&text).unwrap().len(), 10);
        let err = AckedIds::parse(&format!("{}0-9\nx\n", acked_ids_header(1))).unwrap_err();
        assert!(err.to_string().starts_with("line 3: `x`"), "{err}");
        assert!(matches!(
            AckedIds::parse("hello\n"),
            Err(AckedIdsError::Header)
        ));
    }

    #[test]
    fn finds_lost_duplicated_and_out_of_order() {
        let mut acked = AckedIds::new(7);
        acked.insert_range(0, 99);
        let mut a = Audit::default();
        a.add_acked(&acked);
        for seq in 0..100 {
            match seq {
                50 => {} // lost
                60 => a.dead_lettered(Some(id(7, 60))),
                _ => a.effect("archive", id(7, seq), Some("T1")),
            }
        }
        a.effect("archive", id(7, 10), Some("T1")); // a second effect: duplicate, not order
        a.effect("alerts", id(7, 10), Some("T2")); // another target: not a duplicate
        a.effect("alerts", id(7, 5), Some("T2")); // T2 went 10 then 5: nonmonotonic
        a.effect("alerts", id(7, 4), Some("T3")); // another key: in order
        a.effect("archive", id(8, 1), None); // a run we were not given
        a.dead_lettered(None);
        let r = a.report(true);
        assert_eq!(r.acked, 100);
        assert_eq!(r.dispatched, 98);
        assert_eq!(r.dead_lettered, 1);
        assert_eq!(r.lost, 1);
        assert_eq!(r.missing_sample, vec![id(7, 50).to_string()]);
        assert_eq!((r.duplicated, r.extra_effects), (1, 1));
        assert_eq!(r.duplicated_sample, vec![format!("archive:{}", id(7, 10))]);
        assert_eq!(r.nonmonotonic, 1);
        assert_eq!((r.foreign_effects, r.foreign_dead_letters), (1, 1));
        assert_eq!(r.effects_by_target["archive"], 99);
        assert!(!r.ok);
        assert_eq!(r.anomalies.len(), 3);
        let undrained = a.report(false);
        assert_eq!((undrained.lost, undrained.unseen), (0, 1));
    }

    #[test]
    fn sink_lines_are_effects_and_torn_lines_are_not() {
        let mut acked = AckedIds::new(2);
        acked.insert_range(0, 1);
        let mut a = Audit::default();
        a.add_acked(&acked);
        let line = format!(
            r#"{{"message_id":"{}","code":300,"topic":"t","partition":0,"offset":1,"event":{{"codigo":300,"truck_id":"TRK-1"}}}}"#,
            id(2, 1)
        );
        assert!(a.effect_line("archive", line.as_bytes()));
        assert!(!a.effect_line("archive", &line.as_bytes()[..20]));
        let r = a.report(true);
        assert_eq!((r.dispatched, r.lost), (1, 1));
    }

    #[test]
    fn everything_accounted_for_is_ok() {
        let mut acked = AckedIds::new(1);
        acked.insert_range(0, 9);
        let mut a = Audit::default();
        a.add_acked(&acked);
        for seq in 0..10 {
            a.effect("t", id(1, seq), Some("x"));
        }
        let r = a.report(true);
        assert!(r.ok, "{r:?}");
        assert!(r.anomalies.is_empty());
    }
}
