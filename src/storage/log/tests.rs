//! Recovery, compaction, crash-model and full-disk tests of the log engine.
//!
//! * **Recovery**: each rule of the module doc, with its documented outcome, on the simulated
//!   disk and on real files in a temporary directory: the engine writes, the test damages the
//!   files from outside (a torn tail, a flipped byte, a missing or empty file, leftovers), then
//!   reopens.
//! * **Compaction**: thousands of random writes and records with small segments and snapshot
//!   thresholds; the reopened state must equal a model fed the same steps.
//! * **Crash model**: a `kill -9` keeps the operating system's page cache and so proves nothing
//!   about syncing. These run the engine on [`SimDisk`] behind [`Power`], which fails the power
//!   at a chosen disk operation (inside a write, a sync, a segment roll, a snapshot, a
//!   recovery), keeping a random prefix of every file's unsynced tail. The reopened state must
//!   be the state after some prefix of the steps, at least as long as what was acknowledged.
//! * **Full disk**: a refused write changes nothing and leaves no damage behind.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::storage::disk::{Prefixed, RealDisk, SimDisk, LOCK_FILE};
use crate::storage::record::RECORD_HEADER_BYTES;
use crate::types::{Op, ServerInfo, Value};

// ---------------------------------------------------------------------------------------------
// Data dirs to damage: the simulated disk and real files
// ---------------------------------------------------------------------------------------------

/// A data dir the recovery tests fill with the engine and then damage from outside, as a bad
/// disk, a crash or a careless operator would.
trait Dir {
    fn kind(&self) -> &'static str;
    fn open(&self, options: LogOptions) -> Result<Log>;
    /// Waits until no snapshot is being written (a real disk writes it on its own thread).
    fn settle(&self) {}
    /// The files, sorted (without the lock file).
    fn names(&self) -> Vec<String>;
    fn read(&self, name: &str) -> Vec<u8>;
    /// Replaces `name` with `bytes` (creating it if missing), durably.
    fn write(&self, name: &str, bytes: &[u8]);
    fn remove(&self, name: &str);

    /// Replaces byte `offset` of `name` with its complement.
    fn flip(&self, name: &str, offset: usize) {
        let mut bytes = self.read(name);
        bytes[offset] = !bytes[offset];
        self.write(name, &bytes);
    }

    /// Cuts `name` to its first `len` bytes.
    fn cut(&self, name: &str, len: usize) {
        let bytes = self.read(name);
        self.write(name, &bytes[..len]);
    }

    /// Opens a log with `options`, puts `keys` ([`put_keys`]) and closes it: the data dir a
    /// test then damages.
    fn fill(&self, options: LogOptions, keys: Range<usize>) {
        let mut log = self.open(options).unwrap();
        put_keys(&mut log, keys);
    }
}

struct SimDir(SimDisk);

impl Dir for SimDir {
    fn kind(&self) -> &'static str {
        "simulated disk"
    }

    fn open(&self, options: LogOptions) -> Result<Log> {
        Log::open(Arc::new(self.0.clone()), options)
    }

    fn names(&self) -> Vec<String> {
        let mut names = self.0.list().unwrap();
        names.sort();
        names
    }

    fn read(&self, name: &str) -> Vec<u8> {
        self.0.read(name).unwrap()
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let file = self.0.create(name).unwrap();
        file.append(bytes).unwrap();
        file.sync().unwrap();
        self.0.sync_dir().unwrap();
    }

    fn remove(&self, name: &str) {
        self.0.remove(name).unwrap();
        self.0.sync_dir().unwrap();
    }

    fn flip(&self, name: &str, offset: usize) {
        self.0.flip_byte(name, offset).unwrap();
    }
}

struct RealDir(tempfile::TempDir);

impl RealDir {
    /// The directory's lock, waiting while a snapshot thread of a closed log still holds it.
    fn lock(&self) -> RealDisk {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match RealDisk::open(self.0.path()) {
                Ok(disk) => return disk,
                Err(err)
                    if err.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(err) => panic!("locking {}: {err}", self.0.path().display()),
            }
        }
    }
}

impl Dir for RealDir {
    fn kind(&self) -> &'static str {
        "real files"
    }

    fn open(&self, options: LogOptions) -> Result<Log> {
        Log::open(Arc::new(self.lock()), options)
    }

    fn settle(&self) {
        drop(self.lock());
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.0.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != LOCK_FILE)
            .collect();
        names.sort();
        names
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.0.path().join(name)).unwrap()
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.0.path().join(name), bytes).unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.0.path().join(name)).unwrap();
    }
}

/// Every recovery test runs on both.
fn dirs() -> Vec<Box<dyn Dir>> {
    vec![
        Box::new(SimDir(SimDisk::new())),
        Box::new(RealDir(tempfile::tempdir().unwrap())),
    ]
}

fn text(s: &str, version: Version) -> Versioned {
    Versioned {
        value: Value::Text(s.into()),
        version,
    }
}

/// Puts `k{i}` = `value {i}` at version `i + 1` for each `i`.
fn put_keys(log: &mut Log, keys: Range<usize>) {
    for i in keys {
        let versioned = text(&format!("value {i}"), i as Version + 1);
        assert!(log.put_if_newer(format!("k{i}"), versioned).unwrap());
    }
}

/// The log holds exactly the keys `put_keys(.., keys)` wrote.
fn assert_keys(log: &Log, keys: Range<usize>, kind: &str) {
    assert_eq!(log.len(), keys.len(), "{kind}: keys held");
    for i in keys {
        let expected = text(&format!("value {i}"), i as Version + 1);
        assert_eq!(log.get(&format!("k{i}")), Some(expected), "{kind}: k{i}");
    }
}

/// Where each record of a segment starts; the last record ends at the end of the file.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = SEGMENT_MAGIC.len();
    while let Ok((_, next)) = read_record::<Entry>(bytes, at) {
        offsets.push(at);
        at = next;
    }
    assert_eq!(at, bytes.len(), "every record the engine wrote reads back");
    offsets
}

fn seqs(names: &[String], prefix: &str, suffix: &str) -> Vec<u64> {
    names
        .iter()
        .filter_map(|name| parse_seq(name, prefix, suffix))
        .collect()
}

/// Options that roll segments every few records and never compact.
fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes_max: 200,
        compact_bytes_min: u64::MAX,
        ..LogOptions::default()
    }
}

/// Options that compact every few dozen records.
fn small_compaction() -> LogOptions {
    LogOptions {
        segment_bytes_max: 512,
        compact_bytes_min: 2048,
        ..LogOptions::default()
    }
}

/// The refusal rule 2 and 4 describe: the file, the offset, and what to do.
fn assert_refused(result: Result<Log>, name: &str, offset: usize, kind: &str) -> String {
    let err = result
        .expect_err("a damaged data dir must be refused")
        .to_string();
    assert!(err.contains(name), "{kind}: the error names {name}: {err}");
    assert!(
        err.contains(&format!("at byte {offset}:")),
        "{kind}: the error names byte {offset}: {err}"
    );
    assert!(
        err.contains("move the data dir away"),
        "{kind}: the error says how to recover: {err}"
    );
    err
}

// ---------------------------------------------------------------------------------------------
// Recovery rules
// ---------------------------------------------------------------------------------------------

/// Rule 4: a cut anywhere in the last record (its header or its payload) is a torn tail.
#[test]
fn a_torn_last_record_is_cut_and_the_rest_recovered() {
    for dir in dirs() {
        let kind = dir.kind();
        dir.fill(LogOptions::default(), 0..10);
        let name = segment_name(1);
        let whole = dir.read(&name);
        let last = *record_offsets(&whole).last().unwrap();
        let cuts = [
            last + 3,
            last + RECORD_HEADER_BYTES,
            (last + whole.len()) / 2,
            whole.len() - 1,
        ];
        for cut_at in cuts {
            // Each round starts from the whole segment and no later one.
            for extra in dir
                .names()
                .into_iter()
                .filter(|n| n.starts_with("wal-") && *n != name)
            {
                dir.remove(&extra);
            }
            dir.write(&name, &whole);
            dir.cut(&name, cut_at);

            let log = dir.open(LogOptions::default()).unwrap();
            assert_keys(&log, 0..9, kind);
            let truncated = &log.report().truncated;
            assert_eq!(truncated.len(), 1, "{kind}: {truncated:?}");
            assert!(
                truncated[0].contains(&name)
                    && truncated[0].contains(&format!("cut at byte {last} (")),
                "{kind}: the warning names the file and the offset: {}",
                truncated[0]
            );
            assert_eq!(
                dir.read(&name).len(),
                last,
                "{kind}: truncated at the torn record"
            );
            drop(log);

            let log = dir.open(LogOptions::default()).unwrap();
            assert!(
                log.report().truncated.is_empty(),
                "{kind}: the second open is clean"
            );
            assert_keys(&log, 0..9, kind);
        }
    }
}

/// Rule 4: a bad record with valid ones after it is corruption, whichever field is hit.
#[test]
fn a_flipped_byte_in_the_middle_of_a_segment_is_refused_naming_the_file_and_offset() {
    for dir in dirs() {
        let kind = dir.kind();
        dir.fill(LogOptions::default(), 0..10);
        let name = segment_name(1);
        let victim = record_offsets(&dir.read(&name))[5];
        // The length, the CRC, and the payload.
        for offset in [victim, victim + 5, victim + RECORD_HEADER_BYTES + 2] {
            dir.flip(&name, offset);
            assert_refused(dir.open(LogOptions::default()), &name, victim, kind);
            dir.flip(&name, offset);
        }
        // Refusing changed nothing: with the byte restored, everything is there.
        assert_keys(&dir.open(LogOptions::default()).unwrap(), 0..10, kind);
    }
}

/// Rule 4: a bad last record with nothing valid after it cannot be told from a torn write.
#[test]
fn a_flipped_byte_in_the_last_record_of_the_last_segment_is_a_torn_tail() {
    for dir in dirs() {
        let kind = dir.kind();
        dir.fill(LogOptions::default(), 0..10);
        let name = segment_name(1);
        let bytes = dir.read(&name);
        let last = *record_offsets(&bytes).last().unwrap();
        dir.flip(&name, bytes.len() - 2);
        let log = dir.open(LogOptions::default()).unwrap();
        assert_keys(&log, 0..9, kind);
        let truncated = &log.report().truncated;
        assert!(
            truncated.len() == 1 && truncated[0].contains("fails its CRC check"),
            "{kind}: {truncated:?}"
        );
        assert_eq!(dir.read(&name).len(), last, "{kind}");
    }
}

/// Rule 4, the other half: a bad record in a segment that is not the last is corruption, even
/// at its end (that segment was synced before the next one was started).
#[test]
fn a_flipped_byte_at_the_end_of_an_earlier_segment_is_refused() {
    for dir in dirs() {
        let kind = dir.kind();
        dir.fill(small_segments(), 0..20);
        let name = segment_name(1);
        let bytes = dir.read(&name);
        let last = *record_offsets(&bytes).last().unwrap();
        assert!(dir.names().contains(&segment_name(2)), "{kind}: rolled");
        dir.flip(&name, bytes.len() - 1);
        assert_refused(dir.open(small_segments()), &name, last, kind);
    }
}

/// Rule 3: segments must be consecutive.
#[test]
fn a_missing_segment_is_refused_naming_it() {
    for dir in dirs() {
        let kind = dir.kind();
        dir.fill(small_segments(), 0..20);
        let segments = seqs(&dir.names(), "wal-", ".log");
        assert!(segments.len() >= 3, "{kind}: {segments:?}");
        dir.remove(&segment_name(2));
        let err = assert_refused(dir.open(small_segments()), &segment_name(2), 0, kind);
        assert!(err.contains("missing"), "{kind}: {err}");
    }
}

/// Rule 3, without a snapshot: the log starts at segment 1, so losing it is refused too (and
/// not taken for a log that starts later).
#[test]
fn a_missing_first_segment_without_a_snapshot_is_refused() {
    for dir in dirs() {
        let kind = dir.kind();
        dir.fill(small_segments(), 0..20);
        dir.remove(&segment_name(1));
        let err = assert_refused(dir.open(small_segments()), &segment_name(1), 0, kind);
        assert!(err.contains("missing"), "{kind}: {err}");
    }
}

/// Rule 4: an empty last segment, or one cut inside its header, is a torn creation.
#[test]
fn an_empty_last_segment_is_recreated() {
    for dir in dirs() {
        let kind = dir.kind();
        dir.fill(LogOptions::default(), 0..10);
        // The second open created segment 2 (the header only): cut it as a crash during its
        // creation would.
        drop(dir.open(LogOptions::default()).unwrap());
        let name = segment_name(2);
        for len in [0, 3] {
            dir.cut(&name, len);
            let log = dir.open(LogOptions::default()).unwrap();
            assert_keys(&log, 0..10, kind);
            let truncated = &log.report().truncated;
            assert!(
                truncated.len() == 1
                    && truncated[0].contains(&name)
                    && truncated[0].contains("empty segment, recreated"),
                "{kind}: {truncated:?}"
            );
            assert_eq!(
                dir.read(&name),
                SEGMENT_MAGIC,
                "{kind}: recreated under its number"
            );
            assert_eq!(seqs(&dir.names(), "wal-", ".log"), [1, 2], "{kind}");
        }
    }
}

/// Rule 4: only the last segment may be a torn creation.
#[test]
fn an_empty_segment_that_is_not_the_last_is_refused() {
    for dir in dirs() {
        let kind = dir.kind();
        for i in 0..3 {
            let mut log = dir.open(LogOptions::default()).unwrap();
            put_keys(&mut log, i * 5..i * 5 + 5);
        }
        assert_eq!(seqs(&dir.names(), "wal-", ".log"), [1, 2, 3], "{kind}");
        let name = segment_name(2);
        dir.cut(&name, 0);
        let err = assert_refused(dir.open(LogOptions::default()), &name, 0, kind);
        assert!(err.contains("empty"), "{kind}: {err}");
    }
}

/// Writes keys from `k{first}` on until a snapshot exists and no snapshot is being written;
/// returns its name and the end of the keys written.
fn write_until_snapshot(dir: &dyn Dir, first: usize) -> (String, usize) {
    let mut log = dir.open(small_compaction()).unwrap();
    let mut keys = first;
    while seqs(&dir.names(), "snap-", ".snap").is_empty() {
        put_keys(&mut log, keys..keys + 10);
        keys += 10;
        assert!(keys < 10_000, "{}: no snapshot was written", dir.kind());
    }
    drop(log);
    dir.settle();
    let snapshots = seqs(&dir.names(), "snap-", ".snap");
    assert_eq!(
        snapshots.len(),
        1,
        "{}: older snapshots deleted",
        dir.kind()
    );
    (snapshot_name(snapshots[0]), keys)
}

/// Rule 2: the segments a snapshot replaced are gone, so a damaged snapshot stops the server.
#[test]
fn a_damaged_snapshot_is_refused() {
    for dir in dirs() {
        let kind = dir.kind();
        let (name, keys) = write_until_snapshot(&*dir, 0);
        let whole = dir.read(&name);
        let offsets = record_offsets_of_snapshot(&whole);
        // A flipped byte in a record in the middle, and in the closing record.
        for &victim in [offsets[offsets.len() / 2], *offsets.last().unwrap()].iter() {
            dir.flip(&name, victim + RECORD_HEADER_BYTES);
            assert_refused(dir.open(small_compaction()), &name, victim, kind);
            dir.write(&name, &whole);
        }
        // The closing record missing (the file cut just before it).
        let closing = *offsets.last().unwrap();
        dir.cut(&name, closing);
        assert_refused(dir.open(small_compaction()), &name, closing, kind);
        // A wrong header.
        dir.write(&name, &whole);
        dir.flip(&name, 0);
        assert_refused(dir.open(small_compaction()), &name, 0, kind);
        // Whole again, it opens with every key.
        dir.write(&name, &whole);
        let _log = open_from_snapshot(&*dir, &name, keys);
    }
}

/// Opens `dir` (with [`small_compaction`]) and asserts it recovered from the snapshot `name`
/// keys `0..keys`, as [`write_until_snapshot`] left them.
#[track_caller]
fn open_from_snapshot(dir: &dyn Dir, name: &str, keys: usize) -> Log {
    let kind = dir.kind();
    let log = dir.open(small_compaction()).unwrap();
    assert_eq!(log.report().snapshot.as_deref(), Some(name), "{kind}");
    assert_keys(&log, 0..keys, kind);
    log
}

fn record_offsets_of_snapshot(bytes: &[u8]) -> Vec<usize> {
    assert_eq!(&bytes[..SNAPSHOT_MAGIC.len()], SNAPSHOT_MAGIC);
    let mut offsets = Vec::new();
    let mut at = SNAPSHOT_MAGIC.len();
    while let Ok((_, next)) = read_record::<Entry>(bytes, at) {
        offsets.push(at);
        at = next;
    }
    assert_eq!(at, bytes.len());
    offsets
}

/// Rules 1 and 3: a snapshot being written when the process died, and the files a finished
/// snapshot replaced but whose deletion was not yet durable, are deleted at the next start.
#[test]
fn leftover_tmp_files_and_files_older_than_the_newest_snapshot_are_removed() {
    for dir in dirs() {
        let kind = dir.kind();
        // Keep the first segment and its state before any snapshot replaces it.
        dir.fill(small_compaction(), 0..5);
        let first_segment = dir.read(&segment_name(1));
        dir.fill(small_compaction(), 5..10);
        let (name, keys) = write_until_snapshot(&*dir, 10);
        let seq = parse_seq(&name, "snap-", ".snap").unwrap();
        assert!(seq > 2, "{kind}: the snapshot replaced the first segments");
        let names_before = dir.names();
        assert!(
            !names_before.contains(&segment_name(1)),
            "{kind}: {names_before:?}"
        );

        // What an interrupted compaction leaves behind.
        dir.write(&segment_name(1), &first_segment);
        dir.write(&snapshot_name(1), &dir.read(&name));
        dir.write(
            &format!("{}.tmp", snapshot_name(seq + 1)),
            b"half a snapshot",
        );
        dir.write(&format!("{name}.tmp"), SNAPSHOT_MAGIC);

        let _log = open_from_snapshot(&*dir, &name, keys);
        let names = dir.names();
        assert!(
            !names.iter().any(|n| n.ends_with(".tmp")),
            "{kind}: {names:?}"
        );
        assert_eq!(seqs(&names, "snap-", ".snap"), [seq], "{kind}: {names:?}");
        assert!(
            seqs(&names, "wal-", ".log").iter().all(|&s| s >= seq),
            "{kind}: {names:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The model: steps, and what they add up to
// ---------------------------------------------------------------------------------------------

/// One change to an engine, replayable on the model.
#[derive(Clone, Debug)]
enum Step {
    Put(Key, Versioned),
    Append(Key, String, Version),
    Remove(Key),
    Batch(Vec<(Key, Versioned)>),
    Prepared(PreparedTx),
    Decided(TxId, TxState),
    Floor(Key, Version),
    Applied(u128, Version),
}

/// Applies `step` to `engine`.
fn apply(engine: &mut dyn Engine, step: &Step) -> Result<()> {
    match step {
        Step::Put(key, versioned) => engine
            .put_if_newer(key.clone(), versioned.clone())
            .map(drop),
        Step::Append(key, item, version) => engine.append(key.clone(), item.clone(), *version),
        Step::Remove(key) => engine.remove(key).map(drop),
        Step::Batch(batch) => engine.apply_batch(batch.clone()).map(drop),
        Step::Prepared(prepared) => engine.record(&Record::Prepared(prepared)),
        Step::Decided(tx, state) => engine.record(&Record::Decided {
            tx: *tx,
            state: *state,
        }),
        Step::Floor(key, version) => engine.record(&Record::Floor {
            key,
            version: *version,
        }),
        Step::Applied(request_id, version) => engine.record(&Record::Applied {
            request_id: *request_id,
            version: *version,
        }),
    }
}

/// What a correct engine holds after a sequence of steps: the keys in the in-memory engine,
/// the records as [`Engine::recovered`] must hand them back.
#[derive(Debug, Default)]
struct Model {
    keys: Memory,
    pending: BTreeMap<TxId, PreparedTx>,
    decided: Vec<(TxId, TxState)>,
    floors: Vec<(Key, Version)>,
    applied: Vec<(u128, Version)>,
}

/// Inserts or replaces, keeping a replaced entry's place (as the engine's bounded maps do).
fn upsert<K: PartialEq, V>(entries: &mut Vec<(K, V)>, key: K, value: V) {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => entries.push((key, value)),
    }
}

/// An engine's keys and records, as seen from outside.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    keys: Vec<(Key, Versioned)>,
    recovered: Recovered,
}

fn observe(engine: &dyn Engine) -> Observed {
    Observed {
        keys: engine
            .scan(None)
            .map(|key| (key.to_string(), engine.get(key).unwrap()))
            .collect(),
        recovered: engine.recovered(),
    }
}

impl Model {
    fn replay(steps: &[Step]) -> Self {
        let mut model = Self::default();
        for step in steps {
            model.apply(step);
        }
        model
    }

    fn apply(&mut self, step: &Step) {
        // The in-memory engine refuses what the log refuses (an append onto a text) and keeps
        // no records.
        let _ = apply(&mut self.keys, step);
        match step {
            Step::Prepared(prepared) => {
                self.pending.insert(prepared.tx, prepared.clone());
            }
            Step::Decided(tx, state) => {
                self.pending.remove(tx);
                upsert(&mut self.decided, *tx, *state);
            }
            Step::Floor(key, version) => upsert(&mut self.floors, key.clone(), *version),
            Step::Applied(request_id, version) => upsert(&mut self.applied, *request_id, *version),
            _ => {}
        }
    }

    fn observed(&self) -> Observed {
        Observed {
            keys: observe(&self.keys).keys,
            recovered: Recovered {
                pending: self.pending.values().cloned().collect(),
                decided: self.decided.clone(),
                floors: self.floors.clone(),
                applied: self.applied.clone(),
            },
        }
    }

    /// Whether the model holds what was observed (without building its own observation: the
    /// crash checks call this after every step of a search).
    fn matches(&self, observed: &Observed) -> bool {
        let r = &observed.recovered;
        self.pending.len() == r.pending.len()
            && self.pending.values().eq(r.pending.iter())
            && self.decided == r.decided
            && self.floors == r.floors
            && self.applied == r.applied
            && self.keys.len() == observed.keys.len()
            && observed
                .keys
                .iter()
                .all(|(key, versioned)| self.keys.get(key).as_ref() == Some(versioned))
    }
}

fn server(id: &str) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        addr: format!("{id}:1"),
    }
}

/// Draws random steps. Versions only grow, as the coordinator's do; an append's version is above
/// its list's, as the participant checks before it appends.
#[derive(Debug, Default)]
struct Gen {
    version: Version,
    tx: TxId,
}

impl Gen {
    fn version(&mut self) -> Version {
        self.version += 1;
        self.version
    }

    fn step(&mut self, rng: &mut StdRng, model: &Model) -> Step {
        let text_key = format!("k{}", rng.gen_range(0..12));
        let list_key = format!("l{}", rng.gen_range(0..6));
        let filler = "x".repeat(rng.gen_range(0..60));
        match rng.gen_range(0..100) {
            0..=29 => {
                let version = self.version();
                Step::Put(text_key, text(&format!("{version}:{filler}"), version))
            }
            30..=33 => {
                // A whole list arrives (a transfer or a repair).
                let version = self.version();
                let items = (0..rng.gen_range(0..4)).map(|i| format!("c{version}.{i}"));
                let value = Value::List(items.collect());
                Step::Put(list_key, Versioned { value, version })
            }
            34..=37 => {
                // A stale copy: not above what the key holds, so nothing is written.
                let key = if rng.gen_bool(0.5) {
                    text_key
                } else {
                    list_key
                };
                match model.keys.version(&key) {
                    0 => Step::Remove(key),
                    held => Step::Put(key, text("stale", rng.gen_range(1..=held))),
                }
            }
            38..=57 => {
                let version = self.version();
                Step::Append(list_key, format!("i{version}"), version)
            }
            58..=62 => {
                let key = if rng.gen_bool(0.5) {
                    text_key
                } else {
                    list_key
                };
                Step::Remove(key)
            }
            63..=69 => {
                let batch = (0..rng.gen_range(1..=4))
                    .map(|_| {
                        let key = format!("k{}", rng.gen_range(0..12));
                        let version = if rng.gen_bool(0.8) { self.version() } else { 1 };
                        (key, text(&format!("b{version}"), version))
                    })
                    .collect();
                Step::Batch(batch)
            }
            70..=78 => {
                self.tx += 1;
                let version = self.version();
                let value = Value::Text(format!("p{version}"));
                Step::Prepared(PreparedTx {
                    tx: self.tx,
                    key: text_key.clone(),
                    op: Op::Put(value.clone()),
                    value,
                    version,
                    epoch: 1,
                    participants: vec![server("s1"), server("s2")],
                    voted_as: "s1".into(),
                    base_version: model.keys.version(&text_key),
                })
            }
            79..=88 => {
                let pending: Vec<&PreparedTx> = model.pending.values().collect();
                if !pending.is_empty() && rng.gen_bool(0.85) {
                    let prepared = pending[rng.gen_range(0..pending.len())];
                    let state = if rng.gen_bool(0.5) {
                        TxState::Committed {
                            version: prepared.version,
                        }
                    } else {
                        TxState::Aborted
                    };
                    Step::Decided(prepared.tx, state)
                } else {
                    // A status query about a transaction never prepared here.
                    self.tx += 1;
                    Step::Decided(self.tx, TxState::Aborted)
                }
            }
            89..=93 => {
                let version = self.version();
                Step::Floor(text_key, version)
            }
            _ => {
                let version = self.version();
                Step::Applied(rng.gen(), version)
            }
        }
    }
}

/// An error the in-memory engine gives too: a step both refuse without writing anything.
fn is_refused_by_the_model(err: &Error) -> bool {
    matches!(err, Error::InvalidRequest(msg) if msg.contains("holds a text"))
}

// ---------------------------------------------------------------------------------------------
// Compaction
// ---------------------------------------------------------------------------------------------

/// Snapshots replace the segments they cover, over and over, and the state they rebuild with
/// the segments after them is exactly what was written: checked by a restart right after each
/// new snapshot (when the segments it replaced are freshly gone) and at the end.
#[test]
fn compaction_writes_snapshots_drops_old_segments_and_keeps_the_whole_state() {
    let options = LogOptions {
        fsync: FsyncMode::Batch,
        segment_bytes_max: 4 * 1024,
        compact_bytes_min: 16 * 1024,
    };
    for dir in dirs() {
        let kind = dir.kind();
        let mut rng = StdRng::seed_from_u64(14);
        let mut gen = Gen::default();
        let mut model = Model::default();
        let mut log = dir.open(options).unwrap();
        let mut snapshots_seen = BTreeSet::new();
        let mut segments_max = 0;
        for i in 0..4_000 {
            let step = gen.step(&mut rng, &model);
            model.apply(&step);
            if let Err(err) = apply(&mut log, &step) {
                assert!(is_refused_by_the_model(&err), "{kind}: {step:?}: {err}");
            }
            let names = dir.names();
            segments_max = segments_max.max(seqs(&names, "wal-", ".log").len());
            let snapshots = seqs(&names, "snap-", ".snap");
            if snapshots.iter().any(|seq| !snapshots_seen.contains(seq)) {
                snapshots_seen.extend(snapshots);
                drop(log);
                dir.settle();
                log = dir.open(options).unwrap();
                assert_eq!(
                    observe(&log),
                    model.observed(),
                    "{kind}: step {i}: a new snapshot"
                );
            }
        }
        assert_eq!(observe(&log), model.observed(), "{kind}: the live state");
        drop(log);
        dir.settle();

        // Several snapshots were written, each deleting what it replaced.
        assert!(snapshots_seen.len() >= 3, "{kind}: {snapshots_seen:?}");
        assert!(
            segments_max <= 40,
            "{kind}: {segments_max} segments at once"
        );
        let names = dir.names();
        let snapshots = seqs(&names, "snap-", ".snap");
        assert_eq!(snapshots.len(), 1, "{kind}: {names:?}");
        let segments = seqs(&names, "wal-", ".log");
        assert!(
            segments.iter().all(|&s| s >= snapshots[0]),
            "{kind}: {names:?}"
        );

        let log = dir.open(options).unwrap();
        assert_eq!(
            log.report().snapshot,
            Some(snapshot_name(snapshots[0])),
            "{kind}"
        );
        assert!(log.report().truncated.is_empty(), "{kind}");
        assert_eq!(
            observe(&log),
            model.observed(),
            "{kind}: the reopened state"
        );
    }
}

/// The write that pushes the log over the compaction threshold is in the segment the snapshot
/// replaces: the snapshot must already hold it.
#[test]
fn the_write_that_triggers_a_compaction_survives_a_restart() {
    let disk = SimDisk::new();
    let mut log = Log::open(Arc::new(disk.clone()), small_compaction()).unwrap();
    let mut i = 0;
    while seqs(&disk.list().unwrap(), "snap-", ".snap").is_empty() {
        put_keys(&mut log, i..i + 1);
        i += 1;
    }
    assert_keys(&log, 0..i, "live");
    drop(log);
    let log = Log::open(Arc::new(disk), small_compaction()).unwrap();
    assert_keys(&log, 0..i, "after the restart");
}

// ---------------------------------------------------------------------------------------------
// The crash model
// ---------------------------------------------------------------------------------------------

/// A simulated disk whose power fails at a chosen write-side operation: that operation is
/// carried out, then [`SimDisk::crash`] keeps a random prefix of every file's unsynced tail,
/// and the operation and every later one fail (the caller never learns that it finished).
#[derive(Clone, Debug)]
struct Power {
    sim: SimDisk,
    state: Arc<Mutex<PowerState>>,
}

#[derive(Debug)]
struct PowerState {
    /// Operations left before the one that fails the power; `None`: it never fails.
    ops_left: Option<u64>,
    /// Count only operations of this kind (to cut inside the rare ones: rolls, snapshots).
    only: Option<&'static str>,
    /// The operation that failed it, once it has.
    cut_at: Option<&'static str>,
    rng: StdRng,
}

fn power_lost() -> io::Error {
    io::Error::other("the power failed")
}

impl Power {
    fn new(sim: &SimDisk, seed: u64) -> Self {
        Self {
            sim: sim.clone(),
            state: Arc::new(Mutex::new(PowerState {
                ops_left: None,
                only: None,
                cut_at: None,
                rng: StdRng::seed_from_u64(seed),
            })),
        }
    }

    /// The power fails at the write-side operation `ops` from now (0: the next one).
    fn arm(&self, ops: u64) {
        self.state.lock().unwrap().ops_left.get_or_insert(ops);
    }

    /// The power fails at the next operation of kind `what`.
    fn arm_at(&self, what: &'static str) {
        let mut state = self.state.lock().unwrap();
        if state.ops_left.is_none() {
            state.ops_left = Some(0);
            state.only = Some(what);
        }
    }

    fn armed(&self) -> bool {
        self.state.lock().unwrap().ops_left.is_some()
    }

    fn cut_at(&self) -> Option<&'static str> {
        self.state.lock().unwrap().cut_at
    }

    fn alive(&self) -> io::Result<()> {
        match self.cut_at() {
            Some(_) => Err(power_lost()),
            None => Ok(()),
        }
    }

    fn tick<T>(&self, what: &'static str, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let mut guard = self.state.lock().unwrap();
        let state = &mut *guard;
        if state.cut_at.is_some() {
            return Err(power_lost());
        }
        let result = op();
        if state.only.is_some_and(|only| only != what) {
            return result;
        }
        match state.ops_left {
            Some(0) => {
                state.cut_at = Some(what);
                let rng = &mut state.rng;
                self.sim.crash(&mut |unsynced| rng.gen_range(0..=unsynced));
                Err(power_lost())
            }
            Some(left) => {
                state.ops_left = Some(left - 1);
                result
            }
            None => result,
        }
    }
}

fn file_kind(name: &str) -> &'static str {
    if name.ends_with(".tmp") {
        "snapshot"
    } else {
        "segment"
    }
}

impl Disk for Power {
    fn list(&self) -> io::Result<Vec<String>> {
        self.alive()?;
        self.sim.list()
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.alive()?;
        self.sim.read(name)
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        let what = match file_kind(name) {
            "snapshot" => "create snapshot",
            _ => "create segment",
        };
        let inner = self.tick(what, || self.sim.create(name))?;
        Ok(Arc::new(PowerFile {
            power: self.clone(),
            inner,
            kind: file_kind(name),
        }))
    }

    fn open_append(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        self.alive()?;
        let inner = self.sim.open_append(name)?;
        Ok(Arc::new(PowerFile {
            power: self.clone(),
            inner,
            kind: file_kind(name),
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.tick("rename snapshot", || self.sim.rename(from, to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.tick("remove", || self.sim.remove(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.tick("sync dir", || self.sim.sync_dir())
    }

    fn syncs_block(&self) -> bool {
        self.sim.syncs_block()
    }

    fn describe(&self, name: &str) -> String {
        self.sim.describe(name)
    }
}

#[derive(Debug)]
struct PowerFile {
    power: Power,
    inner: Arc<dyn DiskFile>,
    kind: &'static str,
}

impl DiskFile for PowerFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let what = match self.kind {
            "snapshot" => "append snapshot",
            _ => "append segment",
        };
        self.power.tick(what, || self.inner.append(bytes))
    }

    fn sync(&self) -> io::Result<()> {
        let what = match self.kind {
            "snapshot" => "sync snapshot",
            _ => "sync segment",
        };
        self.power.tick(what, || self.inner.sync())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.power
            .tick("truncate segment", || self.inner.truncate(len))
    }
}

/// The disk operations of segment rolls and snapshots, which the power must fail inside too.
const RARE_OPS: [&str; 8] = [
    "create segment",
    "sync dir",
    "create snapshot",
    "append snapshot",
    "sync snapshot",
    "rename snapshot",
    "remove",
    "truncate segment",
];

/// What the crash runs of one fsync mode saw, over all seeds.
#[derive(Debug, Default)]
struct Tally {
    /// Seeds whose recovered state lost acknowledged steps.
    lost: BTreeSet<u64>,
    /// Where the power failed: the operation, and whether the engine was recovering.
    cuts: BTreeMap<String, u64>,
    recoveries: u64,
}

/// One seed of the crash model: random steps on a log whose power fails at random disk
/// operations, with restarts in between. After every failure the log is reopened and checked.
struct CrashRun<'a> {
    seed: u64,
    rng: StdRng,
    fsync: FsyncMode,
    options: LogOptions,
    sim: SimDisk,
    gen: Gen,
    /// Every step that may have reached the disk, in order (up to the recovered state once
    /// checked).
    history: Vec<Step>,
    /// The state after all of `history`.
    model: Model,
    /// The steps acknowledged: `history[..acked]` must survive anything.
    acked: usize,
    tally: &'a mut Tally,
}

impl CrashRun<'_> {
    fn open(&mut self) -> (Power, Log) {
        let power = Power::new(&self.sim, self.rng.gen());
        let log = Log::open(Arc::new(power.clone()), self.options)
            .unwrap_or_else(|err| panic!("seed {}: reopening failed: {err}", self.seed));
        (power, log)
    }

    /// Reopens after a power failure (failing the power again during recovery, sometimes) and
    /// checks what came back.
    fn recover(&mut self, log: Log, cut_at: &'static str) -> (Power, Log) {
        drop(log);
        *self.tally.cuts.entry(cut_at.to_string()).or_default() += 1;
        let mut opened = None;
        if self.rng.gen_bool(0.25) {
            let power = Power::new(&self.sim, self.rng.gen());
            power.arm(self.rng.gen_range(0..8));
            match Log::open(Arc::new(power.clone()), self.options) {
                Ok(log) => {
                    assert!(
                        power.cut_at().is_none(),
                        "seed {}: opened on a dead disk",
                        self.seed
                    );
                    opened = Some((power, log));
                }
                Err(err) => {
                    let Some(cut_at) = power.cut_at() else {
                        panic!(
                            "seed {}: recovery failed with the power on: {err}",
                            self.seed
                        )
                    };
                    let what = format!("{cut_at} (recovering)");
                    *self.tally.cuts.entry(what).or_default() += 1;
                }
            }
        }
        let (power, log) = opened.unwrap_or_else(|| self.open());
        self.tally.recoveries += 1;
        self.check(&log);
        (power, log)
    }

    /// The recovered state must be the state after some prefix of the history at least as long
    /// as the acknowledged part: then every acknowledged put is there with at least its version
    /// (or a later step's), every acknowledged append exactly once, every acknowledged yes vote
    /// pending unless decided, every decision decided, and no value that was never written.
    /// `FsyncMode::Never` may lose acknowledged steps, but must still recover a prefix.
    fn check(&mut self, log: &Log) {
        let observed = observe(log);
        let from = match self.fsync {
            FsyncMode::Never => 0,
            _ => self.acked,
        };
        let mut model = Model::replay(&self.history[..from]);
        let mut found = model.matches(&observed).then_some(from);
        for (i, step) in self.history.iter().enumerate().skip(from) {
            model.apply(step);
            if model.matches(&observed) {
                found = Some(i + 1);
            }
        }
        let Some(prefix) = found else {
            panic!(
                "seed {}: the recovered state is not the state after any prefix of the {} steps \
                 from {from} on ({} acknowledged; fsync {}):\nrecovered {observed:#?}\n\
                 acknowledged {:#?}",
                self.seed,
                self.history.len(),
                self.acked,
                self.fsync,
                Model::replay(&self.history[..self.acked]).observed(),
            )
        };
        if prefix < self.acked {
            assert_eq!(
                self.fsync,
                FsyncMode::Never,
                "seed {}: acknowledged steps lost: recovered {prefix} of {} acknowledged",
                self.seed,
                self.acked
            );
            self.tally.lost.insert(self.seed);
        }
        // What the reopened engine serves may be read and built upon: it must be durable from
        // now on, acknowledged or not.
        self.history.truncate(prefix);
        self.model = Model::replay(&self.history);
        self.acked = prefix;
    }

    fn run(&mut self, steps: usize) {
        let (mut power, mut log) = self.open();
        for _ in 0..steps {
            match self.rng.gen_range(0..100) {
                0..=1 => {
                    // kill -9: the process dies, the operating system keeps what it was given.
                    drop(log);
                    (power, log) = self.open();
                    assert_eq!(
                        observe(&log),
                        self.model.observed(),
                        "seed {}: a restart without a crash loses nothing",
                        self.seed
                    );
                    self.acked = self.history.len();
                    continue;
                }
                2..=5 if !power.armed() => power.arm(self.rng.gen_range(0..16)),
                6 if !power.armed() => {
                    // Inside the next roll or snapshot, at one of its steps.
                    let what = RARE_OPS[self.rng.gen_range(0..RARE_OPS.len())];
                    power.arm_at(what);
                }
                _ => {}
            }
            let step = self.gen.step(&mut self.rng, &self.model);
            self.model.apply(&step);
            self.history.push(step.clone());
            let result = apply(&mut log, &step);
            if let Some(cut_at) = power.cut_at() {
                // The step may or may not have reached the disk: it stays in the history.
                (power, log) = self.recover(log, cut_at);
                continue;
            }
            match result {
                Ok(()) if self.fsync != FsyncMode::Batch => self.acked = self.history.len(),
                Ok(()) => {}
                Err(err) => assert!(
                    is_refused_by_the_model(&err),
                    "seed {}: {step:?}: {err}",
                    self.seed
                ),
            }
            if self.fsync == FsyncMode::Batch && self.rng.gen_bool(0.2) {
                let flushed = futures::executor::block_on(log.durability().flush());
                if let Some(cut_at) = power.cut_at() {
                    (power, log) = self.recover(log, cut_at);
                    continue;
                }
                flushed.unwrap_or_else(|err| panic!("seed {}: flush: {err}", self.seed));
                self.acked = self.history.len();
            }
        }
        // Finally the power fails between two steps, the engine idle.
        let rng = &mut self.rng;
        self.sim.crash(&mut |unsynced| rng.gen_range(0..=unsynced));
        drop(self.recover(log, "between steps"));
    }
}

/// Runs `seeds` of the crash model in `fsync` mode.
fn crash_runs(fsync: FsyncMode, seeds: Range<u64>, steps: usize) -> Tally {
    let mut tally = Tally::default();
    for seed in seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let options = LogOptions {
            fsync,
            segment_bytes_max: rng.gen_range(256..=4096),
            compact_bytes_min: rng.gen_range(1024..=16 * 1024),
        };
        CrashRun {
            seed,
            rng,
            fsync,
            options,
            sim: SimDisk::new(),
            gen: Gen::default(),
            history: Vec::new(),
            model: Model::default(),
            acked: 0,
            tally: &mut tally,
        }
        .run(steps);
    }
    tally
}

/// The power failed inside each kind of disk operation: appends, syncs, segment rolls and
/// snapshots, and recoveries.
fn assert_cuts_landed_everywhere(tally: &Tally) {
    for what in RARE_OPS
        .iter()
        .filter(|&&what| what != "truncate segment")
        .chain(&["append segment", "sync segment", "between steps"])
    {
        assert!(
            tally.cuts.contains_key(*what),
            "no power cut at {what:?}: {tally:?}"
        );
    }
    assert!(
        tally.cuts.keys().any(|what| what.ends_with("(recovering)")),
        "no power cut during a recovery: {tally:?}"
    );
}

/// Group commit: what a flush covered survives a power failure anywhere, and what came back is
/// always what some prefix of the writes made.
#[test]
fn acknowledged_writes_survive_power_failures_with_batch_fsync() {
    let tally = crash_runs(FsyncMode::Batch, 0..300, 250);
    assert!(tally.lost.is_empty(), "{tally:?}");
    assert_cuts_landed_everywhere(&tally);
}

/// `always`: every write is acknowledged when it returns, and survives.
#[test]
fn every_returned_write_survives_power_failures_with_always_fsync() {
    let tally = crash_runs(FsyncMode::Always, 1_000..1_100, 250);
    assert!(tally.lost.is_empty(), "{tally:?}");
    assert_cuts_landed_everywhere(&tally);
}

/// `never`'s documented risk: a write acknowledged at once but never synced is lost when the
/// power fails (a killed process loses nothing: the operating system holds the writes). What
/// comes back is still a prefix of the writes (the check panics otherwise), and the model sees
/// the loss, which proves the crash checks above can see one.
#[test]
fn never_fsync_loses_acknowledged_writes_on_a_power_failure() {
    let tally = crash_runs(FsyncMode::Never, 2_000..2_050, 250);
    assert!(
        tally.lost.len() >= 10,
        "fsync never lost acknowledged writes in only {} of 50 seeds: {tally:?}",
        tally.lost.len()
    );
}

/// A killed process leaves its unsynced writes with the operating system; the restarted engine
/// reads and serves them, so it must make them durable before it goes on: a power failure
/// later must neither take them back nor leave a torn record before later, synced segments.
#[test]
fn what_a_restarted_engine_recovered_survives_a_later_power_failure() {
    let sim = SimDisk::new();
    let mut log = Log::open(Arc::new(sim.clone()), LogOptions::default()).unwrap();
    put_keys(&mut log, 0..10);
    drop(log); // killed before any sync
    let mut log = Log::open(Arc::new(sim.clone()), LogOptions::default()).unwrap();
    assert_keys(&log, 0..10, "after the kill");
    put_keys(&mut log, 10..12);
    futures::executor::block_on(log.durability().flush()).unwrap();
    // The power fails, tearing whatever is still unsynced in the middle.
    sim.crash(&mut |unsynced| unsynced / 2);
    drop(log);
    let log = Log::open(Arc::new(sim), LogOptions::default()).unwrap();
    assert_keys(&log, 0..12, "after the power failure");
}

// ---------------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------------

fn used_bytes(sim: &SimDisk) -> u64 {
    sim.list()
        .unwrap()
        .iter()
        .map(|name| sim.read(name).unwrap().len() as u64)
        .sum()
}

fn flush(log: &Log) {
    futures::executor::block_on(log.durability().flush()).unwrap();
}

/// A write that does not fit is refused as "disk full", changes nothing in memory, leaves no
/// partial record behind, and writes go on once there is room.
#[test]
fn a_write_on_a_full_disk_is_refused_and_changes_nothing() {
    let sim = SimDisk::new();
    let mut log = Log::open(Arc::new(sim.clone()), LogOptions::default()).unwrap();
    log.put_if_newer("k".into(), text("old", 1)).unwrap();
    log.append("l".into(), "a".into(), 2).unwrap();
    flush(&log);
    sim.set_capacity(Some(used_bytes(&sim) + 20));
    let before = observe(&log);
    let big = "x".repeat(100);
    let prepared = PreparedTx {
        tx: 9,
        key: "k".into(),
        op: Op::Put(Value::Text(big.clone())),
        value: Value::Text(big.clone()),
        version: 3,
        epoch: 1,
        participants: vec![server("s1")],
        voted_as: "s1".into(),
        base_version: 1,
    };
    let refused = [
        Step::Put("k".into(), text(&big, 3)),
        Step::Append("l".into(), big.clone(), 3),
        Step::Batch(vec![("k".into(), text(&big, 3))]),
        Step::Prepared(prepared),
        Step::Floor(big.clone(), 3),
    ];
    for step in &refused {
        let err = apply(&mut log, step).unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{step:?}: {err:?}");
        assert!(err.to_string().contains("disk full"), "{step:?}: {err}");
        assert_eq!(observe(&log), before, "{step:?}: nothing changed");
    }
    assert_eq!(log.get("k"), Some(text("old", 1)));

    sim.set_capacity(None);
    log.put_if_newer("k".into(), text("new", 3)).unwrap();
    log.append("l".into(), "b".into(), 4).unwrap();
    flush(&log);
    let after = observe(&log);
    drop(log);
    let log = Log::open(Arc::new(sim.clone()), LogOptions::default()).unwrap();
    assert!(
        log.report().truncated.is_empty(),
        "no partial record was left behind"
    );
    assert_eq!(observe(&log), after);
    drop(log);
    sim.crash(&mut |unsynced| unsynced);
    let log = Log::open(Arc::new(sim), LogOptions::default()).unwrap();
    assert_eq!(observe(&log), after);
}

/// The disk fills at every point of a workload with small segments and snapshots (so rolls
/// and snapshots fail too): each refused step changes nothing, the others apply, and after
/// room returns, a flush and a power failure, the state is exactly the applied steps.
#[test]
fn a_disk_that_fills_at_any_point_refuses_cleanly_and_recovers() {
    for seed in 0..60 {
        let mut rng = StdRng::seed_from_u64(seed);
        let options = LogOptions {
            fsync: FsyncMode::Batch,
            segment_bytes_max: rng.gen_range(256..=2048),
            compact_bytes_min: rng.gen_range(1024..=4096),
        };
        let sim = SimDisk::new();
        let mut log = Log::open(Arc::new(sim.clone()), options).unwrap();
        let mut gen = Gen::default();
        let mut model = Model::default();
        let mut refused = 0;
        for i in 0..300 {
            if i == 100 {
                sim.set_capacity(Some(used_bytes(&sim) + rng.gen_range(0..2048)));
            }
            if i == 220 {
                // Room again, and a restart: the refused writes left nothing half written (a
                // segment whose creation failed may be recreated: a torn creation).
                sim.set_capacity(None);
                drop(log);
                log = Log::open(Arc::new(sim.clone()), options).unwrap();
                assert_eq!(observe(&log), model.observed(), "seed {seed}: restarted");
                let torn: Vec<&String> = (log.report().truncated.iter())
                    .filter(|line| !line.contains("an empty segment, recreated"))
                    .collect();
                assert!(torn.is_empty(), "seed {seed}: {torn:?}");
            }
            let step = gen.step(&mut rng, &model);
            match apply(&mut log, &step) {
                Ok(()) => model.apply(&step),
                Err(err) if err.to_string().contains("disk full") => refused += 1,
                Err(err) => {
                    assert!(
                        is_refused_by_the_model(&err),
                        "seed {seed}: {step:?}: {err}"
                    );
                    model.apply(&step);
                }
            }
            assert_eq!(
                observe(&log),
                model.observed(),
                "seed {seed}: step {i}: {step:?}"
            );
        }
        assert!(refused > 0, "seed {seed}: the disk never filled");
        flush(&log);
        sim.crash(&mut |unsynced| rng.gen_range(0..=unsynced));
        drop(log);
        let log = Log::open(Arc::new(sim), options)
            .unwrap_or_else(|err| panic!("seed {seed}: reopening: {err}"));
        assert_eq!(observe(&log), model.observed(), "seed {seed}: reopened");
    }
}

/// A server keeps its single-server keys in a second log in the same directory, under a prefix:
/// each log recovers its own keys and nothing of the other's, through writes, segment rolls and
/// compactions of both, and neither deletes the other's files (a leftover snapshot `.tmp` of the
/// prefixed log is the prefixed log's to clean up).
#[test]
fn two_logs_share_a_directory_under_a_prefix_and_recover_only_their_own_keys() {
    let disk = SimDisk::new();
    let outer_disk: Arc<dyn Disk> = Arc::new(disk.clone());
    let inner_disk: Arc<dyn Disk> = Arc::new(Prefixed::new(outer_disk.clone(), "local-"));
    let mut outer = Log::open(outer_disk.clone(), small_compaction()).unwrap();
    let mut inner = Log::open(inner_disk.clone(), small_compaction()).unwrap();
    let mut written = 0;
    // Both logs write until each has compacted at least once.
    while seqs(&inner_disk.list().unwrap(), "snap-", ".snap").is_empty()
        || seqs(&disk.list().unwrap(), "snap-", ".snap").is_empty()
    {
        put_keys(&mut outer, written..written + 10);
        inner
            .put_if_newer(format!("local{written}"), text("mine", 1))
            .unwrap();
        written += 10;
        assert!(written < 10_000, "no snapshot was written by both logs");
    }
    drop((outer, inner));
    let leftover = "local-snap-0000000000000001.snap.tmp";
    let file = disk.create(leftover).unwrap();
    file.append(b"half a snapshot").unwrap();
    file.sync().unwrap();
    disk.sync_dir().unwrap();

    let outer = Log::open(outer_disk, small_compaction()).unwrap();
    assert_keys(&outer, 0..written, "the outer log");
    assert!(
        disk.list().unwrap().iter().any(|n| n == leftover),
        "the outer log left the prefixed log's leftover alone"
    );
    let inner = Log::open(inner_disk, small_compaction()).unwrap();
    assert_eq!(inner.len(), written / 10, "the prefixed log's keys");
    assert!(inner.get("k0").is_none() && outer.get("local0").is_none());
    assert!(
        !disk.list().unwrap().iter().any(|n| n == leftover),
        "the prefixed log removed its own leftover"
    );
}
