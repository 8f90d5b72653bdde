//! The file layer under the log engine ([`super::log`]): one directory of files that are only
//! ever appended to, synced, truncated, renamed and removed. Two implementations:
//!
//! * [`RealDisk`]: a directory of the real file system, locked against a second process for as
//!   long as the disk is open.
//! * [`SimDisk`]: files in memory that model what a crash keeps. Bytes appended since a file's
//!   last sync, and names created, renamed or removed since the directory's last sync, are not
//!   durable: [`SimDisk::crash`] throws them away (keeping a chosen prefix of each file's unsynced
//!   tail, a torn write). The crash-model tests and the simulation run the engine on it, because
//!   a `kill -9` keeps the operating system's page cache and so proves nothing about syncing.
//!
//! [`Prefixed`] puts a second engine in the same directory under a name prefix (a server's
//! single-server keys beside its ring keys), sharing the lock.
//!
//! # Deliberately left out
//! * Reads at an offset: recovery reads whole files once, and nothing reads them afterwards (the
//!   engine keeps every value in memory).
//! * Sector-level faults in the simulated disk (a write that lands in the wrong place): a torn
//!   tail and a flipped byte are what the engine's checks are for, and the recovery tests make
//!   those on real files.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The lock file that keeps a second process out of a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// A directory of append-only files. See the module doc.
pub trait Disk: Send + Sync + fmt::Debug {
    /// The names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of `name`.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Creates `name` empty (replacing a file of that name) and opens it for appending.
    fn create(&self, name: &str) -> io::Result<Arc<dyn DiskFile>>;
    /// Opens the existing `name` for appending at its end.
    fn open_append(&self, name: &str) -> io::Result<Arc<dyn DiskFile>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes the creations, renames and removals so far durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Whether a sync holds the calling thread long enough to move it off the async runtime:
    /// true for a real disk; false for the simulated one, which must stay on the one thread the
    /// simulation runs on.
    fn syncs_block(&self) -> bool;
    /// How to name `name` in a message (its path, for a real disk).
    fn describe(&self, name: &str) -> String;

    /// How long a sync takes on a disk that does not block (the simulated one), so that in a
    /// simulation other writes arrive while one is under way, as on a real disk. Zero: at once.
    fn sync_delay(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// One open file, appended to at its end. Shared: one task appends while another syncs.
pub trait DiskFile: Send + Sync + fmt::Debug {
    fn append(&self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (undoing a write that failed half way, or a torn tail).
    fn truncate(&self, len: u64) -> io::Result<()>;
}

// ---------------------------------------------------------------------------------------------
// The real file system
// ---------------------------------------------------------------------------------------------

/// A directory on the real file system, locked for as long as this value lives.
#[derive(Debug)]
pub struct RealDisk {
    dir: PathBuf,
    /// Held for the lifetime of the disk: the operating system releases the lock when the
    /// process dies, however it dies.
    _lock: File,
}

impl RealDisk {
    /// Opens `dir` (creating it and its parents if missing) and locks it. A directory another
    /// live process holds is refused.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is locked by another process (another server uses this data dir)",
                        dir.display()
                    ),
                ))
            }
            Err(fs::TryLockError::Error(err)) => return Err(err),
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Disk for RealDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join(name))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(RealFile(file)))
    }

    fn open_append(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new().append(true).open(self.dir.join(name))?;
        Ok(Arc::new(RealFile(file)))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn syncs_block(&self) -> bool {
        true
    }

    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

#[derive(Debug)]
struct RealFile(File);

impl DiskFile for RealFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        (&self.0).write_all(bytes)
    }

    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated disk
// ---------------------------------------------------------------------------------------------

/// Files in memory that lose what was not synced when [`SimDisk::crash`] is called. Clones share
/// the same files: the simulation keeps one per server and hands a clone to each incarnation.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug, Default)]
struct SimState {
    /// Bumped by every crash: a file opened before it refuses further use.
    incarnation: u64,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    /// The directory as processes see it.
    names: BTreeMap<String, u64>,
    /// The directory as a crash leaves it: as of the last `sync_dir`.
    durable_names: BTreeMap<String, u64>,
    /// Bytes all files may hold together; `None`: no limit.
    capacity_bytes: Option<u64>,
    /// Syncs made, for tests.
    syncs: u64,
    /// What [`Disk::sync_delay`] answers.
    sync_delay: std::time::Duration,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    /// `data[..synced_len]` is durable.
    synced_len: usize,
    /// The durable content, kept only when a truncation cut into it before the next sync.
    durable_shadow: Option<Vec<u8>>,
}

impl SimState {
    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| inode.data.len() as u64)
            .sum()
    }
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding it can only come from a bug in this file; the state stays usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Limits the bytes all files may hold together: an append beyond it fails as a full disk
    /// does. `None` lifts the limit.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.state().capacity_bytes = capacity_bytes;
    }

    /// Makes every group-committed sync take `delay` (of the caller's clock: simulated time in
    /// a simulation), so that writes can be caught unsynced by a crash.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.state().sync_delay = delay;
    }

    /// How many syncs of files were made so far.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// A crash: the directory goes back to its last sync, and each file keeps what was synced
    /// plus `torn(unsynced_len)` bytes of its unsynced tail (at most that many). Files opened
    /// before the crash refuse further use.
    pub fn crash(&self, torn: &mut dyn FnMut(usize) -> usize) {
        let mut state = self.state();
        state.incarnation = state.incarnation.wrapping_add(1);
        state.names = state.durable_names.clone();
        let live: Vec<u64> = state.names.values().copied().collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        for inode in state.inodes.values_mut() {
            let mut kept = match inode.durable_shadow.take() {
                Some(shadow) => shadow,
                None => {
                    let unsynced = inode.data.len().saturating_sub(inode.synced_len);
                    let keep = inode.synced_len + torn(unsynced).min(unsynced);
                    inode.data[..keep].to_vec()
                }
            };
            kept.shrink_to_fit();
            inode.synced_len = kept.len();
            inode.data = kept;
        }
    }

    /// Replaces byte `offset` of `name` with its complement, durably: a bad sector.
    pub fn flip_byte(&self, name: &str, offset: usize) -> io::Result<()> {
        let mut state = self.state();
        let inode = *state.names.get(name).ok_or_else(|| not_found(name))?;
        let file = state
            .inodes
            .get_mut(&inode)
            .ok_or_else(|| not_found(name))?;
        let byte = file
            .data
            .get_mut(offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset past the end"))?;
        *byte = !*byte;
        Ok(())
    }

    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut state = self.state();
        let inode = match (state.names.get(name).copied(), create) {
            (Some(inode), false) => inode,
            (None, false) => return Err(not_found(name)),
            (_, true) => {
                let inode = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(inode, Inode::default());
                state.names.insert(name.to_string(), inode);
                inode
            }
        };
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            inode,
            incarnation: state.incarnation,
        }))
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl Disk for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state().names.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let state = self.state();
        let inode = state.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(state
            .inodes
            .get(inode)
            .map(|i| i.data.clone())
            .unwrap_or_default())
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        self.open(name, true)
    }

    fn open_append(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        self.open(name, false)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state();
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_string(), inode);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state();
        state.names.remove(name).ok_or_else(|| not_found(name))?;
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state();
        state.durable_names = state.names.clone();
        let live: Vec<u64> = state
            .names
            .values()
            .chain(state.durable_names.values())
            .copied()
            .collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        Ok(())
    }

    fn syncs_block(&self) -> bool {
        false
    }

    fn describe(&self, name: &str) -> String {
        format!("simulated disk: {name}")
    }

    fn sync_delay(&self) -> std::time::Duration {
        self.state().sync_delay
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: u64,
    incarnation: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimState, u64) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.state();
        if state.incarnation != self.incarnation {
            return Err(io::Error::other(
                "the simulated disk crashed since this file was opened",
            ));
        }
        f(&mut state, self.inode)
    }
}

impl DiskFile for SimFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        self.with(|state, inode| {
            if let Some(capacity) = state.capacity_bytes {
                let used = state.used_bytes();
                if used.saturating_add(bytes.len() as u64) > capacity {
                    // A full disk may take part of the write, as a real one does.
                    let room = capacity.saturating_sub(used) as usize;
                    if let Some(file) = state.inodes.get_mut(&inode) {
                        file.data.extend_from_slice(&bytes[..room.min(bytes.len())]);
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        "no space left on the simulated disk",
                    ));
                }
            }
            let file = state
                .inodes
                .get_mut(&inode)
                .ok_or_else(|| not_found("file"))?;
            file.data.extend_from_slice(bytes);
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|state, inode| {
            state.syncs += 1;
            // A file removed while open is gone with its data, and syncing it succeeds, as on
            // a real file system (a group commit may sync a segment a snapshot just replaced).
            if let Some(file) = state.inodes.get_mut(&inode) {
                file.synced_len = file.data.len();
                file.durable_shadow = None;
            }
            Ok(())
        })
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.with(|state, inode| {
            let file = state
                .inodes
                .get_mut(&inode)
                .ok_or_else(|| not_found("file"))?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len < file.synced_len && file.durable_shadow.is_none() {
                file.durable_shadow = Some(file.data[..file.synced_len].to_vec());
            }
            file.data.truncate(len);
            file.synced_len = file.synced_len.min(len);
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// A second engine in the same directory
// ---------------------------------------------------------------------------------------------

/// The files of another disk whose names begin with `prefix`, seen without it: a second log
/// engine in the same directory (a server's single-server keys beside its ring keys) that shares
/// the directory's lock and its syncs but none of its names. The outer engine must ignore names
/// it does not recognise, as the log engine does.
#[derive(Debug)]
pub struct Prefixed {
    inner: Arc<dyn Disk>,
    prefix: &'static str,
}

impl Prefixed {
    pub fn new(inner: Arc<dyn Disk>, prefix: &'static str) -> Self {
        assert!(
            !prefix.is_empty() && !prefix.contains('/'),
            "a disk prefix is a non-empty file name part, not {prefix:?}"
        );
        Self { inner, prefix }
    }

    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl Disk for Prefixed {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self
            .inner
            .list()?
            .into_iter()
            .filter_map(|name| name.strip_prefix(self.prefix).map(str::to_string))
            .collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(&self.name(name))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        self.inner.create(&self.name(name))
    }

    fn open_append(&self, name: &str) -> io::Result<Arc<dyn DiskFile>> {
        self.inner.open_append(&self.name(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(&self.name(from), &self.name(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(&self.name(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }

    fn syncs_block(&self) -> bool {
        self.inner.syncs_block()
    }

    fn describe(&self, name: &str) -> String {
        self.inner.describe(&self.name(name))
    }

    fn sync_delay(&self) -> std::time::Duration {
        self.inner.sync_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_synced_bytes_and_synced_names_only() {
        let disk = SimDisk::new();
        let a = disk.create("a").unwrap();
        a.append(b"durable").unwrap();
        a.sync().unwrap();
        disk.sync_dir().unwrap();
        a.append(b"-lost").unwrap();
        let b = disk.create("b").unwrap();
        b.append(b"never named durably").unwrap();
        b.sync().unwrap();
        disk.crash(&mut |_| 0);
        assert_eq!(disk.read("a").unwrap(), b"durable");
        assert!(disk.read("b").is_err(), "b's name was never synced");
        assert!(
            a.append(b"x").is_err(),
            "a handle from before the crash is dead"
        );
    }

    #[test]
    fn a_torn_write_keeps_a_prefix_of_the_unsynced_tail() {
        let disk = SimDisk::new();
        let a = disk.create("a").unwrap();
        disk.sync_dir().unwrap();
        a.append(b"0123456789").unwrap();
        disk.crash(&mut |unsynced| unsynced / 2);
        assert_eq!(disk.read("a").unwrap(), b"01234");
    }

    #[test]
    fn a_truncation_is_not_durable_until_synced() {
        let disk = SimDisk::new();
        let a = disk.create("a").unwrap();
        disk.sync_dir().unwrap();
        a.append(b"abcdef").unwrap();
        a.sync().unwrap();
        a.truncate(2).unwrap();
        a.append(b"XY").unwrap();
        disk.crash(&mut |unsynced| unsynced);
        assert_eq!(disk.read("a").unwrap(), b"abcdef");
    }

    #[test]
    fn a_full_disk_refuses_the_append() {
        let disk = SimDisk::new();
        disk.set_capacity(Some(4));
        let a = disk.create("a").unwrap();
        let err = a.append(b"too long").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn a_real_directory_is_refused_to_a_second_opener() {
        let dir = tempfile::tempdir().unwrap();
        let first = RealDisk::open(dir.path()).unwrap();
        let err = RealDisk::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("locked by another process"),
            "{err}"
        );
        drop(first);
        RealDisk::open(dir.path()).unwrap();
    }
}
