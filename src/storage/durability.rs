//! Group commit: waiting until what the engine wrote is on disk, without holding the engine.
//!
//! The engine writes each record to the operating system at once, under the server's lock, and
//! counts the bytes written (its log sequence number, [`Lsn`]). A request that must not be
//! answered before its records are durable takes the count when it is done with the engine, lets
//! go of the lock, and waits here. The first waiter that finds no sync running becomes the
//! syncer: it syncs the file for everything written so far, and every waiter whose records that
//! covers is released by the same sync. Waiters that arrived during it are covered by the next.
//! So concurrent transactions share syncs, and a lone one pays for exactly one.
//!
//! How much a sync covers depends on [`FsyncMode`]:
//! * `always`: the engine syncs each record itself before it returns; nothing waits here.
//! * `batch` (the default): group commit, as above.
//! * `never`: records reach the operating system and are not synced; nothing waits here.
//!
//! A failed sync is final ([`Durability`] fails every later wait): after a failed fsync the
//! kernel may have dropped the dirty pages, so a retry that succeeds would prove nothing.
//!
//! # Deliberately left out
//! * A sync delay to gather more waiters (as PostgreSQL's `commit_delay`): the sync that is
//!   running already gathers everyone who arrives during it.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::error::{Error, Result};

use super::disk::DiskFile;

/// A position in the engine's log: the bytes written since it was opened.
pub type Lsn = u64;

/// When the engine makes what it wrote durable. See the module doc.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Every record is synced before the write returns: safest, one sync per record.
    Always,
    /// Group commit: a request waits for a sync that covers its records, shared with every
    /// request that wrote before it.
    #[default]
    Batch,
    /// No syncs: a killed process loses nothing (the operating system holds the writes), a
    /// machine that loses power loses what was not yet written back, acknowledged or not.
    Never,
}

impl std::str::FromStr for FsyncMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Self::Always),
            "batch" => Ok(Self::Batch),
            "never" => Ok(Self::Never),
            other => Err(crate::errinput!(
                "--fsync takes always, batch or never, not {other:?}"
            )),
        }
    }
}

impl std::fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::Batch => "batch",
            Self::Never => "never",
        })
    }
}

/// A handle to wait on the engine's syncs. Cheap to clone; an engine that keeps nothing on disk
/// hands out one that never waits ([`Durability::none`]).
#[derive(Clone, Debug, Default)]
pub struct Durability {
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<SyncState>,
    /// Fires after every sync, successful or not.
    synced: Notify,
}

#[derive(Debug)]
struct SyncState {
    written: Lsn,
    synced: Lsn,
    syncing: bool,
    /// The file a sync covers: the log's current segment.
    file: Arc<dyn DiskFile>,
    /// Whether a sync must leave the async runtime (a real disk).
    blocking: bool,
    /// How long a sync takes where it does not block (a simulated disk).
    delay: std::time::Duration,
    failed: Option<String>,
}

impl Durability {
    /// Nothing to wait for.
    pub fn none() -> Self {
        Self { shared: None }
    }

    /// Syncs of `file`, starting with `written` bytes, all durable.
    pub(super) fn new(
        file: Arc<dyn DiskFile>,
        written: Lsn,
        blocking: bool,
        delay: std::time::Duration,
    ) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                state: Mutex::new(SyncState {
                    written,
                    synced: written,
                    syncing: false,
                    file,
                    blocking,
                    delay,
                    failed: None,
                }),
                synced: Notify::new(),
            })),
        }
    }

    fn state(shared: &Shared) -> MutexGuard<'_, SyncState> {
        shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The engine wrote up to `written`; with `synced`, that much is durable too.
    pub(super) fn advance(&self, written: Lsn, synced: bool) {
        if let Some(shared) = &self.shared {
            let mut state = Self::state(shared);
            state.written = state.written.max(written);
            if synced {
                state.synced = state.synced.max(written);
            }
        }
    }

    /// The log moved to a new segment, everything before it synced.
    pub(super) fn switch_file(&self, file: Arc<dyn DiskFile>, written: Lsn) {
        if let Some(shared) = &self.shared {
            let mut state = Self::state(shared);
            state.file = file;
            state.written = state.written.max(written);
            state.synced = state.synced.max(written);
        }
        self.wake();
    }

    /// Every later wait fails with `why`.
    pub(super) fn fail(&self, why: String) {
        if let Some(shared) = &self.shared {
            Self::state(shared).failed.get_or_insert(why);
        }
        self.wake();
    }

    fn wake(&self) {
        if let Some(shared) = &self.shared {
            shared.synced.notify_waiters();
        }
    }

    /// Why the disk can no longer be trusted, if it cannot.
    pub fn failure(&self) -> Option<String> {
        let shared = self.shared.as_ref()?;
        Self::state(shared).failed.clone()
    }

    /// Waits until everything written so far is durable.
    pub async fn flush(&self) -> Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let target = Self::state(shared).written;
        self.wait(target).await
    }

    /// Waits until the log is durable up to `lsn`, syncing it if no sync is running.
    pub async fn wait(&self, lsn: Lsn) -> Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        loop {
            let notified = shared.synced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let job = {
                let mut state = Self::state(shared);
                if let Some(why) = &state.failed {
                    return Err(Error::Internal(format!(
                        "the data dir cannot be written ({why}); writes are refused until the server restarts"
                    )));
                }
                if state.synced >= lsn {
                    return Ok(());
                }
                if state.syncing {
                    None
                } else {
                    state.syncing = true;
                    Some((
                        state.written,
                        state.file.clone(),
                        state.blocking,
                        state.delay,
                    ))
                }
            };
            match job {
                None => notified.await,
                Some((target, file, blocking, delay)) => {
                    // The sync finishes and publishes on its own even if this waiter is
                    // dropped half way: a waiter that gave up must not leave `syncing` set.
                    let shared = shared.clone();
                    let sync = move || {
                        let result = file.sync();
                        let mut state = Self::state(&shared);
                        state.syncing = false;
                        match result {
                            Ok(()) => state.synced = state.synced.max(target),
                            Err(err) => {
                                state.failed.get_or_insert(format!("sync failed: {err}"));
                            }
                        }
                        drop(state);
                        shared.synced.notify_waiters();
                    };
                    if blocking {
                        // Awaiting the handle is not needed: the closure publishes its result.
                        drop(tokio::task::spawn_blocking(sync));
                    } else if delay.is_zero() {
                        sync();
                    } else {
                        // A task of its own, so the sync ends even if this waiter is dropped.
                        drop(tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            sync();
                        }));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::{Disk, SimDisk};

    #[tokio::test]
    async fn concurrent_waiters_share_one_sync() {
        let disk = SimDisk::new();
        let file = disk.create("log").unwrap();
        let durability = Durability::new(file.clone(), 0, false, std::time::Duration::ZERO);
        for lsn in 1..=10 {
            file.append(b"x").unwrap();
            durability.advance(lsn, false);
        }
        let before = disk.syncs();
        let waits: Vec<_> = (1..=10).map(|lsn| durability.wait(lsn)).collect();
        for result in futures::future::join_all(waits).await {
            result.unwrap();
        }
        assert_eq!(disk.syncs() - before, 1, "one sync covered all ten records");
        durability.wait(10).await.unwrap();
        assert_eq!(disk.syncs() - before, 1, "nothing left to sync");
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_later_wait() {
        let disk = SimDisk::new();
        let file = disk.create("log").unwrap();
        let durability = Durability::new(file.clone(), 0, false, std::time::Duration::ZERO);
        file.append(b"x").unwrap();
        durability.advance(1, false);
        disk.crash(&mut |_| 0);
        assert!(durability.wait(1).await.is_err());
        assert!(durability.flush().await.is_err());
        assert!(durability.failure().is_some());
    }
}
