//! A member's Raft log and vote, on disk: one append-only file of framed records
//! ([`crate::storage::record`]), replayed at start into memory, where openraft reads it.
//!
//! # On disk
//! `raft.log`: an 8-byte magic header, then records, each a vote, an entry, a truncation (a new
//! leader overwrote the entries from an index on), a purge (a snapshot covers the entries up to
//! a log id) or the last committed log id. Every write is synced before openraft hears that it
//! is done, so a vote is never forgotten and an entry a leader counted is never lost. When the
//! file is more than twice what is live, and at least [`REWRITE_BYTES_MIN`], it is rewritten
//! whole (as `.tmp`, synced, renamed, directory synced), so it stays bounded by the entries a
//! snapshot has not yet covered.
//!
//! # Recovery
//! The same rules as the storage engine's log ([`crate::storage::log`]): a record cut short or
//! failing its CRC with no valid record after it is a torn tail, cut with a warning; anything
//! else is corruption, and the member refuses to start, naming the file and the offset. A
//! leftover `.tmp` is an interrupted rewrite and is deleted.
//!
//! # Deliberately left out
//! * Reading entries from disk: every entry not yet covered by a snapshot is in memory too.
//! * Group commit: each append syncs once for however many entries openraft hands over at once,
//!   which is what openraft batches; the view leader's write rate is far below a disk's.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{LogEntry, MemberId, TypeConfig};
use crate::error::{Error, Result};
use crate::storage::disk::{Disk, DiskFile};
use crate::storage::record::{describe_bad, frame, read_record, valid_record_after};

/// The log's file in the member's data dir.
pub const LOG_FILE: &str = "raft.log";
/// The first bytes of the log file.
const LOG_MAGIC: &[u8; 8] = b"RLRAFT\x00\x01";
/// The file is rewritten only when it holds at least this much beyond what is live, in bytes.
pub const REWRITE_BYTES_MIN: u64 = 1024 * 1024;

type Storage = StorageError<MemberId>;

#[derive(Serialize, Deserialize)]
enum LogRecord {
    Vote(Vote<MemberId>),
    Entry(LogEntry),
    Truncate { since: u64 },
    Purge(LogId<MemberId>),
    Committed(Option<LogId<MemberId>>),
}

/// The log store; clones share it (openraft reads through one while it writes through another).
#[derive(Clone, Debug)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// Where the log lives; `None` keeps it in memory only.
    disk: Option<Arc<dyn Disk>>,
    file: Option<Arc<dyn DiskFile>>,
    entries: BTreeMap<u64, LogEntry>,
    vote: Option<Vote<MemberId>>,
    committed: Option<LogId<MemberId>>,
    purged: Option<LogId<MemberId>>,
    file_bytes: u64,
    /// Bytes of the records a rewrite would keep.
    live_bytes: u64,
    /// Bytes of each live entry's record, to keep `live_bytes` as entries go.
    entry_bytes: BTreeMap<u64, u64>,
}

impl LogStore {
    /// A log kept in memory only (`--in-memory`).
    pub fn in_memory() -> Self {
        Self::from_inner(Inner::empty(None))
    }

    /// Opens the log in `disk`, recovering what is there (see the module doc).
    pub fn open(disk: Arc<dyn Disk>) -> Result<Self> {
        let names = disk.list().map_err(|err| io(&*disk, "", "listing", err))?;
        let tmp = format!("{LOG_FILE}.tmp");
        if names.contains(&tmp) {
            disk.remove(&tmp)
                .map_err(|err| io(&*disk, &tmp, "removing", err))?;
        }
        let mut inner = Inner::empty(Some(disk.clone()));
        if !names.iter().any(|n| n == LOG_FILE) {
            inner.rewrite()?;
            return Ok(Self::from_inner(inner));
        }
        let bytes = disk
            .read(LOG_FILE)
            .map_err(|err| io(&*disk, LOG_FILE, "reading", err))?;
        if bytes.len() < LOG_MAGIC.len() {
            // Created but its header never made it: nothing was ever acknowledged from it.
            inner.rewrite()?;
            return Ok(Self::from_inner(inner));
        }
        if &bytes[..LOG_MAGIC.len()] != LOG_MAGIC {
            return Err(damaged(
                &*disk,
                0,
                "it does not start with a Raft log header",
            ));
        }
        let mut offset = LOG_MAGIC.len();
        while offset < bytes.len() {
            match read_record::<LogRecord>(&bytes, offset) {
                Ok((record, next)) => {
                    inner.replay(record, (next - offset) as u64);
                    offset = next;
                }
                Err(bad) if !valid_record_after(&bytes, offset) => {
                    warn!(
                        file = %disk.describe(LOG_FILE),
                        offset,
                        cut_bytes = bytes.len() - offset,
                        why = %describe_bad(&bad),
                        "cutting a torn tail off the Raft log (a write that was never acknowledged)"
                    );
                    break;
                }
                Err(bad) => return Err(damaged(&*disk, offset, &describe_bad(&bad))),
            }
        }
        let file = disk
            .open_append(LOG_FILE)
            .map_err(|err| io(&*disk, LOG_FILE, "opening", err))?;
        if offset < bytes.len() {
            file.truncate(offset as u64)
                .and_then(|()| file.sync())
                .map_err(|err| io(&*disk, LOG_FILE, "truncating", err))?;
        } else {
            // A killed process leaves its unsynced writes with the OS: make them ours first.
            file.sync()
                .map_err(|err| io(&*disk, LOG_FILE, "syncing", err))?;
        }
        inner.file = Some(file);
        inner.file_bytes = offset as u64;
        Ok(Self::from_inner(inner))
    }

    fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> std::result::Result<MutexGuard<'_, Inner>, Storage> {
        self.inner.lock().map_err(|_| {
            StorageIOError::read_logs(&Error::Internal("Raft log poisoned".into())).into()
        })
    }

    /// The committed index the log holds (saved by openraft before it applies what it covers):
    /// read right after [`LogStore::open`], the last entry this member applied before it
    /// stopped, as [`super::machine::Machine::open`] explains.
    pub fn committed_index(&self) -> Option<u64> {
        self.inner
            .lock()
            .ok()
            .and_then(|inner| inner.committed.map(|c| c.index))
    }

    /// The last log index and the last purged one, for status pages.
    pub fn indices(&self) -> (Option<u64>, Option<u64>) {
        match self.inner.lock() {
            Ok(inner) => (
                inner
                    .entries
                    .keys()
                    .next_back()
                    .copied()
                    .or(inner.purged.map(|p| p.index)),
                inner.purged.map(|p| p.index),
            ),
            Err(_) => (None, None),
        }
    }
}

impl Inner {
    /// A log with nothing in it yet, kept on `disk` (or in memory only, without one).
    fn empty(disk: Option<Arc<dyn Disk>>) -> Self {
        Inner {
            disk,
            file: None,
            entries: BTreeMap::new(),
            vote: None,
            committed: None,
            purged: None,
            file_bytes: 0,
            live_bytes: 0,
            entry_bytes: BTreeMap::new(),
        }
    }

    /// Applies a record read back at start.
    fn replay(&mut self, record: LogRecord, bytes: u64) {
        self.file_bytes += bytes;
        self.change(record, bytes);
    }

    /// Applies a record to the in-memory log.
    fn change(&mut self, record: LogRecord, bytes: u64) {
        match record {
            LogRecord::Vote(vote) => self.vote = Some(vote),
            LogRecord::Committed(committed) => self.committed = committed,
            LogRecord::Entry(entry) => {
                let index = entry.log_id.index;
                self.forget_from(index);
                self.entries.insert(index, entry);
                self.entry_bytes.insert(index, bytes);
                self.live_bytes += bytes;
            }
            LogRecord::Truncate { since } => self.forget_from(since),
            LogRecord::Purge(log_id) => {
                // Everything through the index goes; a purge through the largest index (only
                // a damaged or hand-made log holds one) takes it all.
                let next = log_id.index.checked_add(1);
                let kept = next
                    .map(|next| self.entries.split_off(&next))
                    .unwrap_or_default();
                self.entries = kept;
                let kept_bytes = next
                    .map(|next| self.entry_bytes.split_off(&next))
                    .unwrap_or_default();
                let gone: u64 = self.entry_bytes.values().sum();
                self.entry_bytes = kept_bytes;
                self.live_bytes = self.live_bytes.saturating_sub(gone);
                if self.purged.is_none_or(|p| p.index < log_id.index) {
                    self.purged = Some(log_id);
                }
            }
        }
    }

    fn forget_from(&mut self, index: u64) {
        self.entries.split_off(&index);
        let gone: u64 = self.entry_bytes.split_off(&index).values().sum();
        self.live_bytes = self.live_bytes.saturating_sub(gone);
    }

    /// Writes `records` (durably if `sync`), then applies them.
    fn write(&mut self, records: Vec<LogRecord>, sync: bool) -> Result<()> {
        let Some(file) = self.file.clone() else {
            for record in records {
                self.change(record, 0);
            }
            return Ok(());
        };
        let mut buf = Vec::new();
        let mut sizes = Vec::with_capacity(records.len());
        for record in &records {
            let before = buf.len();
            frame(record, &mut buf)?;
            sizes.push((buf.len() - before) as u64);
        }
        let disk = self.disk.clone();
        let describe = |err| match &disk {
            Some(disk) => io(&**disk, LOG_FILE, "appending to", err),
            None => Error::Internal(format!("appending to the Raft log: {err}")),
        };
        file.append(&buf)
            .and_then(|()| if sync { file.sync() } else { Ok(()) })
            .map_err(describe)?;
        self.file_bytes += buf.len() as u64;
        for (record, bytes) in records.into_iter().zip(sizes) {
            self.change(record, bytes);
        }
        if self.file_bytes > self.live_bytes.saturating_mul(2) + REWRITE_BYTES_MIN {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Writes the live log whole to a new file and puts it in place of the old one.
    fn rewrite(&mut self) -> Result<()> {
        let Some(disk) = self.disk.clone() else {
            return Ok(());
        };
        let tmp = format!("{LOG_FILE}.tmp");
        let mut buf = LOG_MAGIC.to_vec();
        if let Some(vote) = &self.vote {
            frame(&LogRecord::Vote(*vote), &mut buf)?;
        }
        if let Some(purged) = self.purged {
            frame(&LogRecord::Purge(purged), &mut buf)?;
        }
        frame(&LogRecord::Committed(self.committed), &mut buf)?;
        for entry in self.entries.values() {
            frame(&LogRecord::Entry(entry.clone()), &mut buf)?;
        }
        let file = disk
            .create(&tmp)
            .map_err(|err| io(&*disk, &tmp, "creating", err))?;
        if let Err(err) = file.append(&buf).and_then(|()| file.sync()) {
            let _ = disk.remove(&tmp);
            return Err(io(&*disk, &tmp, "writing", err));
        }
        disk.rename(&tmp, LOG_FILE)
            .and_then(|()| disk.sync_dir())
            .map_err(|err| io(&*disk, LOG_FILE, "renaming", err))?;
        self.file = Some(
            disk.open_append(LOG_FILE)
                .map_err(|err| io(&*disk, LOG_FILE, "opening", err))?,
        );
        self.file_bytes = buf.len() as u64;
        Ok(())
    }
}

fn io(disk: &dyn Disk, name: &str, doing: &str, err: std::io::Error) -> Error {
    Error::Internal(format!("{doing} {}: {err}", disk.describe(name)))
}

fn damaged(disk: &dyn Disk, offset: usize, what: &str) -> Error {
    Error::Internal(format!(
        "this view-leader member's Raft log is damaged: {} at byte {offset}: {what}. The member \
         will not start on it. To recover, move its data dir away (keep it for inspection), \
         remove the member from the group (`client viewleader remove ID`) and add it back: it \
         catches up from the others. A lone member's log has no other copy",
        disk.describe(LOG_FILE)
    ))
}

fn write_error(err: Error) -> Storage {
    StorageIOError::write_logs(&err).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<LogEntry>, Storage> {
        let inner = self.lock()?;
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, Storage> {
        let inner = self.lock()?;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> std::result::Result<(), Storage> {
        let mut inner = self.lock()?;
        inner
            .write(vec![LogRecord::Vote(*vote)], true)
            .map_err(|err| StorageIOError::write_vote(&err).into())
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<MemberId>>, Storage> {
        Ok(self.lock()?.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<MemberId>>,
    ) -> std::result::Result<(), Storage> {
        let mut inner = self.lock()?;
        // Not synced: a committed index lost in a crash is learnt again from the leader (or, alone,
        // by committing anew); syncing it would double the syncs of every write.
        inner
            .write(vec![LogRecord::Committed(committed)], false)
            .map_err(write_error)
    }

    async fn read_committed(&mut self) -> std::result::Result<Option<LogId<MemberId>>, Storage> {
        Ok(self.lock()?.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), Storage>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let records = entries.into_iter().map(LogRecord::Entry).collect();
        let written = self.lock()?.write(records, true);
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
                Err(write_error(err))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<MemberId>) -> std::result::Result<(), Storage> {
        let mut inner = self.lock()?;
        inner
            .write(
                vec![LogRecord::Truncate {
                    since: log_id.index,
                }],
                true,
            )
            .map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<MemberId>) -> std::result::Result<(), Storage> {
        let mut inner = self.lock()?;
        inner
            .write(vec![LogRecord::Purge(log_id)], true)
            .map_err(write_error)
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::storage::disk::SimDisk;
    use crate::viewleader::raft::Proposal;
    use crate::viewleader::state::Command;

    fn entry(term: u64, index: u64) -> LogEntry {
        LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Proposal {
                command: Command::Refresh,
                at_ms: index,
            }),
        }
    }

    fn open(disk: &SimDisk) -> LogStore {
        LogStore::open(Arc::new(disk.clone())).unwrap()
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store
            .inner
            .lock()
            .unwrap()
            .entries
            .keys()
            .copied()
            .collect()
    }

    fn append(store: &LogStore, entries: Vec<LogEntry>) {
        let records = entries.into_iter().map(LogRecord::Entry).collect();
        store.inner.lock().unwrap().write(records, true).unwrap();
    }

    fn write(store: &LogStore, record: LogRecord) {
        store
            .inner
            .lock()
            .unwrap()
            .write(vec![record], true)
            .unwrap();
    }

    #[tokio::test]
    async fn the_vote_entries_truncations_and_purges_survive_a_crash() {
        let disk = SimDisk::new();
        let mut store = open(&disk);
        let vote = Vote::new(3, 2);
        store.save_vote(&vote).await.unwrap();
        append(&store, (1..=6).map(|i| entry(1, i)).collect());
        write(&store, LogRecord::Truncate { since: 5 });
        append(&store, vec![entry(2, 5)]);
        write(&store, LogRecord::Purge(entry(1, 2).log_id));
        // Everything above was synced: a crash keeps it whole.
        disk.crash(&mut |_| 0);
        let mut reopened = open(&disk);
        assert_eq!(reopened.read_vote().await.unwrap(), Some(vote));
        assert_eq!(indexes(&reopened), vec![3, 4, 5]);
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(state.last_log_id, Some(entry(2, 5).log_id));
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_log_goes_on_after_it() {
        let disk = SimDisk::new();
        let store = open(&disk);
        append(&store, vec![entry(1, 1), entry(1, 2)]);
        let whole = disk.read(LOG_FILE).unwrap().len();
        // An unsynced append of which the crash keeps only a few bytes.
        let file = disk.open_append(LOG_FILE).unwrap();
        let mut torn = Vec::new();
        frame(&LogRecord::Entry(entry(1, 3)), &mut torn).unwrap();
        file.append(&torn).unwrap();
        disk.crash(&mut |_| 5);
        assert_eq!(disk.read(LOG_FILE).unwrap().len(), whole + 5);
        let reopened = open(&disk);
        assert_eq!(indexes(&reopened), vec![1, 2]);
        assert_eq!(
            disk.read(LOG_FILE).unwrap().len(),
            whole,
            "the torn bytes are cut"
        );
        append(&reopened, vec![entry(1, 3)]);
        assert_eq!(indexes(&open(&disk)), vec![1, 2, 3]);
    }

    #[test]
    fn a_damaged_record_before_a_good_one_refuses_to_start_and_says_where() {
        let disk = SimDisk::new();
        let store = open(&disk);
        let first = disk.read(LOG_FILE).unwrap().len();
        append(&store, vec![entry(1, 1), entry(1, 2), entry(1, 3)]);
        // A byte of the first entry's payload.
        disk.flip_byte(LOG_FILE, first + 12).unwrap();
        let err = LogStore::open(Arc::new(disk.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Raft log is damaged"), "{err}");
        assert!(
            err.contains(&format!("at byte {first}: the record fails its CRC")),
            "{err}"
        );
        assert!(err.contains("remove ID"), "says how to recover: {err}");
    }

    #[test]
    fn a_file_of_purged_entries_is_rewritten_down_to_what_is_live() {
        let disk = SimDisk::new();
        let store = open(&disk);
        let mut index = 0;
        let mut largest = 0;
        let mut rewritten = false;
        // Purged entries pile up in the file until it passes the rewrite threshold.
        for _ in 0..1_000 {
            let batch: Vec<LogEntry> = (index + 1..=index + 500).map(|i| entry(1, i)).collect();
            index += 500;
            append(&store, batch);
            write(&store, LogRecord::Purge(entry(1, index - 10).log_id));
            let len = disk.read(LOG_FILE).unwrap().len();
            if len < largest {
                rewritten = true;
                break;
            }
            largest = len;
        }
        assert!(
            rewritten,
            "the file was rewritten once it passed the threshold"
        );
        assert!(
            largest as u64 > REWRITE_BYTES_MIN / 2,
            "{largest} bytes before the rewrite"
        );
        assert!(
            (disk.read(LOG_FILE).unwrap().len() as u64) < REWRITE_BYTES_MIN / 10,
            "the file was rewritten down to the live entries"
        );
        let reopened = open(&disk);
        assert_eq!(indexes(&reopened), (index - 9..=index).collect::<Vec<_>>());
        assert!(!disk.list().unwrap().iter().any(|n| n.ends_with(".tmp")));
    }

    #[test]
    fn a_leftover_rewrite_is_deleted_and_the_old_file_kept() {
        let disk = SimDisk::new();
        let store = open(&disk);
        append(&store, vec![entry(1, 1)]);
        let tmp = disk.create(&format!("{LOG_FILE}.tmp")).unwrap();
        tmp.append(b"half a rewrite").unwrap();
        let reopened = open(&disk);
        assert_eq!(indexes(&reopened), vec![1]);
        assert!(!disk.list().unwrap().iter().any(|n| n.ends_with(".tmp")));
    }
}
