//! What the view leader keeps on disk, so that a restart breaks none of its promises though it
//! forgets its memory: its **restart generation**, raised and synced before it serves anything
//! (fencing tokens carry it in their high bits, [`super::state::TOKEN_COUNTER_BITS`], so a
//! restarted view leader never grants a token it granted before), and an **epoch ceiling**, a
//! number no epoch it used is above (a restarted view leader starts its epochs there, so it never
//! names a second view with an epoch it already used, whatever its servers remember).
//!
//! The ceiling is reserved [`EPOCH_RESERVE`] epochs at a time: it is written at start and again
//! whenever the epoch passes it, before the view that passed it is published or answered, so a
//! view change costs a disk write only once in that many.
//!
//! Each number is written whole to a temporary file, synced, renamed over the old one, and the
//! directory synced: a crash at any point leaves either the old number or the new one. If a
//! number cannot be made durable, the view leader does not start (or stops).
//!
//! # Deliberately left out
//! * Two view leaders sharing one directory at once: nothing locks it (the replicated view
//!   leader, with a log of its own, replaces these files).

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The generation's file, inside the data directory.
pub const GENERATION_FILE: &str = "generation";
/// The epoch ceiling's file, inside the data directory.
pub const EPOCH_FILE: &str = "epoch";
/// Epochs reserved by one write of the ceiling.
pub const EPOCH_RESERVE: u64 = 1_000;
/// Longest number file read, in bytes (a decimal u64 and a newline).
pub const NUMBER_FILE_BYTES_MAX: u64 = 32;

/// Reads the last generation from `dir` (0 if there is none yet), stores the next one durably,
/// and returns it. `max` is the highest generation the tokens have room for.
pub fn next_generation(dir: &Path, max: u64) -> Result<u64> {
    fs::create_dir_all(dir).map_err(|err| io_error("create", dir, err))?;
    let last = read_number(dir, GENERATION_FILE)?.unwrap_or(0);
    let next = last
        .checked_add(1)
        .filter(|next| *next <= max)
        .ok_or_else(|| {
            Error::Internal(format!(
                "{} is at generation {last}, the last one fencing tokens have room for",
                dir.join(GENERATION_FILE).display()
            ))
        })?;
    write_number(dir, GENERATION_FILE, next)?;
    Ok(next)
}

/// The epoch ceiling stored in `dir`: no epoch used before is above it (0 if none is stored).
pub fn epoch_floor(dir: &Path) -> Result<u64> {
    Ok(read_number(dir, EPOCH_FILE)?.unwrap_or(0))
}

/// Stores `ceiling` durably as the new epoch ceiling.
pub fn store_epoch_ceiling(dir: &Path, ceiling: u64) -> Result<()> {
    fs::create_dir_all(dir).map_err(|err| io_error("create", dir, err))?;
    write_number(dir, EPOCH_FILE, ceiling)
}

fn read_number(dir: &Path, name: &str) -> Result<Option<u64>> {
    let path = dir.join(name);
    match fs::metadata(&path) {
        Ok(meta) if meta.len() > NUMBER_FILE_BYTES_MAX => Err(Error::Internal(format!(
            "{} is {} bytes, not a number",
            path.display(),
            meta.len()
        ))),
        Ok(_) => {
            let text = fs::read_to_string(&path).map_err(|err| io_error("read", &path, err))?;
            text.trim().parse::<u64>().map(Some).map_err(|err| {
                Error::Internal(format!(
                    "{} holds {:?}, not a number: {err}",
                    path.display(),
                    text.trim()
                ))
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error("inspect", &path, err)),
    }
}

fn write_number(dir: &Path, name: &str, value: u64) -> Result<()> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    {
        let mut file =
            fs::File::create(&temporary).map_err(|err| io_error("create", &temporary, err))?;
        writeln!(file, "{value}").map_err(|err| io_error("write", &temporary, err))?;
        file.sync_all()
            .map_err(|err| io_error("sync", &temporary, err))?;
    }
    fs::rename(&temporary, &path).map_err(|err| io_error("rename", &temporary, err))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| io_error("sync", dir, err))
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> Error {
    Error::Internal(format!("cannot {what} {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_start_gets_a_generation_above_every_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = next_generation(dir.path(), u64::MAX).unwrap();
        let second = next_generation(dir.path(), u64::MAX).unwrap();
        assert_eq!((first, second), (1, 2));
    }

    #[test]
    fn a_corrupt_or_exhausted_generation_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(GENERATION_FILE), "not a number\n").unwrap();
        let err = next_generation(dir.path(), u64::MAX).unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
        fs::write(dir.path().join(GENERATION_FILE), "7\n").unwrap();
        assert!(next_generation(dir.path(), 7).is_err());
        assert_eq!(next_generation(dir.path(), 8).unwrap(), 8);
    }

    #[test]
    fn the_epoch_ceiling_survives_and_starts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(epoch_floor(dir.path()).unwrap(), 0);
        store_epoch_ceiling(dir.path(), 1_000).unwrap();
        assert_eq!(epoch_floor(dir.path()).unwrap(), 1_000);
    }
}
