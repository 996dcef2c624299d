//! Where events come from: the synthetic generator, or JSON lines from a file or stdin.
//!
//! Lines are read as bytes and never parsed in full: the send loop extracts the code (and the
//! truck id for keys) with the fast extractors of `fleetstream_core`.

use crate::generator::{Generated, Generator, GeneratorConfig, GeneratorError};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Mutex;

/// Which source a run reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SourceSpec {
    /// The synthetic generator ([`GeneratorConfig`]). The default.
    #[default]
    Synthetic,
    /// JSON lines from a file; the run ends at its end.
    File(PathBuf),
    /// JSON lines from standard input; the run ends at end of input.
    Stdin,
}

impl std::str::FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "synthetic" => Ok(SourceSpec::Synthetic),
            "stdin" | "-" => Ok(SourceSpec::Stdin),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(SourceSpec::File(PathBuf::from(p))),
                _ => Err(format!(
                    "unknown source {s:?}; expected synthetic, file:PATH or stdin"
                )),
            },
        }
    }
}

/// Lines shared by the sender threads (one reader, taken in turn).
pub(crate) struct Lines(Mutex<Box<dyn BufRead + Send>>);

impl Lines {
    /// Opens the line source of `spec`, if it is one.
    pub(crate) fn open(spec: &SourceSpec) -> std::io::Result<Option<Self>> {
        let reader: Box<dyn BufRead + Send> = match spec {
            SourceSpec::Synthetic => return Ok(None),
            SourceSpec::Stdin => Box::new(std::io::BufReader::new(std::io::stdin())),
            SourceSpec::File(p) => Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(p)?,
            )),
        };
        Ok(Some(Lines(Mutex::new(reader))))
    }

    /// The next non-empty line into `out` (without its line ending); `false` at end of input.
    pub(crate) fn next(&self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            out.clear();
            if r.read_until(b'\n', out)? == 0 {
                return Ok(false);
            }
            while matches!(out.last(), Some(b'\n' | b'\r')) {
                out.pop();
            }
            if !out.iter().all(u8::is_ascii_whitespace) {
                return Ok(true);
            }
        }
    }
}

/// One sender thread's source.
pub(crate) enum ThreadSource<'a> {
    Synthetic(Box<Generator>),
    Lines(&'a Lines),
}

/// What a source wrote.
pub(crate) enum Next {
    /// An event; the generator's own view of it when synthetic.
    Event(Option<Generated>),
    /// End of input.
    End,
}

impl<'a> ThreadSource<'a> {
    /// Thread `index` of `threads`: a generator over its own shard of the trucks (so each
    /// truck's events come from one thread, in order), or the shared lines.
    pub(crate) fn new(
        config: &GeneratorConfig,
        lines: Option<&'a Lines>,
        index: u32,
        threads: u32,
    ) -> Result<Self, GeneratorError> {
        Ok(match lines {
            Some(l) => ThreadSource::Lines(l),
            None => ThreadSource::Synthetic(Box::new(Generator::shard(config, index, threads)?)),
        })
    }

    pub(crate) fn next(&mut self, ts_ms: u64, out: &mut Vec<u8>) -> std::io::Result<Next> {
        match self {
            ThreadSource::Synthetic(g) => Ok(Next::Event(Some(g.next(ts_ms, out)))),
            ThreadSource::Lines(l) => Ok(if l.next(out)? {
                Next::Event(None)
            } else {
                Next::End
            }),
        }
    }

    /// Truck id of the last synthetic event.
    pub(crate) fn last_truck(&self) -> Option<&[u8]> {
        match self {
            ThreadSource::Synthetic(g) => Some(g.last_truck()),
            ThreadSource::Lines(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!("synthetic".parse(), Ok(SourceSpec::Synthetic));
        assert_eq!("stdin".parse(), Ok(SourceSpec::Stdin));
        assert_eq!(
            "file:/tmp/x.jsonl".parse(),
            Ok(SourceSpec::File("/tmp/x.jsonl".into()))
        );
        assert!("file:".parse::<SourceSpec>().is_err());
        assert!("kafka".parse::<SourceSpec>().is_err());
    }

    #[test]
    fn lines_skip_blanks_and_strip_endings() {
        let dir = std::env::temp_dir().join(format!("fs-lines-{}", std::process::id()));
        std::fs::write(&dir, b"{\"a\":1}\r\n\n   \n{\"b\":2}").unwrap();
        let l = Lines::open(&SourceSpec::File(dir.clone()))
            .unwrap()
            .unwrap();
        let mut buf = Vec::new();
        assert!(l.next(&mut buf).unwrap());
        assert_eq!(buf, b"{\"a\":1}");
        assert!(l.next(&mut buf).unwrap());
        assert_eq!(buf, b"{\"b\":2}");
        assert!(!l.next(&mut buf).unwrap());
        let _ = std::fs::remove_file(dir);
    }
}
