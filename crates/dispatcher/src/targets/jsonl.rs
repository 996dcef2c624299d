//! Appends one JSON line per delivered record to a file.

use super::{Delivery, Target, TargetError};
use fleetstream_core::{Code, TelemetryEvent};
use futures::future::{BoxFuture, FutureExt};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// One line of the file.
#[derive(Serialize)]
struct Line<'a> {
    message_id: &'a str,
    code: Code,
    topic: &'a str,
    partition: i32,
    offset: i64,
    event: &'a TelemetryEvent,
}

/// Appends `{"message_id", "code", "topic", "partition", "offset", "event"}` lines to a file.
///
/// A slice is written with one `write` call on an append-mode file, off the async threads. A
/// crash mid-write can leave a torn last line, and a write error after a partial write means the
/// retry appends those records again: readers should skip unparsable lines and deduplicate on
/// `message_id` when they need exactly-once.
#[derive(Debug, Clone)]
pub struct JsonlTarget {
    name: String,
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl JsonlTarget {
    /// Opens (creating the file and its directories) `path` for appending.
    pub fn open(name: impl Into<String>, path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            name: name.into(),
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Target for JsonlTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        code: Code,
        records: &'a [Delivery<'a>],
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        let mut buf = Vec::with_capacity(records.len() * 320);
        for d in records {
            let line = Line {
                message_id: d.id,
                code,
                topic: &d.record.topic,
                partition: d.record.partition,
                offset: d.record.offset,
                event: d.event,
            };
            if let Err(e) = serde_json::to_writer(&mut buf, &line) {
                let reason = format!("cannot serialize record {}: {e}", d.id);
                return futures::future::ready(Err(TargetError::Rejected {
                    target: self.name.clone(),
                    reason,
                }))
                .boxed();
            }
            buf.push(b'\n');
        }
        let file = Arc::clone(&self.file);
        let name = self.name.clone();
        async move {
            let written = tokio::task::spawn_blocking(move || {
                let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                file.write_all(&buf).and_then(|()| file.flush())
            })
            .await;
            match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => Err(TargetError::Io {
                    target: name,
                    source,
                }),
                Err(join) => Err(TargetError::Unavailable {
                    target: name,
                    reason: format!("writer task failed: {join}"),
                }),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::BatchRecord;

    #[tokio::test]
    async fn appends_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let target = JsonlTarget::open("archive", dir.path().join("sub/out.jsonl")).unwrap();
        let event: TelemetryEvent = serde_json::from_str(
            r#"{"truck_id":"TRK-1","codigo":300,"ts":1,"lat":0.0,"lon":0.0,"speed_kmh":1.0,"heading":0,"seq":1,"fuel_pct":1.0,"engine_temp_c":1.0,"odometer_km":1.0,"driver_id":"D"}"#,
        )
        .unwrap();
        let record = BatchRecord {
            topic: "mt-c300".into(),
            partition: 1,
            offset: 9,
            ..Default::default()
        };
        let deliveries = [
            Delivery {
                id: "m-1",
                record: &record,
                event: &event,
            },
            Delivery {
                id: "m-2",
                record: &record,
                event: &event,
            },
        ];
        target.deliver(Code(300), &deliveries).await.unwrap();
        target.deliver(Code(300), &deliveries[..1]).await.unwrap();
        let text = std::fs::read_to_string(target.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["message_id"], "m-2");
        assert_eq!(lines[0]["code"], 300);
        assert_eq!(lines[0]["offset"], 9);
        assert_eq!(lines[0]["event"]["truck_id"], "TRK-1");
    }
}
