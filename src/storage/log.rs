//! The durable engine: a log of records on disk, and every key's value in memory.
//!
//! Every change (a stored copy, an appended item, a removal, and the records of
//! [`super::Record`]: prepared writes, decisions, floors, applied request ids) is one record
//! appended to the current **segment** file before it changes the in-memory state. Reads never
//! touch the disk: the index is the in-memory engine ([`super::Memory`]), so a durable server
//! reads as fast as an in-memory one. When a segment passes [`LogOptions::segment_bytes_max`] the
//! log moves to a new one; when the log since the last snapshot grows past twice the last
//! snapshot (and at least [`LogOptions::compact_bytes_min`]), the engine writes a **snapshot** of
//! its whole state and deletes the segments it covers.
//!
//! # On disk
//! * `wal-NNNNNNNNNNNNNNNN.log`: a segment (number in hex). An 8-byte magic header, then
//!   records.
//! * `snap-NNNNNNNNNNNNNNNN.snap`: the whole state as of the start of segment N: a magic
//!   header, records, and a closing record that counts them. Written as `.tmp`, synced, renamed,
//!   and the directory synced, so a snapshot under its final name is always whole.
//! * A record: its payload's length (4 bytes, little endian), a CRC-32 of the length and the
//!   payload (4 bytes), and the payload (postcard). At most [`super::RECORD_BYTES_MAX`].
//!
//! # Recovery rules (what [`Log::open`] does)
//! 1. Leftover `snap-*.tmp` files (a snapshot that was being written) are deleted. Names the
//!    log does not know are left alone: another engine may share the directory under a prefix
//!    ([`super::disk::Prefixed`]).
//! 2. The newest snapshot is loaded. If any of its records fails its CRC, or its closing record
//!    is missing, the server **refuses to start**: the segments it replaced are gone, so nothing
//!    can rebuild the state. The message names the file and the offset and says how to recover
//!    (move the data dir away: the server rejoins empty and the other replicas refill it).
//! 3. The segments from the snapshot's number on (from 1 without a snapshot) are replayed in
//!    order. They must be consecutive: a missing one is refused, naming it. Segments older than
//!    the snapshot are left over from an interrupted compaction and are deleted.
//! 4. In the **last** segment, a record that is cut short or fails its CRC, with no valid record
//!    anywhere after it, is a **torn tail** (the process died in the middle of a write that was
//!    never acknowledged, since acknowledgements wait for the sync): the segment is truncated
//!    there, with a warning naming what was cut. A bad record with a valid one after it, or a bad
//!    record in any other segment, is **corruption**: refused as in rule 2. An empty last segment
//!    (or one cut inside its header) is a torn creation and is recreated.
//! 5. Replaying is idempotent and version-guarded (a copy is stored only over an older version,
//!    an append only onto an older list), so a snapshot and the segments after it can both hold
//!    a change.
//! 6. The segments replayed are synced (a killed process leaves its unsynced writes with the
//!    operating system, and the engine is about to serve them and build on them), then the
//!    engine opens a new segment, synced with its directory, and serves.
//!
//! # Failures while serving
//! * A write that fails (disk full, say) is undone by truncating the segment back to where it
//!   was, and refused with a clear error; the in-memory state is unchanged, so nothing is
//!   corrupted and later writes go on when space returns. If the truncation fails too, or a sync
//!   fails, the engine refuses every later write until the server restarts (after a failed
//!   fsync the kernel may have dropped the pages: only recovery from the file knows what is on
//!   disk).
//! * A data dir another process has open is refused at start ([`super::disk::RealDisk::open`]).
//!
//! # Deliberately left out
//! * Values larger than memory: every value lives in memory, as in Bitcask's key directory but
//!   with the values too. A store larger than memory needs an engine that reads from disk.
//! * Incremental snapshots: the snapshot is serialized under the server's lock (about 1 s per
//!   million keys of 100 bytes here; see BENCHMARKS.md), then written and synced off it.
//! * Checksums of values end to end (from the client): the CRC covers the disk, not the network.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::disk::{Disk, DiskFile};
use super::durability::{Durability, FsyncMode, Lsn};
use super::record::{describe_bad, frame, read_record, valid_record_after, Bad};
use super::APPLIED_MAX;
use super::{Engine, Memory, PreparedTx, Record, Recovered, DECIDED_MAX, FLOORS_MAX};
use crate::bounded::BoundedMap;
use crate::error::{Error, Result};
use crate::types::{Key, TxId, TxState, Version, Versioned};

/// The first bytes of a segment.
const SEGMENT_MAGIC: &[u8; 8] = b"RLWAL\x00\x00\x01";
/// The first bytes of a snapshot.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RLSNP\x00\x00\x01";
/// Records replayed between two progress lines at start.
pub const PROGRESS_RECORDS: u64 = 1_000_000;
/// Default size at which the log moves to a new segment.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default log size, since the last snapshot, below which no snapshot is taken.
pub const COMPACT_BYTES_MIN_DEFAULT: u64 = 64 * 1024 * 1024;

/// How the log engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    pub fsync: FsyncMode,
    pub segment_bytes_max: u64,
    /// A snapshot is taken once the log since the last one passes both this and twice the last
    /// snapshot's size.
    pub compact_bytes_min: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncMode::Batch,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            compact_bytes_min: COMPACT_BYTES_MIN_DEFAULT,
        }
    }
}

/// One record of the log or of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
enum Entry<'a> {
    Put {
        key: Cow<'a, str>,
        versioned: Cow<'a, Versioned>,
    },
    /// `item` added to the list at `key`, which was at version `base` (0: absent) and is now
    /// at `version`.
    Append {
        key: Cow<'a, str>,
        item: Cow<'a, str>,
        base: Version,
        version: Version,
    },
    Remove {
        key: Cow<'a, str>,
        version: Version,
    },
    Prepared(Cow<'a, PreparedTx>),
    Decided {
        tx: TxId,
        state: TxState,
    },
    Floor {
        key: Cow<'a, str>,
        version: Version,
    },
    Applied {
        request_id: u128,
        version: Version,
    },
    Batch(Cow<'a, [(Key, Versioned)]>),
    /// Closes a snapshot: the records before it.
    SnapshotEnd {
        records: u64,
    },
}

/// What the records other than keys add up to: what [`Engine::recovered`] hands back.
#[derive(Debug)]
struct Meta {
    pending: BTreeMap<TxId, PreparedTx>,
    decided: BoundedMap<TxId, TxState>,
    floors: BoundedMap<Key, Version>,
    applied: BoundedMap<u128, Version>,
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            pending: BTreeMap::new(),
            decided: BoundedMap::new(DECIDED_MAX),
            floors: BoundedMap::new(FLOORS_MAX),
            applied: BoundedMap::new(APPLIED_MAX),
        }
    }
}

/// The state both the log and a snapshot rebuild.
#[derive(Debug, Default)]
struct State {
    index: Memory,
    meta: Meta,
}

impl State {
    /// Applies one record, idempotently (see the module doc, rule 5).
    fn apply(&mut self, entry: Entry<'_>) {
        match entry {
            Entry::Put { key, versioned } => {
                // put_if_newer on the in-memory engine cannot fail.
                let _ = self
                    .index
                    .put_if_newer(key.into_owned(), versioned.into_owned());
            }
            Entry::Append {
                key,
                item,
                base,
                version,
            } => {
                let held = self.index.version(&key);
                if held == base {
                    if self
                        .index
                        .append(key.to_string(), item.into_owned(), version)
                        .is_err()
                    {
                        warn!(key_bytes = key.len(), "replayed append onto a text skipped");
                    }
                } else if held < version {
                    // Only a snapshot can hold a key at another version than the log expects,
                    // and only a newer one: the list the item went onto is not this one.
                    warn!(
                        key_bytes = key.len(),
                        held,
                        base,
                        version,
                        "replayed append onto another version of its list skipped"
                    );
                }
            }
            Entry::Remove { key, version } => {
                if self.index.version(&key) <= version {
                    let _ = self.index.remove(&key);
                }
            }
            Entry::Prepared(prepared) => {
                let prepared = prepared.into_owned();
                self.meta.pending.insert(prepared.tx, prepared);
            }
            Entry::Decided { tx, state } => {
                self.meta.pending.remove(&tx);
                self.meta.decided.insert(tx, state);
            }
            Entry::Floor { key, version } => {
                self.meta.floors.insert(key.into_owned(), version);
            }
            Entry::Applied {
                request_id,
                version,
            } => {
                self.meta.applied.insert(request_id, version);
            }
            Entry::Batch(batch) => {
                for (key, versioned) in batch.into_owned() {
                    let _ = self.index.put_if_newer(key, versioned);
                }
            }
            Entry::SnapshotEnd { .. } => {}
        }
    }
}

/// The segment being appended to.
#[derive(Debug)]
struct Segment {
    seq: u64,
    file: Arc<dyn DiskFile>,
    len: u64,
}

/// What opening found, for the start-up line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub keys: usize,
    pub records: u64,
    pub segments: usize,
    /// The snapshot loaded, if any.
    pub snapshot: Option<String>,
    /// Torn tails cut off, one line each.
    pub truncated: Vec<String>,
}

/// The log engine. See the module doc.
#[derive(Debug)]
pub struct Log {
    disk: Arc<dyn Disk>,
    state: State,
    segment: Segment,
    written: Lsn,
    durability: Durability,
    options: LogOptions,
    bytes_since_snapshot: u64,
    snapshot_bytes: u64,
    compacting: Arc<AtomicBool>,
    /// Why the engine refuses every write, once it must.
    failed: Option<String>,
    buf: Vec<u8>,
    report: OpenReport,
}

fn segment_name(seq: u64) -> String {
    format!("wal-{seq:016x}.log")
}

fn snapshot_name(seq: u64) -> String {
    format!("snap-{seq:016x}.snap")
}

fn parse_seq(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// How every refusal of a damaged log begins; [`Log::open_advising`] adds how to recover.
const DAMAGED: &str = "the data dir is damaged:";

/// How to recover from a damaged log whose keys other replicas hold (the default).
pub const DAMAGE_ADVICE_REPLICATED: &str = "To recover, move the data dir away (keep it for \
     inspection) and start the server again: it rejoins empty under a new id and the other \
     replicas refill it";

fn corrupt(disk: &dyn Disk, name: &str, offset: usize, what: &str) -> Error {
    Error::Internal(format!(
        "{DAMAGED} {} at byte {offset}: {what}. The server will not start on it, because it \
         cannot tell which keys the damage touched.",
        disk.describe(name)
    ))
}

fn io_error(disk: &dyn Disk, name: &str, doing: &str, err: std::io::Error) -> Error {
    if err.kind() == std::io::ErrorKind::StorageFull {
        return Error::Refused(format!(
            "disk full: {doing} {} failed ({err}); free some space",
            disk.describe(name)
        ));
    }
    Error::Internal(format!("{doing} {}: {err}", disk.describe(name)))
}

impl Log {
    /// Opens the log in `disk`, recovering what is there (see the module doc for the rules). A
    /// damaged log is refused with [`DAMAGE_ADVICE_REPLICATED`].
    pub fn open(disk: Arc<dyn Disk>, options: LogOptions) -> Result<Self> {
        Self::open_advising(disk, options, DAMAGE_ADVICE_REPLICATED)
    }

    /// [`Log::open`], refusing a damaged log with `advice` on how to recover: what to do
    /// depends on what the log holds (keys other replicas refill, or keys nobody else has).
    pub fn open_advising(disk: Arc<dyn Disk>, options: LogOptions, advice: &str) -> Result<Self> {
        Self::recover(disk, options).map_err(|err| match err {
            Error::Internal(message) if message.starts_with(DAMAGED) => {
                Error::Internal(format!("{message} {advice}"))
            }
            other => other,
        })
    }

    fn recover(disk: Arc<dyn Disk>, options: LogOptions) -> Result<Self> {
        let names = disk
            .list()
            .map_err(|err| io_error(&*disk, "", "listing", err))?;
        let mut segments = Vec::new();
        let mut snapshots = Vec::new();
        let mut leftovers = false;
        for name in &names {
            if let Some(seq) = parse_seq(name, "wal-", ".log") {
                segments.push(seq);
            } else if let Some(seq) = parse_seq(name, "snap-", ".snap") {
                snapshots.push(seq);
            } else if name.starts_with("snap-") && name.ends_with(".tmp") {
                disk.remove(name)
                    .map_err(|err| io_error(&*disk, name, "removing", err))?;
                leftovers = true;
            }
        }
        segments.sort_unstable();
        snapshots.sort_unstable();
        let mut state = State::default();
        let mut report = OpenReport::default();
        let mut snapshot_bytes = 0;
        let base = match snapshots.last() {
            Some(&seq) => {
                let name = snapshot_name(seq);
                snapshot_bytes = Self::load_snapshot(&*disk, &name, &mut state, &mut report)?;
                report.snapshot = Some(name);
                seq
            }
            // Without a snapshot the log starts at segment 1: a later first one means the
            // first is missing.
            None => 1,
        };
        for &old in snapshots.iter().filter(|&&s| s < base) {
            let name = snapshot_name(old);
            disk.remove(&name)
                .map_err(|err| io_error(&*disk, &name, "removing", err))?;
            leftovers = true;
        }
        for &old in segments.iter().filter(|&&s| s < base) {
            let name = segment_name(old);
            disk.remove(&name)
                .map_err(|err| io_error(&*disk, &name, "removing", err))?;
            leftovers = true;
        }
        segments.retain(|&s| s >= base);
        if let Some(&first) = segments.first() {
            if first != base {
                return Err(corrupt(
                    &*disk,
                    &segment_name(base),
                    0,
                    "this segment is missing (the snapshot or the segments after it need it)",
                ));
            }
        }
        for pair in segments.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(corrupt(
                    &*disk,
                    &segment_name(pair[0] + 1),
                    0,
                    "this segment is missing between two that are present",
                ));
            }
        }
        let mut bytes_since_snapshot = 0;
        let mut next_seq = base;
        for (i, &seq) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let name = segment_name(seq);
            let replayed = Self::replay_segment(&*disk, &name, last, &mut state, &mut report)?;
            bytes_since_snapshot += replayed.bytes;
            report.segments += 1;
            next_seq = match replayed.recreate {
                true => seq,
                // Only a damaged or hand-made data dir holds the largest number: no segment
                // can follow it.
                false => seq.checked_add(1).ok_or_else(|| {
                    corrupt(
                        &*disk,
                        &name,
                        0,
                        "its number is the largest there is, so no segment can follow it",
                    )
                })?,
            };
        }
        if leftovers {
            disk.sync_dir()
                .map_err(|err| io_error(&*disk, "", "syncing", err))?;
        }
        let file = Self::create_segment(&*disk, next_seq)?;
        report.keys = state.index.len();
        let written = SEGMENT_MAGIC.len() as u64;
        let durability =
            Durability::new(file.clone(), written, disk.syncs_block(), disk.sync_delay());
        Ok(Self {
            segment: Segment {
                seq: next_seq,
                file,
                len: written,
            },
            written,
            durability,
            options,
            bytes_since_snapshot,
            snapshot_bytes,
            compacting: Arc::new(AtomicBool::new(false)),
            failed: None,
            buf: Vec::new(),
            report,
            state,
            disk,
        })
    }

    /// What opening found.
    pub fn report(&self) -> &OpenReport {
        &self.report
    }

    fn load_snapshot(
        disk: &dyn Disk,
        name: &str,
        state: &mut State,
        report: &mut OpenReport,
    ) -> Result<u64> {
        let bytes = disk
            .read(name)
            .map_err(|err| io_error(disk, name, "reading", err))?;
        if bytes.get(..SNAPSHOT_MAGIC.len()) != Some(&SNAPSHOT_MAGIC[..]) {
            return Err(corrupt(disk, name, 0, "the snapshot header is wrong"));
        }
        let mut offset = SNAPSHOT_MAGIC.len();
        let mut records: u64 = 0;
        loop {
            match read_record(&bytes, offset) {
                Ok((Entry::SnapshotEnd { records: count }, next)) => {
                    if count != records || next != bytes.len() {
                        return Err(corrupt(
                            disk,
                            name,
                            offset,
                            "the snapshot's closing record does not match its content",
                        ));
                    }
                    break;
                }
                Ok((entry, next)) => {
                    state.apply(entry);
                    records += 1;
                    report.records += 1;
                    if report.records.is_multiple_of(PROGRESS_RECORDS) {
                        info!(records = report.records, file = name, "recovering");
                    }
                    offset = next;
                }
                Err(bad) => return Err(corrupt(disk, name, offset, &describe_bad(&bad))),
            }
        }
        Ok(bytes.len() as u64)
    }

    fn replay_segment(
        disk: &dyn Disk,
        name: &str,
        last: bool,
        state: &mut State,
        report: &mut OpenReport,
    ) -> Result<Replayed> {
        let bytes = disk
            .read(name)
            .map_err(|err| io_error(disk, name, "reading", err))?;
        if bytes.len() < SEGMENT_MAGIC.len() {
            if last && SEGMENT_MAGIC.starts_with(&bytes) {
                report.truncated.push(format!(
                    "{}: an empty segment, recreated",
                    disk.describe(name)
                ));
                return Ok(Replayed {
                    bytes: 0,
                    recreate: true,
                });
            }
            return Err(corrupt(
                disk,
                name,
                0,
                "the segment is empty or cut inside its header",
            ));
        }
        if bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC[..] {
            return Err(corrupt(disk, name, 0, "the segment header is wrong"));
        }
        let mut offset = SEGMENT_MAGIC.len();
        while offset < bytes.len() {
            match read_record(&bytes, offset) {
                Ok((entry, next)) => {
                    state.apply(entry);
                    report.records += 1;
                    if report.records.is_multiple_of(PROGRESS_RECORDS) {
                        info!(records = report.records, file = name, "recovering");
                    }
                    offset = next;
                }
                Err(Bad::Undecodable(err)) => {
                    return Err(corrupt(
                        disk,
                        name,
                        offset,
                        &describe_bad(&Bad::Undecodable(err)),
                    ))
                }
                Err(bad) if last && !valid_record_after(&bytes, offset) => {
                    let cut = bytes.len() - offset;
                    let file = disk
                        .open_append(name)
                        .map_err(|err| io_error(disk, name, "opening", err))?;
                    file.truncate(offset as u64)
                        .and_then(|()| file.sync())
                        .map_err(|err| io_error(disk, name, "truncating", err))?;
                    let line = format!(
                        "{}: a torn tail of {cut} bytes cut at byte {offset} ({})",
                        disk.describe(name),
                        describe_bad(&bad)
                    );
                    warn!("{line}");
                    report.truncated.push(line);
                    break;
                }
                Err(bad) => return Err(corrupt(disk, name, offset, &describe_bad(&bad))),
            }
        }
        // What was replayed is served from now on, and later records build on it: make it
        // durable, in case the process that wrote it died before syncing it (the operating
        // system kept the bytes, a power failure would not).
        disk.open_append(name)
            .and_then(|file| file.sync())
            .map_err(|err| io_error(disk, name, "syncing", err))?;
        Ok(Replayed {
            bytes: offset as u64,
            recreate: false,
        })
    }

    fn create_segment(disk: &dyn Disk, seq: u64) -> Result<Arc<dyn DiskFile>> {
        let name = segment_name(seq);
        let file = disk
            .create(&name)
            .map_err(|err| io_error(disk, &name, "creating", err))?;
        let created = file
            .append(SEGMENT_MAGIC)
            .and_then(|()| file.sync())
            .and_then(|()| disk.sync_dir());
        if let Err(err) = created {
            // A half-made segment must not outlive the failure: the log goes on in the segment
            // before it, which would then no longer be the last one, and a torn tail there
            // would be refused as corruption at the next start.
            if disk.remove(&name).and_then(|()| disk.sync_dir()).is_err() {
                warn!(file = %disk.describe(&name), "could not remove a half-made segment");
            }
            return Err(io_error(disk, &name, "creating", err));
        }
        Ok(file)
    }

    /// Appends one record to the current segment, syncing it as the fsync mode says.
    fn write(&mut self, entry: &Entry<'_>) -> Result<()> {
        if let Some(why) = &self.failed {
            return Err(Error::Refused(format!(
                "the data dir cannot be written ({why}); writes are refused until the server restarts"
            )));
        }
        self.buf.clear();
        frame(entry, &mut self.buf)?;
        let name = segment_name(self.segment.seq);
        if let Err(err) = self.segment.file.append(&self.buf) {
            if let Err(undo) = self.segment.file.truncate(self.segment.len) {
                self.fail(format!("a failed write could not be undone: {undo}"));
            }
            return Err(io_error(&*self.disk, &name, "writing", err));
        }
        let bytes = self.buf.len() as u64;
        self.segment.len += bytes;
        self.written += bytes;
        self.bytes_since_snapshot += bytes;
        match self.options.fsync {
            FsyncMode::Always => {
                if let Err(err) = self.segment.file.sync() {
                    self.fail(format!("sync failed: {err}"));
                    return Err(io_error(&*self.disk, &name, "syncing", err));
                }
                self.durability.advance(self.written, true);
            }
            FsyncMode::Batch => self.durability.advance(self.written, false),
            FsyncMode::Never => self.durability.advance(self.written, true),
        }
        if self.segment.len >= self.options.segment_bytes_max {
            // The record is written: failing to move on is not the write's failure.
            if let Err(err) = self.roll() {
                warn!(%err, "could not start a new log segment; going on with this one");
            }
        }
        // No compaction here: the caller has not applied the record to the state yet, and a
        // snapshot taken now would delete the segment holding it. Callers compact after.
        Ok(())
    }

    fn fail(&mut self, why: String) {
        warn!(%why, "the data dir can no longer be written");
        self.durability.fail(why.clone());
        self.failed.get_or_insert(why);
    }

    /// Syncs the current segment and starts the next.
    fn roll(&mut self) -> Result<()> {
        let name = segment_name(self.segment.seq);
        if let Err(err) = self.segment.file.sync() {
            self.fail(format!("sync failed: {err}"));
            return Err(io_error(&*self.disk, &name, "syncing", err));
        }
        let seq = self.segment.seq.checked_add(1).ok_or_else(|| {
            corrupt(
                &*self.disk,
                &name,
                0,
                "its number is the largest there is, so no segment can follow it",
            )
        })?;
        let file = Self::create_segment(&*self.disk, seq)?;
        self.written += SEGMENT_MAGIC.len() as u64;
        self.durability.switch_file(file.clone(), self.written);
        self.segment = Segment {
            seq,
            file,
            len: SEGMENT_MAGIC.len() as u64,
        };
        Ok(())
    }

    /// Takes a snapshot if the log has grown enough. Called after a change is in the in-memory
    /// state, never between writing its record and applying it: the snapshot must hold every
    /// change whose record is in a segment it replaces.
    fn maybe_compact(&mut self) {
        let threshold = self
            .options
            .compact_bytes_min
            .max(self.snapshot_bytes.saturating_mul(2));
        if self.bytes_since_snapshot < threshold || self.compacting.load(Ordering::Acquire) {
            return;
        }
        if let Err(err) = self.roll() {
            warn!(%err, "could not start a new log segment for a snapshot");
            return;
        }
        let seq = self.segment.seq;
        let snapshot = match self.serialize_snapshot() {
            Ok(snapshot) => snapshot,
            Err(err) => {
                warn!(%err, "could not serialize a snapshot");
                return;
            }
        };
        self.snapshot_bytes = snapshot.len() as u64;
        self.bytes_since_snapshot = 0;
        self.compacting.store(true, Ordering::Release);
        let disk = self.disk.clone();
        let compacting = self.compacting.clone();
        let job = move || {
            if let Err(err) = write_snapshot(&*disk, seq, &snapshot) {
                warn!(%err, "snapshot failed; the log is kept and a later one will try again");
            }
            compacting.store(false, Ordering::Release);
        };
        if self.disk.syncs_block() {
            let spawned = std::thread::Builder::new()
                .name("ringleader-snapshot".into())
                .spawn(job);
            if let Err(err) = spawned {
                warn!(%err, "could not start the snapshot thread");
                self.compacting.store(false, Ordering::Release);
            }
        } else {
            job();
        }
    }

    /// The whole state as snapshot bytes.
    fn serialize_snapshot(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.snapshot_bytes).unwrap_or(0));
        out.extend_from_slice(SNAPSHOT_MAGIC);
        let mut records: u64 = 0;
        for key in self.state.index.scan(None) {
            if let Some(versioned) = self.state.index.get(key) {
                frame(
                    &Entry::Put {
                        key: Cow::Borrowed(key),
                        versioned: Cow::Owned(versioned),
                    },
                    &mut out,
                )?;
                records += 1;
            }
        }
        for entry in self.meta_entries() {
            frame(&entry, &mut out)?;
            records += 1;
        }
        frame(&Entry::SnapshotEnd { records }, &mut out)?;
        Ok(out)
    }

    fn meta_entries(&self) -> impl Iterator<Item = Entry<'_>> {
        let meta = &self.state.meta;
        let pending = meta
            .pending
            .values()
            .map(|p| Entry::Prepared(Cow::Borrowed(p)));
        let decided = meta
            .decided
            .iter()
            .map(|(&tx, &state)| Entry::Decided { tx, state });
        let floors = meta.floors.iter().map(|(key, &version)| Entry::Floor {
            key: Cow::Borrowed(key),
            version,
        });
        let applied = meta
            .applied
            .iter()
            .map(|(&request_id, &version)| Entry::Applied {
                request_id,
                version,
            });
        // Decisions after the prepared records: a snapshot's replay ends with the same pending
        // set as the state it was taken from (a decided transaction is never pending there).
        pending.chain(decided).chain(floors).chain(applied)
    }

    /// Where the log stands: the next write's position.
    pub fn written(&self) -> Lsn {
        self.written
    }
}

/// What replaying one segment found.
struct Replayed {
    bytes: u64,
    /// The segment was a torn creation: write the next one under its number.
    recreate: bool,
}

/// Writes snapshot `seq` whole and durably, then deletes what it replaces.
fn write_snapshot(disk: &dyn Disk, seq: u64, bytes: &[u8]) -> Result<()> {
    let name = snapshot_name(seq);
    let tmp = format!("{name}.tmp");
    let file = disk
        .create(&tmp)
        .map_err(|err| io_error(disk, &tmp, "creating", err))?;
    let written = file.append(bytes).and_then(|()| file.sync());
    if let Err(err) = written {
        let _ = disk.remove(&tmp);
        return Err(io_error(disk, &tmp, "writing", err));
    }
    disk.rename(&tmp, &name)
        .and_then(|()| disk.sync_dir())
        .map_err(|err| io_error(disk, &name, "renaming", err))?;
    let names = disk
        .list()
        .map_err(|err| io_error(disk, "", "listing", err))?;
    for old in names {
        let older = parse_seq(&old, "wal-", ".log")
            .or_else(|| parse_seq(&old, "snap-", ".snap"))
            .is_some_and(|s| s < seq);
        if older {
            disk.remove(&old)
                .map_err(|err| io_error(disk, &old, "removing", err))?;
        }
    }
    disk.sync_dir()
        .map_err(|err| io_error(disk, "", "syncing", err))?;
    info!(file = %disk.describe(&name), bytes = bytes.len(), "snapshot written");
    Ok(())
}

impl Engine for Log {
    fn get(&self, key: &str) -> Option<Versioned> {
        self.state.index.get(key)
    }

    fn version(&self, key: &str) -> Version {
        self.state.index.version(key)
    }

    fn put_if_newer(&mut self, key: Key, versioned: Versioned) -> Result<bool> {
        if self.state.index.contains(&key) && self.state.index.version(&key) >= versioned.version {
            return Ok(false);
        }
        self.write(&Entry::Put {
            key: Cow::Borrowed(&key),
            versioned: Cow::Borrowed(&versioned),
        })?;
        let stored = self.state.index.put_if_newer(key, versioned);
        self.maybe_compact();
        stored
    }

    fn append(&mut self, key: Key, item: String, version: Version) -> Result<()> {
        if self.state.index.holds_text(&key) {
            return Err(crate::errinput!(
                "{key:?} holds a text, not a list: cannot append to it"
            ));
        }
        let base = self.state.index.version(&key);
        self.write(&Entry::Append {
            key: Cow::Borrowed(&key),
            item: Cow::Borrowed(&item),
            base,
            version,
        })?;
        let appended = self.state.index.append(key, item, version);
        self.maybe_compact();
        appended
    }

    fn remove(&mut self, key: &str) -> Result<Option<Versioned>> {
        if !self.state.index.contains(key) {
            return Ok(None);
        }
        let version = self.state.index.version(key);
        self.write(&Entry::Remove {
            key: Cow::Borrowed(key),
            version,
        })?;
        let removed = self.state.index.remove(key);
        self.maybe_compact();
        removed
    }

    fn scan<'a>(&'a self, after: Option<&'a str>) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        self.state.index.scan(after)
    }

    fn len(&self) -> usize {
        self.state.index.len()
    }

    fn record(&mut self, record: &Record<'_>) -> Result<()> {
        match record {
            Record::Prepared(prepared) => {
                self.write(&Entry::Prepared(Cow::Borrowed(prepared)))?;
                self.state
                    .meta
                    .pending
                    .insert(prepared.tx, (*prepared).clone());
            }
            Record::Decided { tx, state } => {
                self.write(&Entry::Decided {
                    tx: *tx,
                    state: *state,
                })?;
                self.state.meta.pending.remove(tx);
                self.state.meta.decided.insert(*tx, *state);
            }
            Record::Floor { key, version } => {
                self.write(&Entry::Floor {
                    key: Cow::Borrowed(key),
                    version: *version,
                })?;
                self.state.meta.floors.insert(key.to_string(), *version);
            }
            Record::Applied {
                request_id,
                version,
            } => {
                self.write(&Entry::Applied {
                    request_id: *request_id,
                    version: *version,
                })?;
                self.state.meta.applied.insert(*request_id, *version);
            }
        }
        self.maybe_compact();
        Ok(())
    }

    fn apply_batch(&mut self, batch: Vec<(Key, Versioned)>) -> Result<u64> {
        let newer: Vec<(Key, Versioned)> = batch
            .into_iter()
            .filter(|(key, versioned)| {
                !self.state.index.contains(key) || self.state.index.version(key) < versioned.version
            })
            .collect();
        if newer.is_empty() {
            return Ok(0);
        }
        self.write(&Entry::Batch(Cow::Borrowed(&newer)))?;
        let mut stored = 0;
        for (key, versioned) in newer {
            if self.state.index.put_if_newer(key, versioned)? {
                stored += 1;
            }
        }
        self.maybe_compact();
        Ok(stored)
    }

    fn durability(&self) -> Durability {
        self.durability.clone()
    }

    fn recovered(&self) -> Recovered {
        let meta = &self.state.meta;
        Recovered {
            pending: meta.pending.values().cloned().collect(),
            decided: meta.decided.iter().map(|(&tx, &s)| (tx, s)).collect(),
            floors: meta.floors.iter().map(|(k, &v)| (k.clone(), v)).collect(),
            applied: meta.applied.iter().map(|(&id, &v)| (id, v)).collect(),
        }
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
