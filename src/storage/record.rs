//! One framed record on disk, shared by every log ringleader writes (the storage engine's
//! segments and snapshots, the view leader's Raft log): its payload's length (4 bytes, little
//! endian), a CRC-32 of the length and the payload (4 bytes), then the payload (postcard). The
//! reader tells a record cut short from one that fails its check, so that each log can apply its
//! own rule for a torn tail.

use serde::{Deserialize, Serialize};

use super::RECORD_BYTES_MAX;
use crate::error::{Error, Result};

/// Length and CRC before each record's payload.
pub const RECORD_HEADER_BYTES: usize = 8;

/// Appends `entry` to `out` as one framed record. `out` is unchanged if it fails.
pub fn frame<T: Serialize + ?Sized>(entry: &T, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    let mut taken = match postcard::to_extend(entry, std::mem::take(out)) {
        Ok(taken) => taken,
        Err(err) => {
            return Err(Error::Internal(format!("encoding a log record: {err}")));
        }
    };
    let payload_len = taken.len() - start - RECORD_HEADER_BYTES;
    if payload_len > RECORD_BYTES_MAX {
        taken.truncate(start);
        *out = taken;
        return Err(crate::errinput!(
            "a log record of {payload_len} bytes is over the {RECORD_BYTES_MAX} byte limit"
        ));
    }
    let len_bytes = (payload_len as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(&taken[start + RECORD_HEADER_BYTES..]);
    taken[start..start + 4].copy_from_slice(&len_bytes);
    taken[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
    *out = taken;
    Ok(())
}

/// Why a record could not be read.
#[derive(Debug)]
pub enum Bad {
    /// The bytes end inside the record.
    Short,
    Crc,
    TooLong(usize),
    Undecodable(String),
}

/// The record at `offset` of `bytes`, and the offset after it.
pub fn read_record<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    offset: usize,
) -> std::result::Result<(T, usize), Bad> {
    let header = bytes
        .get(offset..offset + RECORD_HEADER_BYTES)
        .ok_or(Bad::Short)?;
    let len_bytes: [u8; 4] = header[..4].try_into().map_err(|_| Bad::Short)?;
    let crc_bytes: [u8; 4] = header[4..].try_into().map_err(|_| Bad::Short)?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > RECORD_BYTES_MAX {
        return Err(Bad::TooLong(len));
    }
    let start = offset + RECORD_HEADER_BYTES;
    let payload = bytes.get(start..start + len).ok_or(Bad::Short)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(payload);
    if crc.finalize() != u32::from_le_bytes(crc_bytes) {
        return Err(Bad::Crc);
    }
    let entry = postcard::from_bytes(payload).map_err(|err| Bad::Undecodable(err.to_string()))?;
    Ok((entry, start + len))
}

/// Whether a record that passes its CRC starts anywhere after `offset`: if one does, a bad
/// record at `offset` is corruption, not a torn tail.
pub fn valid_record_after(bytes: &[u8], offset: usize) -> bool {
    (offset + 1..bytes.len().saturating_sub(RECORD_HEADER_BYTES)).any(|at| checks(bytes, at))
}

/// Whether the bytes at `offset` frame a record whose CRC holds, whatever its payload's type.
fn checks(bytes: &[u8], offset: usize) -> bool {
    matches!(
        read_record::<serde::de::IgnoredAny>(bytes, offset),
        Ok(_) | Err(Bad::Undecodable(_))
    )
}

pub fn describe_bad(bad: &Bad) -> String {
    match bad {
        Bad::Short => "the record is cut short".into(),
        Bad::Crc => "the record fails its CRC check".into(),
        Bad::TooLong(len) => format!("the record claims {len} bytes"),
        Bad::Undecodable(err) => format!("the record passes its CRC but cannot be decoded ({err})"),
    }
}
