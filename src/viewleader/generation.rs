//! The view leader's restart generation: a number kept in a file of its data directory, raised
//! and synced to disk before the view leader serves anything. Fencing tokens carry it in their
//! high bits ([`super::state::TOKEN_COUNTER_BITS`]), so a restarted view leader never grants a
//! token it granted before, even though it remembers no lock.
//!
//! The file is written whole to a temporary name, synced, renamed over the old one, and the
//! directory synced: a crash at any point leaves either the old number or the new one. A
//! generation is never reused: if the new number cannot be made durable, the view leader does
//! not start.
//!
//! # Deliberately left out
//! * Two view leaders sharing one directory at once: nothing locks it (the replicated view
//!   leader, with a log of its own, replaces this file).

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The generation's file, inside the data directory.
pub const GENERATION_FILE: &str = "generation";
/// Longest generation file read, in bytes (a decimal u64 and a newline).
pub const GENERATION_FILE_BYTES_MAX: u64 = 32;

/// Reads the last generation from `dir` (0 if there is none yet), stores the next one durably,
/// and returns it. `max` is the highest generation the tokens have room for.
pub fn next_generation(dir: &Path, max: u64) -> Result<u64> {
    fs::create_dir_all(dir).map_err(|err| io_error("create", dir, err))?;
    let path = dir.join(GENERATION_FILE);
    let last = match fs::metadata(&path) {
        Ok(meta) if meta.len() > GENERATION_FILE_BYTES_MAX => {
            return Err(Error::Internal(format!(
                "{} is {} bytes, not a generation number",
                path.display(),
                meta.len()
            )))
        }
        Ok(_) => {
            let text = fs::read_to_string(&path).map_err(|err| io_error("read", &path, err))?;
            text.trim().parse::<u64>().map_err(|err| {
                Error::Internal(format!(
                    "{} holds {:?}, not a generation number: {err}",
                    path.display(),
                    text.trim()
                ))
            })?
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
        Err(err) => return Err(io_error("inspect", &path, err)),
    };
    let next = last
        .checked_add(1)
        .filter(|next| *next <= max)
        .ok_or_else(|| {
            Error::Internal(format!(
                "{} is at generation {last}, the last one fencing tokens have room for",
                path.display()
            ))
        })?;
    let temporary = dir.join(format!("{GENERATION_FILE}.tmp"));
    {
        let mut file =
            fs::File::create(&temporary).map_err(|err| io_error("create", &temporary, err))?;
        writeln!(file, "{next}").map_err(|err| io_error("write", &temporary, err))?;
        file.sync_all()
            .map_err(|err| io_error("sync", &temporary, err))?;
    }
    fs::rename(&temporary, &path).map_err(|err| io_error("rename", &temporary, err))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| io_error("sync", dir, err))?;
    Ok(next)
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
        assert!(err.to_string().contains("not a generation number"), "{err}");
        fs::write(dir.path().join(GENERATION_FILE), "7\n").unwrap();
        assert!(next_generation(dir.path(), 7).is_err());
        assert_eq!(next_generation(dir.path(), 8).unwrap(), 8);
    }
}
