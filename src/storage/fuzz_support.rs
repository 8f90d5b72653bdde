//! What the two fuzzers of files on disk share (`storage/log/fuzz_tests.rs` for the data dir of
//! a storage server, `viewleader/raft/log_store/fuzz_tests.rs` for the view leader's Raft log):
//! the case count, numbers at the edges, blind damage to bytes, and a file of records of which
//! one is damaged behind its CRC, written to a simulated disk.
//!
//! Left out: what the records are (each fuzzer has its own private types), and the decoders'
//! fuzzing in tests/fuzz.rs, which cannot see test-only crate code and keeps its own copy of the
//! mutations.

use proptest::prelude::*;
use serde::Serialize;

use super::disk::{Disk, SimDisk};

/// Cases per property unless `PROPTEST_CASES` says otherwise: every kind of record and of
/// damage many times over, in a fraction of a second.
const CASES_DEFAULT: u32 = 128;

/// [`CASES_DEFAULT`] cases unless `PROPTEST_CASES` says otherwise.
pub(crate) fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(CASES_DEFAULT);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Versions, terms and indexes: the first few, any, and the largest.
pub(crate) fn edge_number() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 0u64..8,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
    ]
    .boxed()
}

/// One change to a file's bytes, at a position taken modulo its length.
#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    Remove {
        at: usize,
    },
    Truncate {
        at: usize,
    },
    /// A run of 0xff: a length or a count read as its largest.
    Saturate {
        at: usize,
        len: usize,
    },
}

/// Up to two blind changes: a byte flipped, inserted or removed, the file cut.
pub(crate) fn byte_damage() -> BoxedStrategy<Vec<Mutation>> {
    // `prop_oneof!` rather than a `Union` built at run time: the seeds saved in
    // proptest-regressions/ replay the same cases only if the randomness is drawn the same way.
    let one = prop_oneof![flip(), insert(), remove(), truncate()];
    prop::collection::vec(one, 0..3).boxed()
}

/// [`byte_damage`], and runs of bytes overwritten with 0xff.
pub(crate) fn byte_damage_with_saturation() -> BoxedStrategy<Vec<Mutation>> {
    let one = prop_oneof![flip(), insert(), remove(), truncate(), saturate()];
    prop::collection::vec(one, 0..3).boxed()
}

fn flip() -> impl Strategy<Value = Mutation> {
    (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask })
}

fn insert() -> impl Strategy<Value = Mutation> {
    (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte })
}

fn remove() -> impl Strategy<Value = Mutation> {
    any::<usize>().prop_map(|at| Mutation::Remove { at })
}

fn truncate() -> impl Strategy<Value = Mutation> {
    any::<usize>().prop_map(|at| Mutation::Truncate { at })
}

fn saturate() -> impl Strategy<Value = Mutation> {
    (any::<usize>(), 1usize..12).prop_map(|(at, len)| Mutation::Saturate { at, len })
}

/// Applies `mutations` to `bytes` in order (an empty file only takes insertions).
pub(crate) fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for mutation in mutations {
        let len = bytes.len();
        match *mutation {
            Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
            _ if len == 0 => {}
            Mutation::Flip { at, mask } => bytes[at % len] ^= mask,
            Mutation::Remove { at } => {
                bytes.remove(at % len);
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
            Mutation::Saturate { at, len: run } => {
                let start = at % len;
                bytes[start..(start + run).min(len)].fill(0xff);
            }
        }
    }
}

/// A record whose CRC holds over whatever `payload` is.
fn framed_raw(payload: &[u8], out: &mut Vec<u8>) {
    let len_bytes = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(payload);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// A file: `magic`, then `records` framed; the record at `behind_crc.0` (modulo their number)
/// has its payload mutated by `behind_crc.1` and its CRC recomputed; then the whole file is
/// mutated by `blind`.
pub(crate) fn damaged_file<T: Serialize>(
    magic: &[u8],
    records: &[T],
    behind_crc: &(usize, Vec<Mutation>),
    blind: &[Mutation],
) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    for (i, record) in records.iter().enumerate() {
        let mut payload = postcard::to_stdvec(record).expect("a generated record encodes");
        if i == behind_crc.0 % records.len() {
            mutate(&mut payload, &behind_crc.1);
        }
        framed_raw(&payload, &mut bytes);
    }
    mutate(&mut bytes, blind);
    bytes
}

/// Writes `bytes` as the file `name` of `disk`, synced with its directory.
pub(crate) fn write_synced(disk: &SimDisk, name: &str, bytes: &[u8]) {
    let file = disk.create(name).expect("the simulated disk creates");
    file.append(bytes).expect("the simulated disk appends");
    file.sync().expect("the simulated disk syncs");
    disk.sync_dir()
        .expect("the simulated disk syncs its directory");
}
