//! The replicated state machine: the view leader's [`State`], fed the log's entries in order,
//! and its snapshots.
//!
//! A snapshot is the whole state, postcard-encoded, with openraft's metadata (the last log id
//! it covers and the membership). It is written to `raft.snap` in the member's data dir (as
//! `.tmp`, synced, renamed, directory synced) before openraft may purge the log it covers, and
//! read back at start: a restarted member resumes from it and openraft replays the log after it.
//!
//! A snapshot sent by a leader is checked whole before openraft gets its last chunk
//! ([`Intake`]): openraft takes a snapshot its state machine cannot install as a storage failure
//! and stops the member for good, so one that does not decode is refused instead, and the
//! leader sends it again.
//!
//! Every applied entry publishes the view to a watch channel: the service's long polls
//! (`WatchView`) wake on it. Joins, leaves and expiries are logged at INFO with their reason
//! (taken from the command applied), and a view too small for every replica at WARN.
//!
//! A restarted member applies again what it had applied before it stopped (openraft replays
//! the log after the snapshot), and those changes happened then, not now: they are logged at
//! DEBUG with `replayed = true`, so an operator reading the log sees each event once, when it
//! happened. Which entries count as replayed: those up to the committed index the member's log
//! held when it opened ([`Machine::open`]'s `replayed_through`, see there for why that index
//! and how far it can be off).
//!
//! # Deliberately left out
//! * Streaming a snapshot: it is built and sent whole (in chunks of
//!   [`super::SNAPSHOT_CHUNK_BYTES`]); the state's own limits bound its size.

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Applied, LogEntry, MemberId, Raft, TypeConfig};
use crate::errinput;
use crate::error::{Error, Result};
use crate::ring::REPLICATION_COUNT;
use crate::storage::disk::Disk;
use crate::storage::record::{describe_bad, frame, read_record};
use crate::types::{ServerId, View};
use crate::viewleader::state::{Command, State};

/// The largest snapshot a member takes from a leader, in bytes: far above what the state's own
/// limits let a group reach in practice (100,000 locks with 1 KiB names make about 100 MiB). A
/// chunk that would write past it is refused before openraft buffers it: openraft's buffer
/// grows to whatever offset a chunk names.
pub const SNAPSHOT_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// The snapshot's file in the member's data dir.
pub const SNAPSHOT_FILE: &str = "raft.snap";
/// The first bytes of the snapshot file.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RLRSNP\x00\x01";

type Storage = StorageError<MemberId>;
type Meta = SnapshotMeta<MemberId, BasicNode>;

/// The snapshot file's one record.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: Meta,
    data: Vec<u8>,
}

/// The state machine; clones share it (the service reads the state through one).
#[derive(Clone, Debug)]
pub struct Machine {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    last_applied: Option<LogId<MemberId>>,
    membership: StoredMembership<MemberId, BasicNode>,
    snapshot: Option<(Meta, Vec<u8>)>,
    /// Snapshots built by this process, to tell them apart.
    built: u64,
    disk: Option<Arc<dyn Disk>>,
    view_tx: watch::Sender<View>,
    /// The last log index this member applied before it (re)started, as far as it knows:
    /// applying an entry up to it again is a replay ([`Machine::open`]).
    replayed_through: Option<u64>,
}

/// Logs a change at INFO, or at DEBUG marked `replayed` when a restarted member applies again
/// an entry it applied before it stopped (the event happened then, and was logged then).
macro_rules! change_event {
    ($replayed:expr, $($field:tt)+) => {
        if $replayed {
            debug!(replayed = true, $($field)+)
        } else {
            info!($($field)+)
        }
    };
}

impl Machine {
    /// The state machine of a member, resuming from the snapshot in `disk` if there is one
    /// (otherwise from `fresh`). `view_tx` hears every view it reaches.
    ///
    /// `replayed_through` is the committed index the member's log store held when it opened
    /// ([`super::log_store::LogStore::committed_index`]): the entries up to it are logged as
    /// replayed when applied. openraft saves the committed index before it applies the entries
    /// it covers (`save_committed`, then `apply`) and, at start, applies again everything from
    /// the snapshot up to it, so every entry this member applied before it stopped is at or
    /// below it. It is imprecise both ways, by design cheap: an entry committed and saved but
    /// not yet applied when the member stopped is logged only at DEBUG (the gap between the two
    /// calls), and the committed record is not synced ([`super::log_store`]), so a machine
    /// crash (not a killed process: the OS keeps its writes) can lose it and then the last
    /// entries are logged at INFO a second time. The last index present in the log at open
    /// would be worse: it also covers entries this member held but had never applied (never
    /// logged before), and entries a new leader later replaced.
    pub fn open(
        disk: Option<Arc<dyn Disk>>,
        fresh: State,
        view_tx: watch::Sender<View>,
        replayed_through: Option<u64>,
    ) -> Result<Self> {
        let mut inner = Inner {
            state: fresh,
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
            built: 0,
            disk: disk.clone(),
            view_tx,
            replayed_through,
        };
        if let Some(disk) = &disk {
            let names = disk.list().map_err(|err| io(&**disk, "", "listing", err))?;
            let tmp = format!("{SNAPSHOT_FILE}.tmp");
            if names.contains(&tmp) {
                disk.remove(&tmp)
                    .map_err(|err| io(&**disk, &tmp, "removing", err))?;
            }
            if names.iter().any(|n| n == SNAPSHOT_FILE) {
                let bytes = disk
                    .read(SNAPSHOT_FILE)
                    .map_err(|err| io(&**disk, SNAPSHOT_FILE, "reading", err))?;
                let file = read_snapshot_file(&**disk, &bytes)?;
                inner.state = decode_state(&file.data).map_err(|err| damaged(&**disk, &err))?;
                inner.last_applied = file.meta.last_log_id;
                inner.membership = file.meta.last_membership.clone();
                inner.snapshot = Some((file.meta, file.data));
            }
        }
        // The snapshot's view is one this member reached before it stopped.
        inner.publish(true);
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> std::result::Result<MutexGuard<'_, Inner>, Storage> {
        self.inner.lock().map_err(|_| {
            StorageIOError::read_state_machine(&Error::Internal("state machine poisoned".into()))
                .into()
        })
    }

    /// Runs `f` on the state as applied so far.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| Error::Internal("state machine poisoned".into()))?;
        Ok(f(&inner.state))
    }

    /// The last applied index and the snapshot's, for status pages.
    pub fn indices(&self) -> (Option<u64>, Option<u64>) {
        match self.inner.lock() {
            Ok(inner) => (
                inner.last_applied.map(|l| l.index),
                inner
                    .snapshot
                    .as_ref()
                    .and_then(|(meta, _)| meta.last_log_id.map(|l| l.index)),
            ),
            Err(_) => (None, None),
        }
    }
}

/// Who a command may add to or remove from the view, noted before it is applied, so that the
/// change can be logged with its reason after. The state stays pure: the reason comes from the
/// command, the addresses from reads of the state before and after.
///
/// Every member logs, not just the leader: every member applies the same entries, the state
/// machine does not know who leads (leadership can change between proposing and applying), and
/// each member's log then tells the whole story of its view on its own. The cost is the same
/// line once per member; a restarted member that replays its log logs the same lines again,
/// but at DEBUG, marked `replayed` ([`Machine::open`] says which entries count as replayed).
enum Change {
    /// A heartbeat from a server not in the view: applying it may admit it.
    Join { id: ServerId, addr: String },
    /// A server that says it leaves, with its address while it is still known.
    Leave { id: ServerId, addr: String },
    /// Servers the leader's sweep expires (their leases lapsed), with their addresses.
    Expire(Vec<(ServerId, String)>),
    /// A command that admits or removes nobody.
    None,
}

impl Change {
    fn before(state: &State, command: &Command) -> Self {
        match command {
            Command::Heartbeat(beat) if state.member_addr(&beat.server_id).is_none() => {
                Change::Join {
                    id: beat.server_id.clone(),
                    addr: beat.addr.clone(),
                }
            }
            Command::Leave { server_id } => match state.member_addr(server_id) {
                Some(addr) => Change::Leave {
                    id: server_id.clone(),
                    addr: addr.to_string(),
                },
                None => Change::None,
            },
            Command::Expire { servers } => Change::Expire(
                servers
                    .iter()
                    .filter_map(|id| {
                        state
                            .member_addr(id)
                            .map(|addr| (id.clone(), addr.to_string()))
                    })
                    .collect(),
            ),
            _ => Change::None,
        }
    }

    /// Logs what the command changed, now that it is applied, and warns when the view is too
    /// small to hold every replica; all at DEBUG if the entry is `replayed`.
    fn log(self, state: &State, replayed: bool) {
        let epoch = state.epoch();
        let changed = match self {
            Change::Join { id, addr } if state.member_addr(&id).is_some() => {
                change_event!(replayed, epoch, server_id = %id, %addr, "server joined the view (first heartbeat)");
                true
            }
            Change::Leave { id, addr } if state.member_addr(&id).is_none() => {
                change_event!(replayed, epoch, server_id = %id, %addr, "server left the view (it asked to leave)");
                true
            }
            Change::Expire(servers) => {
                let mut any = false;
                for (id, addr) in servers
                    .into_iter()
                    .filter(|(id, _)| state.member_addr(id).is_none())
                {
                    change_event!(replayed, epoch, server_id = %id, %addr, "server expired from the view (its heartbeat lease lapsed)");
                    any = true;
                }
                any
            }
            _ => false,
        };
        if changed {
            let live = state.view().servers.len();
            if live < REPLICATION_COUNT && replayed {
                debug!(
                    replayed = true,
                    epoch,
                    servers = live,
                    "the view has {live} server(s), fewer than {REPLICATION_COUNT}"
                );
            } else if live < REPLICATION_COUNT {
                warn!(
                    epoch,
                    servers = live,
                    "the view has {live} server(s), fewer than {REPLICATION_COUNT}: replication cannot \
                     place {REPLICATION_COUNT} copies of each key"
                );
            }
        }
    }
}

impl Inner {
    /// Whether applying the entry at `index` is a replay of what this member applied before it
    /// started.
    fn replays(&self, index: u64) -> bool {
        self.replayed_through
            .is_some_and(|through| index <= through)
    }

    /// Sends the state's view to the watchers, logging a new epoch and a new loss (at DEBUG if
    /// the entries that led there are `replayed`).
    fn publish(&self, replayed: bool) {
        let view = self.state.view();
        let newest_loss = self.view_tx.borrow().losses.last().map(|l| l.epoch);
        if let Some(loss) = view.losses.last().filter(|l| Some(l.epoch) != newest_loss) {
            if replayed {
                debug!(
                    replayed = true,
                    epoch = loss.epoch,
                    lost = ?loss.lost_addrs(),
                    "settled without every replica of some keys: their data may be lost"
                );
            } else {
                warn!(
                    epoch = loss.epoch,
                    lost = ?loss.lost_addrs(),
                    "settled without every replica of some keys: their data may be lost"
                );
            }
        }
        self.view_tx.send_if_modified(|current| {
            if *current == view {
                return false;
            }
            if current.epoch != view.epoch {
                let servers: Vec<&str> = view.servers.iter().map(|s| s.addr.as_str()).collect();
                change_event!(replayed, epoch = view.epoch, ?servers, "view changed");
            }
            *current = view;
            true
        });
    }

    /// Writes a snapshot durably under its final name.
    fn store(&self, meta: &Meta, data: &[u8]) -> Result<()> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        frame(
            &SnapshotFile {
                meta: meta.clone(),
                data: data.to_vec(),
            },
            &mut bytes,
        )?;
        let tmp = format!("{SNAPSHOT_FILE}.tmp");
        let file = disk
            .create(&tmp)
            .map_err(|err| io(&**disk, &tmp, "creating", err))?;
        if let Err(err) = file.append(&bytes).and_then(|()| file.sync()) {
            let _ = disk.remove(&tmp);
            return Err(io(&**disk, &tmp, "writing", err));
        }
        disk.rename(&tmp, SNAPSHOT_FILE)
            .and_then(|()| disk.sync_dir())
            .map_err(|err| io(&**disk, SNAPSHOT_FILE, "renaming", err))?;
        info!(
            file = %disk.describe(SNAPSHOT_FILE),
            bytes = bytes.len(),
            last_index = ?meta.last_log_id.map(|l| l.index),
            "Raft snapshot written"
        );
        Ok(())
    }
}

/// What openraft answers a snapshot chunk.
pub type SnapshotAnswer = std::result::Result<
    InstallSnapshotResponse<MemberId>,
    RaftError<MemberId, InstallSnapshotError>,
>;

/// The snapshot a member is being sent, as openraft's own buffer holds it: every chunk openraft
/// took, written at its offset. Chunks go through one at a time, so the copy never differs from
/// openraft's buffer.
#[derive(Debug, Default)]
pub struct Intake {
    /// The snapshot's id and its bytes so far.
    receiving: tokio::sync::Mutex<Option<(String, Vec<u8>)>>,
}

impl Intake {
    /// Hands `request` to `raft`, unless it would make openraft install a snapshot that does not
    /// decode, or write past [`SNAPSHOT_BYTES_MAX`]: those are refused with an error naming why.
    pub async fn install(
        &self,
        raft: &Raft,
        request: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<SnapshotAnswer> {
        let len = request.data.len() as u64;
        let end = request
            .offset
            .checked_add(len)
            .filter(|&end| end <= SNAPSHOT_BYTES_MAX)
            .ok_or_else(|| {
                errinput!(
                    "a snapshot chunk of {len} bytes at offset {} ends past the \
                     {SNAPSHOT_BYTES_MAX}-byte limit",
                    request.offset
                )
            })?;
        let mut receiving = self.receiving.lock().await;
        let held = matches!(
            receiving.as_ref(),
            Some((id, _)) if *id == request.meta.snapshot_id
        );
        // openraft starts a new buffer for a new id at offset 0, and refuses one at any other.
        if !held && request.offset != 0 {
            return Ok(raft.install_snapshot(request).await);
        }
        let (id, vote, offset) = (
            request.meta.snapshot_id.clone(),
            request.vote,
            request.offset,
        );
        if request.done {
            // The one copy of the whole snapshot this makes: the last chunk is checked on it.
            let mut whole = match receiving.as_ref() {
                Some((_, bytes)) if held => bytes.clone(),
                _ => Vec::new(),
            };
            write_at(&mut whole, offset, end, &request.data);
            decode_state(&whole)
                .map_err(|why| errinput!("a snapshot that cannot be installed: {why}"))?;
            let answer = raft.install_snapshot(request).await;
            if accepted(&answer, &vote) {
                *receiving = None;
            }
            return Ok(answer);
        }
        let data = request.data.clone();
        let answer = raft.install_snapshot(request).await;
        if accepted(&answer, &vote) {
            let mut bytes = match receiving.take() {
                Some((_, bytes)) if held => bytes,
                _ => Vec::new(),
            };
            write_at(&mut bytes, offset, end, &data);
            *receiving = Some((id, bytes));
        }
        Ok(answer)
    }
}

/// Whether openraft took a chunk: it writes one whose vote is not below its own, and answers
/// with its own.
fn accepted(answer: &SnapshotAnswer, vote: &openraft::Vote<MemberId>) -> bool {
    matches!(answer, Ok(response) if *vote >= response.vote)
}

/// Writes `data` at `offset` of `bytes`, ending at `end`, as openraft's cursor does: a gap
/// before it is filled with zeros.
fn write_at(bytes: &mut Vec<u8>, offset: u64, end: u64, data: &[u8]) {
    // Both are at most SNAPSHOT_BYTES_MAX, which fits any usize ringleader builds for.
    let (offset, end) = (offset as usize, end as usize);
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset..end].copy_from_slice(data);
}

fn read_snapshot_file(disk: &dyn Disk, bytes: &[u8]) -> Result<SnapshotFile> {
    if bytes.get(..SNAPSHOT_MAGIC.len()) != Some(&SNAPSHOT_MAGIC[..]) {
        return Err(damaged(disk, "it does not start with a snapshot header"));
    }
    match read_record::<SnapshotFile>(bytes, SNAPSHOT_MAGIC.len()) {
        Ok((file, _)) => Ok(file),
        Err(bad) => Err(damaged(disk, &describe_bad(&bad))),
    }
}

fn decode_state(data: &[u8]) -> std::result::Result<State, String> {
    let state: State =
        postcard::from_bytes(data).map_err(|err| format!("its state cannot be decoded ({err})"))?;
    state
        .check()
        .map_err(|err| format!("its state is out of range ({err})"))?;
    Ok(state)
}

fn io(disk: &dyn Disk, name: &str, doing: &str, err: std::io::Error) -> Error {
    Error::Internal(format!("{doing} {}: {err}", disk.describe(name)))
}

fn damaged(disk: &dyn Disk, what: &str) -> Error {
    Error::Internal(format!(
        "this view-leader member's snapshot is damaged: {}: {what}. The member will not start \
         on it. To recover, move its data dir away, remove the member from the group (`client \
         viewleader remove ID`) and add it back: it catches up from the others",
        disk.describe(SNAPSHOT_FILE)
    ))
}

fn write_error(err: Error) -> Storage {
    StorageIOError::write_snapshot(None, &err).into()
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, Storage> {
        let mut inner = self.lock()?;
        let data = postcard::to_stdvec(&inner.state)
            .map_err(|err| write_error(Error::Internal(format!("encoding the state: {err}"))))?;
        inner.built += 1;
        let meta = Meta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                inner.last_applied.map_or(0, |l| l.leader_id.term),
                inner.last_applied.map_or(0, |l| l.index),
                inner.built
            ),
        };
        inner.store(&meta, &data).map_err(write_error)?;
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<
        (
            Option<LogId<MemberId>>,
            StoredMembership<MemberId, BasicNode>,
        ),
        Storage,
    > {
        let inner = self.lock()?;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> std::result::Result<Vec<Applied>, Storage>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock()?;
        let mut applied = Vec::new();
        let mut replayed = false;
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            replayed = inner.replays(entry.log_id.index);
            applied.push(match entry.payload {
                EntryPayload::Blank => Applied(None),
                EntryPayload::Normal(proposal) => {
                    let before = Change::before(&inner.state, &proposal.command);
                    let outcome = inner.state.apply(proposal.command, proposal.at_ms);
                    before.log(&inner.state, replayed);
                    Applied(Some(outcome))
                }
                EntryPayload::Membership(membership) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Applied(None)
                }
            });
        }
        // openraft replays (up to the committed index it read at start) in batches of their
        // own, so the last entry speaks for the batch.
        inner.publish(replayed);
        Ok(applied)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<Cursor<Vec<u8>>>, Storage> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), Storage> {
        let data = snapshot.into_inner();
        let state = decode_state(&data).map_err(|err| -> Storage {
            StorageIOError::read_snapshot(None, &Error::InvalidRequest(err)).into()
        })?;
        let mut inner = self.lock()?;
        inner.store(meta, &data).map_err(write_error)?;
        inner.state = state;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        inner.publish(false);
        info!(last_index = ?meta.last_log_id.map(|l| l.index), "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, Storage> {
        let inner = self.lock()?;
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, Membership};

    use super::*;
    use crate::storage::disk::SimDisk;
    use crate::types::Heartbeat;
    use crate::viewleader::raft::Proposal;
    use crate::viewleader::state::{Command, StateConfig};

    fn fresh() -> State {
        State::new(StateConfig {
            lease_ms: 1_000,
            lock_lease_ms: 30_000,
        })
    }

    fn open(disk: &SimDisk) -> Machine {
        let (view_tx, _) = watch::channel(View::default());
        Machine::open(Some(Arc::new(disk.clone())), fresh(), view_tx, None).unwrap()
    }

    fn lock_get(index: u64, lock: &str) -> LogEntry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal {
                command: Command::LockGet {
                    lock: lock.into(),
                    requester: "r".into(),
                },
                at_ms: index,
            }),
        }
    }

    #[tokio::test]
    async fn a_member_resumes_from_its_snapshot_with_the_state_and_membership_it_covers() {
        let disk = SimDisk::new();
        let mut machine = open(&disk);
        let membership = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Membership(Membership::new(
                vec![[1].into()],
                [(1, BasicNode::new("a:1"))]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )),
        };
        let applied = machine
            .apply(vec![membership, lock_get(2, "x"), lock_get(3, "y")])
            .await
            .unwrap();
        assert_eq!(applied.len(), 3, "one answer per entry");
        assert_eq!(applied[0], Applied(None));
        machine.build_snapshot().await.unwrap();
        let state = machine.read(|s| s.clone()).unwrap();
        disk.crash(&mut |_| 0);
        let mut resumed = open(&disk);
        assert_eq!(resumed.read(|s| s.clone()).unwrap(), state);
        let (last, membership) = resumed.applied_state().await.unwrap();
        assert_eq!(last.map(|l| l.index), Some(3));
        assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![1]);
        // The next grant continues the fencing counter.
        let next = resumed.apply(vec![lock_get(4, "z")]).await.unwrap();
        assert!(
            matches!(
                &next[0],
                Applied(Some(Ok(crate::viewleader::state::Outcome::Lock(
                    crate::types::LockReply::Granted { token: 3 }
                ))))
            ),
            "{next:?}"
        );
    }

    fn join(index: u64, server: &str) -> LogEntry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal {
                command: Command::Heartbeat(Heartbeat {
                    server_id: server.into(),
                    addr: format!("{server}:1"),
                    epoch_seen: 0,
                    rebalanced_epoch: 0,
                    settled_epoch: 0,
                    settled_servers: Vec::new(),
                    former_ids: Vec::new(),
                }),
                at_ms: index,
            }),
        }
    }

    /// A writer the test's subscriber logs into.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn entries_up_to_the_committed_index_at_open_are_logged_as_replayed() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let (view_tx, _) = watch::channel(View::default());
        let mut machine = Machine::open(None, fresh(), view_tx, Some(2)).unwrap();
        machine
            .apply(vec![join(1, "old-a"), join(2, "old-b")])
            .await
            .unwrap();
        machine.apply(vec![join(3, "new-c")]).await.unwrap();
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let line = |addr: &str| {
            text.lines()
                .find(|l| l.contains("server joined the view") && l.contains(addr))
                .unwrap_or_else(|| panic!("no join of {addr} in:\n{text}"))
                .to_string()
        };
        for old in ["old-a:1", "old-b:1"] {
            let line = line(old);
            assert!(
                line.contains("DEBUG") && line.contains("replayed=true"),
                "{line}"
            );
        }
        let new = line("new-c:1");
        assert!(new.contains("INFO") && !new.contains("replayed"), "{new}");
    }

    #[tokio::test]
    async fn a_damaged_snapshot_refuses_to_start() {
        let disk = SimDisk::new();
        let mut machine = open(&disk);
        machine.apply(vec![lock_get(1, "x")]).await.unwrap();
        machine.build_snapshot().await.unwrap();
        disk.flip_byte(SNAPSHOT_FILE, SNAPSHOT_MAGIC.len() + 10)
            .unwrap();
        let (view_tx, _) = watch::channel(View::default());
        let err = Machine::open(Some(Arc::new(disk.clone())), fresh(), view_tx, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("snapshot is damaged"), "{err}");
    }

    #[tokio::test]
    async fn an_installed_snapshot_replaces_the_state_and_is_kept() {
        let leader_disk = SimDisk::new();
        let mut leader = open(&leader_disk);
        leader
            .apply(vec![lock_get(1, "x"), lock_get(2, "y")])
            .await
            .unwrap();
        let snapshot = leader.build_snapshot().await.unwrap();
        let follower_disk = SimDisk::new();
        let mut follower = open(&follower_disk);
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        let expected = leader.read(|s| s.clone()).unwrap();
        assert_eq!(follower.read(|s| s.clone()).unwrap(), expected);
        assert_eq!(open(&follower_disk).read(|s| s.clone()).unwrap(), expected);
    }
}
