//! Fuzzing the Raft log's recovery (issue 16): a `raft.log` of random records (votes, entries,
//! truncations, purges, commits, with indexes and terms at the edges), damaged blindly (bytes
//! flipped, inserted, removed, the file cut) or behind the CRC (one record's payload mutated and
//! its CRC recomputed). [`LogStore::open`] must open it or refuse it, never panic; and a log
//! that opened once opens again with the same vote, commit, purge and entries.
//!
//! Left out: whether openraft accepts what opened (a log whose records contradict each other
//! is openraft's to refuse when it reads it), and crashes during recovery (the module's own
//! tests cover the torn tail).

use std::sync::Arc;

use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use proptest::prelude::*;

use super::*;
use crate::storage::disk::SimDisk;
use crate::storage::fuzz_support::{
    byte_damage, config, damaged_file, edge_number, write_synced, Mutation,
};
use crate::viewleader::raft::Proposal;
use crate::viewleader::state::Command;

fn log_id() -> BoxedStrategy<LogId<MemberId>> {
    (edge_number(), edge_number(), edge_number())
        .prop_map(|(term, node, index)| LogId::new(CommittedLeaderId::new(term, node), index))
        .boxed()
}

fn record() -> BoxedStrategy<LogRecord> {
    prop_oneof![
        1 => (edge_number(), edge_number()).prop_map(|(term, node)| LogRecord::Vote(Vote::new(term, node))),
        4 => (log_id(), edge_number()).prop_map(|(log_id, at_ms)| LogRecord::Entry(LogEntry {
            log_id,
            payload: EntryPayload::Normal(Proposal {
                command: Command::Refresh,
                at_ms,
            }),
        })),
        1 => log_id().prop_map(|log_id| LogRecord::Entry(LogEntry {
            log_id,
            payload: EntryPayload::Blank,
        })),
        1 => edge_number().prop_map(|since| LogRecord::Truncate { since }),
        1 => log_id().prop_map(LogRecord::Purge),
        1 => prop::option::of(log_id()).prop_map(LogRecord::Committed),
    ]
    .boxed()
}

/// The log file: the header, the records (the one at `behind_crc.0`, modulo their number, with
/// its payload mutated and its CRC recomputed), then `blind` over the whole.
fn log_file(
    records: &[LogRecord],
    behind_crc: &(usize, Vec<Mutation>),
    blind: &[Mutation],
) -> Vec<u8> {
    damaged_file(LOG_MAGIC, records, behind_crc, blind)
}

fn lay_out(bytes: &[u8]) -> SimDisk {
    let disk = SimDisk::new();
    write_synced(&disk, LOG_FILE, bytes);
    disk
}

/// What a reopened log must give back, as text (openraft's entries compare by their `Debug`).
fn contents(store: &LogStore) -> String {
    let inner = store.inner.lock().expect("the log's lock");
    format!(
        "vote {:?} committed {:?} purged {:?} entries {:?}",
        inner.vote, inner.committed, inner.purged, inner.entries
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_damaged_raft_log_opens_or_is_refused_and_what_opens_opens_again_the_same(
        records in prop::collection::vec(record(), 1..10),
        behind_crc in (any::<usize>(), byte_damage()),
        blind in byte_damage(),
    ) {
        let disk = lay_out(&log_file(&records, &behind_crc, &blind));
        if let Ok(store) = LogStore::open(Arc::new(disk.clone())) {
            let _ = store.indices();
            let first = contents(&store);
            drop(store);
            let again = LogStore::open(Arc::new(disk));
            prop_assert!(again.is_ok(), "opened once, then refused: {:?}", again.err());
            prop_assert_eq!(contents(&again.expect("checked above")), first);
        }
    }
}

// The log's records are private and derive neither trait; proptest needs both to show and
// shrink a failing case.

impl std::fmt::Debug for LogRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogRecord::Vote(vote) => write!(f, "Vote({vote:?})"),
            LogRecord::Entry(entry) => write!(f, "Entry({entry:?})"),
            LogRecord::Truncate { since } => write!(f, "Truncate {{ since: {since} }}"),
            LogRecord::Purge(log_id) => write!(f, "Purge({log_id:?})"),
            LogRecord::Committed(log_id) => write!(f, "Committed({log_id:?})"),
        }
    }
}

impl Clone for LogRecord {
    fn clone(&self) -> Self {
        match self {
            LogRecord::Vote(vote) => LogRecord::Vote(*vote),
            LogRecord::Entry(entry) => LogRecord::Entry(entry.clone()),
            LogRecord::Truncate { since } => LogRecord::Truncate { since: *since },
            LogRecord::Purge(log_id) => LogRecord::Purge(*log_id),
            LogRecord::Committed(log_id) => LogRecord::Committed(*log_id),
        }
    }
}

/// Found by the fuzzing above: replaying a purge split the entries at `index + 1`, which
/// overflowed (a panic in a debug build) for a purge through the largest index.
#[test]
fn a_purge_through_the_largest_index_empties_the_log_instead_of_panicking() {
    let entry = LogRecord::Entry(LogEntry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 3),
        payload: EntryPayload::Blank,
    });
    let purge = LogRecord::Purge(LogId::new(CommittedLeaderId::new(1, 1), u64::MAX));
    let disk = lay_out(&log_file(&[entry, purge], &(0, Vec::new()), &[]));
    let store = LogStore::open(Arc::new(disk)).expect("a purge is no damage");
    let inner = store.inner.lock().expect("the log's lock");
    assert!(inner.entries.is_empty(), "{:?}", inner.entries);
    assert_eq!(inner.purged.map(|p| p.index), Some(u64::MAX));
}
