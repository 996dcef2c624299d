//! The acked-ids file: every sequence Kafka acknowledged in this run, written as it happens, so
//! `fleetstream audit` can later prove each one was dispatched or dead-lettered, across
//! processes and restarts.
//!
//! The file is the header line (`fleetstream-acked-ids v1 run=<hex>`) then ranges `first-last`
//! or single sequences, one per line, appended every [`FLUSH_EVERY`] by a thread of its own (the
//! delivery-report thread only pushes a number into a buffer). A run at 13,000 msg/s writes a
//! few bytes a second: acks arrive mostly in order, so ranges are long.
//!
//! A producer killed with SIGKILL loses at most the acks of its last [`FLUSH_EVERY`] from the
//! file (a torn last line is ignored by the reader): those ids are then not checked, never
//! reported lost. The audit can only vouch for what the file holds.

use crate::metrics::AckObserver;
use fleetstream_core::audit::{acked_ids_header, encode_ranges};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often acked sequences are appended to the file.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
struct Shared {
    pending: Vec<u64>,
    closed: bool,
}

/// An [`AckObserver`] that appends acked sequences to a file. [`AckedIdsWriter::finish`]
/// writes the rest and reports an I/O error, if any happened.
#[derive(Debug)]
pub struct AckedIdsWriter {
    path: PathBuf,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Mutex<Option<JoinHandle<std::io::Result<u64>>>>,
}

impl AckedIdsWriter {
    /// Creates (truncating) `path` for run `run` and starts the writer thread.
    pub fn create(path: &Path, run: u64) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        file.write_all(acked_ids_header(run).as_bytes())?;
        let shared: Arc<(Mutex<Shared>, Condvar)> = Arc::default();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("acked-ids".into())
                .spawn(move || write_loop(file, &shared))?
        };
        Ok(Self {
            path: path.to_owned(),
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what is pending and stops the thread; returns how many sequences were written.
    /// Call once every delivery report has arrived (after the producer's flush).
    pub fn finish(&self) -> std::io::Result<u64> {
        {
            let (lock, wake) = &*self.shared;
            lock.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
            wake.notify_one();
        }
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match handle {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("acked-ids writer panicked"))),
            None => Ok(0),
        }
    }
}

impl Drop for AckedIdsWriter {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn write_loop(mut file: File, shared: &(Mutex<Shared>, Condvar)) -> std::io::Result<u64> {
    let (lock, wake) = shared;
    let mut written = 0u64;
    let mut text = String::new();
    loop {
        let (mut batch, closed) = {
            let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut guard, _) = wake
                .wait_timeout_while(guard, FLUSH_EVERY, |s| !s.closed)
                .unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut guard.pending), guard.closed)
        };
        if !batch.is_empty() {
            batch.sort_unstable();
            batch.dedup();
            text.clear();
            encode_ranges(&batch, &mut text);
            // One write per flush: a kill leaves at most a torn last line.
            file.write_all(text.as_bytes())?;
            written += batch.len() as u64;
        }
        if closed {
            file.sync_data()?;
            return Ok(written);
        }
    }
}

impl AckObserver for AckedIdsWriter {
    fn acked(&self, seq: u64, _topic: &str, _partition: i32) {
        self.shared
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending
            .push(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetstream_core::audit::AckedIds;

    #[test]
    fn acked_sequences_reach_the_file_as_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.acked");
        let w = AckedIdsWriter::create(&path, 42).unwrap();
        for seq in (0..1000).rev().filter(|s| s % 100 != 7) {
            w.acked(seq, "t", 0);
        }
        assert_eq!(w.finish().unwrap(), 990);
        let ids = AckedIds::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!((ids.run(), ids.len()), (42, 990));
        assert!(ids.contains(0) && !ids.contains(107) && ids.contains(999));
    }

    #[test]
    fn acks_are_on_disk_before_the_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.acked");
        let w = AckedIdsWriter::create(&path, 1).unwrap();
        w.acked(3, "t", 0);
        // A producer killed now keeps what the thread wrote: wait for one flush.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if AckedIds::parse(&text).unwrap().contains(3) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ack not written: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        w.finish().unwrap();
    }
}
