//! Fuzzing the log engine's recovery (issue 16): data dirs of random records, then damaged.
//!
//! A data dir is bytes from a disk, and a disk can hand back anything: a segment and a snapshot
//! are built from random [`Entry`] values (keys empty or huge, versions at the edges, snapshot
//! closings in the middle of a segment) under random sequence numbers, then damaged either
//! blindly (bytes flipped, inserted, removed, the file cut: what a bad sector does) or behind
//! the CRC (one record's payload mutated and its CRC recomputed: what a bug that wrote garbage
//! would leave). [`Log::open`] must open it or refuse it with an error, never panic; and a log
//! that opened once must open again, with the same keys at the same versions (recovery is
//! idempotent, rule 5 of the module doc).
//!
//! Left out: real files (the simulated disk reads back the same bytes) and crashes during
//! recovery (`tests.rs` covers them with its power-failure model).

use std::borrow::Cow;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::storage::disk::SimDisk;
use crate::storage::fuzz_support::{
    byte_damage_with_saturation, config, damaged_file, edge_number, write_synced, Mutation,
};
use crate::storage::record::RECORD_HEADER_BYTES;
use crate::types::{Op, ServerInfo, Value};

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-c]{0,3}",
        1 => any::<String>(),
        1 => (0usize..5000).prop_map(|len| "k".repeat(len)),
    ]
    .boxed()
}

fn value() -> BoxedStrategy<Value> {
    prop_oneof![
        text().prop_map(Value::Text),
        prop::collection::vec(text(), 0..4).prop_map(Value::List),
    ]
    .boxed()
}

fn versioned() -> BoxedStrategy<Versioned> {
    (value(), edge_number())
        .prop_map(|(value, version)| Versioned { value, version })
        .boxed()
}

fn prepared() -> BoxedStrategy<PreparedTx> {
    (
        any::<u128>(),
        text(),
        value(),
        edge_number(),
        edge_number(),
        text(),
    )
        .prop_map(|(tx, key, value, version, epoch, voted_as)| PreparedTx {
            tx,
            key,
            op: Op::Put(value.clone()),
            value,
            version,
            epoch,
            participants: vec![ServerInfo {
                id: voted_as.clone(),
                addr: "a:1".into(),
            }],
            voted_as,
            base_version: version.saturating_sub(1),
        })
        .boxed()
}

fn entry() -> BoxedStrategy<Entry<'static>> {
    prop_oneof![
        4 => (text(), versioned()).prop_map(|(key, versioned)| Entry::Put {
            key: Cow::Owned(key),
            versioned: Cow::Owned(versioned),
        }),
        2 => (text(), text(), edge_number(), edge_number()).prop_map(|(key, item, base, version)| {
            Entry::Append {
                key: Cow::Owned(key),
                item: Cow::Owned(item),
                base,
                version,
            }
        }),
        1 => (text(), edge_number()).prop_map(|(key, version)| Entry::Remove {
            key: Cow::Owned(key),
            version,
        }),
        1 => prepared().prop_map(|prepared| Entry::Prepared(Cow::Owned(prepared))),
        1 => (any::<u128>(), edge_number()).prop_map(|(tx, version)| Entry::Decided {
            tx,
            state: TxState::Committed { version },
        }),
        1 => (text(), edge_number()).prop_map(|(key, version)| Entry::Floor {
            key: Cow::Owned(key),
            version,
        }),
        1 => (any::<u128>(), edge_number())
            .prop_map(|(request_id, version)| Entry::Applied { request_id, version }),
        1 => prop::collection::vec((text(), versioned()), 0..4)
            .prop_map(|batch| Entry::Batch(Cow::Owned(batch))),
        1 => edge_number().prop_map(|records| Entry::SnapshotEnd { records }),
    ]
    .boxed()
}

/// Sequence numbers of segments and snapshots: the first ones, and the largest there are.
fn seq() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 1u64..4,
        1 => Just(0),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
    ]
    .boxed()
}

/// Every key with its version, as a reopened log must give them back.
fn contents(log: &Log) -> Vec<(String, Option<Versioned>)> {
    log.scan(None)
        .map(|key| (key.to_string(), log.get(key)))
        .collect()
}

/// One file of a data dir: its sequence number, its records, the record damaged behind its
/// CRC and how, and the blind damage to the whole file.
type Part = (
    u64,
    Vec<Entry<'static>>,
    (usize, Vec<Mutation>),
    Vec<Mutation>,
);

/// A data dir to damage: an optional snapshot and a segment after it.
#[derive(Debug)]
struct DataDir {
    snapshot: Option<Part>,
    segment: Part,
}

fn part() -> BoxedStrategy<Part> {
    (
        seq(),
        prop::collection::vec(entry(), 1..8),
        (any::<usize>(), byte_damage_with_saturation()),
        byte_damage_with_saturation(),
    )
        .boxed()
}

fn data_dir() -> BoxedStrategy<DataDir> {
    (prop::option::of(part()), part())
        .prop_map(|(snapshot, segment)| DataDir { snapshot, segment })
        .boxed()
}

/// Lays `dir` out on a fresh simulated disk. A snapshot gets its closing record (counting the
/// records before it) unless the mutations removed it.
fn lay_out(dir: &DataDir) -> SimDisk {
    let disk = SimDisk::new();
    if let Some((seq, entries, behind_crc, blind)) = &dir.snapshot {
        let mut entries: Vec<Entry<'_>> = entries
            .iter()
            .filter(|entry| !matches!(entry, Entry::SnapshotEnd { .. }))
            .cloned()
            .collect();
        entries.push(Entry::SnapshotEnd {
            records: entries.len() as u64,
        });
        let bytes = damaged_file(SNAPSHOT_MAGIC, &entries, behind_crc, blind);
        write_synced(&disk, &snapshot_name(*seq), &bytes);
    }
    let (seq, entries, behind_crc, blind) = &dir.segment;
    write_synced(
        &disk,
        &segment_name(*seq),
        &damaged_file(SEGMENT_MAGIC, entries, behind_crc, blind),
    );
    disk
}

impl Clone for Entry<'static> {
    fn clone(&self) -> Self {
        postcard::from_bytes::<Entry<'_>>(&postcard::to_stdvec(self).expect("encodes"))
            .map(owned)
            .expect("an entry decodes from its own encoding")
    }
}

/// An entry that borrows nothing.
fn owned(entry: Entry<'_>) -> Entry<'static> {
    match entry {
        Entry::Put { key, versioned } => Entry::Put {
            key: Cow::Owned(key.into_owned()),
            versioned: Cow::Owned(versioned.into_owned()),
        },
        Entry::Append {
            key,
            item,
            base,
            version,
        } => Entry::Append {
            key: Cow::Owned(key.into_owned()),
            item: Cow::Owned(item.into_owned()),
            base,
            version,
        },
        Entry::Remove { key, version } => Entry::Remove {
            key: Cow::Owned(key.into_owned()),
            version,
        },
        Entry::Prepared(prepared) => Entry::Prepared(Cow::Owned(prepared.into_owned())),
        Entry::Decided { tx, state } => Entry::Decided { tx, state },
        Entry::Floor { key, version } => Entry::Floor {
            key: Cow::Owned(key.into_owned()),
            version,
        },
        Entry::Applied {
            request_id,
            version,
        } => Entry::Applied {
            request_id,
            version,
        },
        Entry::Batch(batch) => Entry::Batch(Cow::Owned(batch.into_owned())),
        Entry::SnapshotEnd { records } => Entry::SnapshotEnd { records },
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_damaged_data_dir_opens_or_is_refused_and_what_opens_opens_again_the_same(
        dir in data_dir(),
    ) {
        let disk = lay_out(&dir);
        let first = match Log::open(Arc::new(disk.clone()), LogOptions::default()) {
            Ok(mut log) => {
                let contents = contents(&log);
                // The engine goes on working on what it recovered.
                let _ = log.put_if_newer("fuzz".into(), Versioned {
                    value: Value::Text("after".into()),
                    version: 1,
                });
                let _ = log.record(&Record::Floor { key: "fuzz", version: 1 });
                let _ = log.recovered();
                Some((contents, log.get("fuzz")))
            }
            Err(err) => {
                let message = err.to_string();
                prop_assert!(!message.is_empty());
                None
            }
        };
        // Every open starts a new segment numbered after the last: a log numbered next to the
        // largest number may open once and then be refused for want of a next number.
        let near_the_end = dir.segment.0 >= u64::MAX - 1
            || dir.snapshot.as_ref().is_some_and(|snapshot| snapshot.0 >= u64::MAX - 1);
        if let (Some((contents_before, fuzz)), false) = (first, near_the_end) {
            let again = Log::open(Arc::new(disk), LogOptions::default());
            prop_assert!(again.is_ok(), "opened once, then refused: {:?}", again.err());
            let again = again.expect("checked above");
            let mut expected = contents_before;
            if let Some(fuzz) = fuzz {
                expected.retain(|(key, _)| key != "fuzz");
                expected.push(("fuzz".into(), Some(fuzz)));
                expected.sort_by(|a, b| a.0.cmp(&b.0));
            }
            prop_assert_eq!(contents(&again), expected);
        }
    }

    #[test]
    fn a_record_header_claiming_any_length_reads_as_an_error(
        len in any::<u32>(),
        crc in any::<u32>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
        offset in 0usize..80,
    ) {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&tail);
        let read = crate::storage::record::read_record::<Entry<'_>>(&bytes, offset);
        if offset + RECORD_HEADER_BYTES > bytes.len() {
            prop_assert!(read.is_err());
        }
        let _ = crate::storage::record::valid_record_after(&bytes, offset);
    }
}

/// Found by the fuzzing above: the segment after the last one was numbered `seq + 1`, which
/// overflowed (a panic in a debug build) for a segment named with the largest number.
#[test]
fn a_segment_numbered_with_the_largest_sequence_is_refused_not_a_panic() {
    let disk = SimDisk::new();
    let put = Entry::Put {
        key: Cow::Borrowed("k"),
        versioned: Cow::Owned(Versioned {
            value: Value::Text("v".into()),
            version: 1,
        }),
    };
    // A snapshot at that number, so that the segment is the one the log resumes from.
    let end = Entry::SnapshotEnd { records: 0 };
    write_synced(
        &disk,
        &snapshot_name(u64::MAX),
        &damaged_file(SNAPSHOT_MAGIC, &[end], &(0, Vec::new()), &[]),
    );
    write_synced(
        &disk,
        &segment_name(u64::MAX),
        &damaged_file(SEGMENT_MAGIC, &[put], &(0, Vec::new()), &[]),
    );
    let err = Log::open(Arc::new(disk), LogOptions::default())
        .expect_err("no segment can follow the largest number");
    let message = err.to_string();
    assert!(
        message.contains(&segment_name(u64::MAX)) && message.contains("largest"),
        "{message}"
    );
}
