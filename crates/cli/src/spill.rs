//! Bounded memory for comparing whole tables: records are hash-partitioned
//! by key into files on local disk, then read back one partition at a
//! time. A partition too large for the budget is split again with the next
//! level's hash (a grace hash join), so memory stays bounded whatever the
//! table size; disk holds about one copy of what was spilled.
//!
//! **Invariant:** every record of one key lands in the same partition at
//! every level, so a partition read back holds every record of its keys.
//!
//! **Invariant:** what is held at once is one partition (at most the budget,
//! counted as its file bytes times [`EXPANSION`]) plus the write buffers,
//! unless one key alone is larger.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use relay_core::diff::{partition_of, partitions_for};
use relay_core::item::CanonicalKey;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// In-memory size of a partition read back, as a multiple of its spilled
/// bytes (hash maps of attribute names and values against their JSON); the
/// peak RSS `make bench-memory` measures is the check (BENCHMARKS.md).
pub const EXPANSION: u64 = 4;
/// Files open at once: 128 write buffers of 16 KiB (2 MiB), and well under
/// the usual limit of open files (256 on macOS).
pub const MAX_PARTS: u32 = 128;
/// Partitions when the tables' size is unknown (DescribeTable's
/// TableSizeBytes is 0 for hours after a restore).
pub const UNKNOWN_SIZE_PARTS: u32 = 64;
/// Levels before a partition is read whatever its size (one key that
/// large cannot be split).
const MAX_LEVEL: u32 = 8;
const BUFFER: usize = 16 * 1024;

/// What a spill did: how much it wrote and the most it held at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SpillStats {
    pub records: u64,
    pub bytes: u64,
    /// Partitions read back (after splits).
    pub partitions: u64,
    /// Partitions split because they were over the budget.
    pub splits: u64,
    pub max_records_held: u64,
    pub max_bytes_held: u64,
}

/// Records of type `R` partitioned by key on disk.
#[derive(Debug)]
pub struct Spill<R> {
    dir: tempfile::TempDir,
    writers: Vec<Mutex<BufWriter<File>>>,
    paths: Vec<PathBuf>,
    budget: u64,
    records: AtomicU64,
    bytes: AtomicU64,
    _r: PhantomData<fn() -> R>,
}

impl<R: Serialize + DeserializeOwned> Spill<R> {
    /// A spill in a new temporary directory under `parent` (the system's
    /// temporary directory when `None`), with partitions for about
    /// `expected_bytes` of records at `budget` bytes of memory (0: unknown).
    pub fn new(parent: Option<&Path>, expected_bytes: u64, budget: u64) -> Result<Self> {
        let dir = match parent {
            Some(p) => tempfile::Builder::new().prefix("ddb-relay-").tempdir_in(p),
            None => tempfile::Builder::new().prefix("ddb-relay-").tempdir(),
        }
        .context("cannot create a spill directory (set --work-dir to a disk with room)")?;
        let parts = if expected_bytes == 0 {
            UNKNOWN_SIZE_PARTS
        } else {
            partitions_for(expected_bytes, EXPANSION, budget, MAX_PARTS)
        };
        let mut writers = Vec::with_capacity(parts as usize);
        let mut paths = Vec::with_capacity(parts as usize);
        for i in 0..parts {
            let path = dir.path().join(format!("p{i}"));
            writers.push(Mutex::new(BufWriter::with_capacity(BUFFER, create(&path)?)));
            paths.push(path);
        }
        Ok(Spill {
            dir,
            writers,
            paths,
            budget,
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            _r: PhantomData,
        })
    }

    /// Adds one record under `key` (callable from concurrent tasks).
    pub fn push(&self, key: &CanonicalKey, record: &R) -> Result<()> {
        let line = encode(key, record)?;
        let p = partition_of(key, 0, self.writers.len() as u32) as usize;
        let mut w = self.writers[p].lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(&line).context("cannot write a spill file")?;
        self.records.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the records back, one partition per call of `each` (every
    /// record of a key in the same call), and removes the files.
    pub fn drain(
        self,
        mut each: impl FnMut(Vec<(CanonicalKey, R)>) -> Result<()>,
    ) -> Result<SpillStats> {
        for w in &self.writers {
            w.lock()
                .unwrap_or_else(|e| e.into_inner())
                .flush()
                .context("cannot write a spill file")?;
        }
        let mut stats = SpillStats {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            ..SpillStats::default()
        };
        drop(self.writers);
        let mut todo: Vec<(PathBuf, u32)> = self.paths.into_iter().rev().map(|p| (p, 0)).collect();
        let mut read_back = 0u64;
        while let Some((path, level)) = todo.pop() {
            let len = std::fs::metadata(&path)
                .with_context(|| format!("a spill file is gone: {}", path.display()))?
                .len();
            if len == 0 {
                std::fs::remove_file(&path).ok();
                continue;
            }
            if len.saturating_mul(EXPANSION) > self.budget && level < MAX_LEVEL {
                let parts = partitions_for(len, EXPANSION, self.budget, MAX_PARTS).max(2);
                let subs = split(&path, level + 1, parts)?;
                stats.splits += 1;
                // One key (or keys that always hash together) cannot be
                // split: read it whole rather than rewrite it again.
                let stuck = subs.iter().any(|(_, n)| *n == len);
                let next = if stuck { MAX_LEVEL } else { level + 1 };
                todo.extend(subs.into_iter().rev().map(|(p, _)| (p, next)));
                continue;
            }
            let mut records = Vec::new();
            for line in lines(&path)? {
                records.push(decode(&line?)?);
            }
            std::fs::remove_file(&path).ok();
            stats.partitions += 1;
            read_back += records.len() as u64;
            stats.max_records_held = stats.max_records_held.max(records.len() as u64);
            stats.max_bytes_held = stats.max_bytes_held.max(len);
            each(records)?;
        }
        drop(self.dir);
        if read_back != stats.records {
            bail!(
                "the spill files gave back {read_back} of {} records: the comparison is incomplete (was the work directory cleaned while it ran?)",
                stats.records
            );
        }
        Ok(stats)
    }
}

fn create(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("cannot create spill file {}", path.display()))
}

fn lines(path: &Path) -> Result<impl Iterator<Item = Result<String>>> {
    let f =
        File::open(path).with_context(|| format!("cannot read spill file {}", path.display()))?;
    Ok(BufReader::with_capacity(BUFFER, f)
        .lines()
        .map(|l| l.context("cannot read a spill file")))
}

/// Splits one partition file into `parts` files at `level`; returns them
/// with their sizes.
fn split(path: &Path, level: u32, parts: u32) -> Result<Vec<(PathBuf, u64)>> {
    let paths: Vec<PathBuf> = (0..parts)
        .map(|i| PathBuf::from(format!("{}.{i}", path.display())))
        .collect();
    let mut writers = paths
        .iter()
        .map(|p| create(p).map(|f| BufWriter::with_capacity(BUFFER, f)))
        .collect::<Result<Vec<_>>>()?;
    for line in lines(path)? {
        let line = line?;
        let key = key_of_line(&line)?;
        let w = &mut writers[partition_of(&key, level, parts) as usize];
        w.write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .context("cannot write a spill file")?;
    }
    for mut w in writers {
        w.flush().context("cannot write a spill file")?;
    }
    std::fs::remove_file(path).ok();
    paths
        .into_iter()
        .map(|p| {
            let n = std::fs::metadata(&p)
                .context("cannot read a spill file")?
                .len();
            Ok((p, n))
        })
        .collect()
}

/// One line: the key in hex, a tab, the record as JSON.
fn encode<R: Serialize>(key: &CanonicalKey, record: &R) -> Result<Vec<u8>> {
    let mut line = hex::encode(key.as_bytes()).into_bytes();
    line.push(b'\t');
    serde_json::to_writer(&mut line, record).context("cannot encode a spill record")?;
    line.push(b'\n');
    Ok(line)
}

fn key_of_line(line: &str) -> Result<CanonicalKey> {
    let (k, _) = line
        .split_once('\t')
        .ok_or_else(|| anyhow!("a spill file line has no key"))?;
    Ok(CanonicalKey::from_bytes(
        hex::decode(k).context("a spill file line has a bad key")?,
    ))
}

fn decode<R: DeserializeOwned>(line: &str) -> Result<(CanonicalKey, R)> {
    let key = key_of_line(line)?;
    let (_, json) = line.split_once('\t').unwrap_or_default();
    Ok((
        key,
        serde_json::from_str(json).context("a spill file line is not a record")?,
    ))
}

/// A queue of records on disk, written once and read once in order (the
/// suspects of a verify between its re-check rounds).
#[derive(Debug)]
pub struct Queue<T> {
    file: tempfile::NamedTempFile,
    out: BufWriter<File>,
    pub len: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub fn new(parent: Option<&Path>) -> Result<Self> {
        let file = match parent {
            Some(p) => tempfile::NamedTempFile::new_in(p),
            None => tempfile::NamedTempFile::new(),
        }
        .context("cannot create a spill file (set --work-dir to a disk with room)")?;
        let out =
            BufWriter::with_capacity(BUFFER, file.reopen().context("cannot open a spill file")?);
        Ok(Queue {
            file,
            out,
            len: 0,
            _t: PhantomData,
        })
    }

    pub fn push(&mut self, record: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, record).context("cannot write a spill file")?;
        self.out
            .write_all(b"\n")
            .context("cannot write a spill file")?;
        self.len += 1;
        Ok(())
    }

    /// The records in the order pushed, `chunk` at a time.
    pub fn chunks(mut self, chunk: usize) -> Result<impl Iterator<Item = Result<Vec<T>>>> {
        self.out.flush().context("cannot write a spill file")?;
        let mut it = lines(self.file.path())?;
        let keep = self.file;
        Ok(std::iter::from_fn(move || {
            let _ = &keep;
            let mut out = Vec::new();
            for line in it.by_ref() {
                match line.and_then(|l| {
                    serde_json::from_str(&l).context("a spill file line is not a record")
                }) {
                    Ok(r) => out.push(r),
                    Err(e) => return Some(Err(e)),
                }
                if out.len() >= chunk {
                    break;
                }
            }
            (!out.is_empty()).then_some(Ok(out))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key(i: u64) -> CanonicalKey {
        CanonicalKey::from_bytes(i.to_be_bytes().to_vec())
    }

    #[test]
    fn every_record_of_a_key_comes_back_together_within_the_budget() {
        // ~60 KB of records against a 16 KB budget: 8 partitions from the
        // start (an estimate of 32 KB), and splits for what is over.
        let spill: Spill<(u64, String)> = Spill::new(None, 32 * 1024, 16 * 1024).unwrap();
        assert_eq!(spill.writers.len(), 8);
        let mut want: BTreeMap<CanonicalKey, Vec<(u64, String)>> = BTreeMap::new();
        for i in 0..2000u64 {
            let k = key(i % 700);
            let r = (i, format!("value {i}"));
            spill.push(&k, &r).unwrap();
            want.entry(k).or_default().push(r);
        }
        let mut got: BTreeMap<CanonicalKey, Vec<(u64, String)>> = BTreeMap::new();
        let mut seen_in: BTreeMap<CanonicalKey, usize> = BTreeMap::new();
        let mut call = 0;
        let stats = spill
            .drain(|records| {
                call += 1;
                for (k, r) in records {
                    // One call per key: never seen in an earlier call.
                    assert_eq!(*seen_in.entry(k.clone()).or_insert(call), call);
                    got.entry(k).or_default().push(r);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(got, want);
        assert_eq!(stats.records, 2000);
        assert!(stats.splits >= 1, "{stats:?}");
        assert!(
            stats.max_bytes_held * EXPANSION <= 16 * 1024,
            "held {stats:?}"
        );
    }

    #[test]
    fn one_key_larger_than_the_budget_is_read_whole_after_one_split() {
        let spill: Spill<u64> = Spill::new(None, 1, 1024).unwrap();
        for i in 0..1000u64 {
            spill.push(&key(7), &i).unwrap();
        }
        let mut calls = Vec::new();
        let stats = spill
            .drain(|records| {
                calls.push(records.len());
                Ok(())
            })
            .unwrap();
        assert_eq!(calls, vec![1000]);
        assert_eq!(stats.splits, 1, "{stats:?}");
    }

    #[test]
    fn a_partition_lost_on_disk_is_an_error_not_a_clean_result() {
        let spill: Spill<u64> = Spill::new(None, 1, 1 << 20).unwrap();
        for i in 0..10u64 {
            spill.push(&key(i), &i).unwrap();
        }
        for w in &spill.writers {
            w.lock().unwrap().flush().unwrap();
        }
        std::fs::write(&spill.paths[0], b"").unwrap();
        let err = spill.drain(|_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("gave back 0 of 10"), "{err}");
    }

    #[test]
    fn a_queue_returns_what_was_pushed_in_order() {
        let mut q: Queue<u32> = Queue::new(None).unwrap();
        for i in 0..10 {
            q.push(&i).unwrap();
        }
        assert_eq!(q.len, 10);
        let chunks: Vec<Vec<u32>> = q.chunks(4).unwrap().map(Result::unwrap).collect();
        assert_eq!(chunks, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        let empty: Queue<u32> = Queue::new(None).unwrap();
        assert_eq!(empty.chunks(4).unwrap().count(), 0);
    }
}
