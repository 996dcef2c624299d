//! Rejected events: those whose code cannot be extracted, so no topic can be chosen for them,
//! and those the client or the cluster refused for themselves (too large, invalid). Every one is
//! counted by class and written, as configured, to a reject file or to the dead-letter topic of
//! the topology's default topic. None is dropped silently.

use base64::Engine as _;
use fleetstream_core::EventError;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Where rejected events go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RejectSink {
    /// The dead-letter topic of the topology's default topic, with the dead-letter headers
    /// (`fs-dlq-error-class`, `fs-dlq-error-message`, `fs-dlq-attempts` 0, `fs-dlq-worker-id`
    /// `producer-<run>`) and the original `fs-message-id`. The default.
    #[default]
    DeadLetter,
    /// A file of JSON lines `{"reason", "error", "message_id", "bytes", "raw_base64"}`,
    /// created or appended to.
    File(PathBuf),
}

/// Low-cardinality reason for a rejected event. `extract_code` looks only for the code; this
/// looks a little further (cold path) so a truncated document reads `not_json`, not
/// `invalid_code`.
pub fn reject_class(bytes: &[u8], extract_error: &EventError) -> &'static str {
    if matches!(extract_error, EventError::Oversize(_)) {
        return "oversize";
    }
    if std::str::from_utf8(bytes).is_err() {
        return "not_utf8";
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
        return "not_json";
    }
    extract_error.class()
}

#[derive(Serialize)]
struct RejectLine<'a> {
    reason: &'a str,
    error: &'a str,
    message_id: &'a str,
    bytes: usize,
    raw_base64: String,
}

/// An append-only reject file shared by the sender threads.
pub(crate) struct RejectFile {
    path: PathBuf,
    out: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl RejectFile {
    pub(crate) fn open(path: PathBuf) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(RejectFile {
            path,
            out: Mutex::new(std::io::BufWriter::new(f)),
        })
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends one rejected event.
    pub(crate) fn write(
        &self,
        reason: &str,
        error: &str,
        message_id: &str,
        raw: &[u8],
    ) -> std::io::Result<()> {
        let line = RejectLine {
            reason,
            error,
            message_id,
            bytes: raw.len(),
            raw_base64: base64::engine::general_purpose::STANDARD.encode(raw),
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
    }

    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetstream_core::extract_code;

    fn class_of(bytes: &[u8]) -> &'static str {
        reject_class(bytes, &extract_code(bytes).unwrap_err())
    }

    #[test]
    fn classes_say_what_is_wrong() {
        assert_eq!(class_of(br#"{"truck_id":"T","codigo":"#), "not_json");
        assert_eq!(class_of(br#"{"truck_id":"T"}"#), "missing_code");
        assert_eq!(class_of(br#"{"codigo":"abc"}"#), "invalid_code");
        assert_eq!(class_of(b"{\"codigo\":\xff}"), "not_utf8");
        assert_eq!(class_of(b"garbage"), "not_json");
    }

    #[test]
    fn reject_file_lines_carry_reason_and_raw_bytes() {
        let dir = std::env::temp_dir().join(format!("fs-rejects-{}", rand::random::<u64>()));
        let f = RejectFile::open(dir.clone()).unwrap();
        f.write("not_utf8", "bad", "00-1", b"\xff\x00").unwrap();
        f.flush().unwrap();
        let text = std::fs::read_to_string(&dir).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["reason"], "not_utf8");
        assert_eq!(v["message_id"], "00-1");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["raw_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw, b"\xff\x00");
        let _ = std::fs::remove_file(dir);
    }
}
