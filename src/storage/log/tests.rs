//! Recovery, crash-model and failure tests of the log engine.

use super::*;
use crate::storage::disk::SimDisk;

#[test]
fn a_reopened_log_holds_what_was_written() {
    let disk = SimDisk::new();
    let mut log = Log::open(Arc::new(disk.clone()), LogOptions::default()).unwrap();
    log.put_if_newer(
        "k".into(),
        Versioned {
            value: crate::types::Value::Text("v".into()),
            version: 3,
        },
    )
    .unwrap();
    drop(log);
    let log = Log::open(Arc::new(disk), LogOptions::default()).unwrap();
    assert_eq!(log.version("k"), 3);
}
