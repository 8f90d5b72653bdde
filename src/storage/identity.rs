//! Who a data dir belongs to: the cluster, and the member id (with the ids before it) of the
//! server that keeps its keys there. Read at start, so a restarted server comes back as the same
//! member while its lease holds, and a data dir from another cluster is refused before any of
//! its keys can be served; written whenever the id changes.
//!
//! The file is small JSON (a person may read it), replaced whole: written as `.tmp`, synced,
//! renamed over the old one, and the directory synced.

use serde::{Deserialize, Serialize};

use super::disk::Disk;
use crate::error::{Error, Result};
use crate::types::{Epoch, ServerId, ServerInfo};

/// The identity file in a data dir.
pub const IDENTITY_FILE: &str = "identity.json";
/// The layout of the file this code writes; a newer one is refused.
pub const IDENTITY_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format: u32,
    pub cluster: String,
    pub server_id: ServerId,
    /// The address the server advertised under `server_id`: a server restarted at another one
    /// is another member.
    #[serde(default)]
    pub addr: String,
    /// The ids the server held before, newest last.
    pub former_ids: Vec<ServerId>,
    /// The newest settled view the server heard of (epoch, members): what it tells a restarted
    /// view leader.
    #[serde(default)]
    pub settled_epoch: Epoch,
    #[serde(default)]
    pub settled_servers: Vec<ServerInfo>,
}

/// The identity stored in `disk`, if any.
pub fn load(disk: &dyn Disk) -> Result<Option<Identity>> {
    let names = disk
        .list()
        .map_err(|err| Error::Internal(format!("listing the data dir: {err}")))?;
    if !names.iter().any(|n| n == IDENTITY_FILE) {
        return Ok(None);
    }
    let bytes = disk.read(IDENTITY_FILE).map_err(|err| {
        Error::Internal(format!("reading {}: {err}", disk.describe(IDENTITY_FILE)))
    })?;
    let identity: Identity = serde_json::from_slice(&bytes).map_err(|err| {
        Error::Internal(format!(
            "{} is damaged ({err}); move the data dir away to start afresh",
            disk.describe(IDENTITY_FILE)
        ))
    })?;
    if identity.format > IDENTITY_FORMAT {
        return Err(Error::Internal(format!(
            "{} has format {}, newer than this server's {IDENTITY_FORMAT}: run a newer server",
            disk.describe(IDENTITY_FILE),
            identity.format
        )));
    }
    Ok(Some(identity))
}

/// Refuses a data dir that belongs to another cluster.
pub fn check_cluster(disk: &dyn Disk, identity: &Identity, cluster: &str) -> Result<()> {
    if identity.cluster == cluster {
        return Ok(());
    }
    Err(Error::InvalidRequest(format!(
        "the data dir {} belongs to cluster {:?}, and this server was started in cluster {:?}: \
         start it with --cluster {} or give it another --data-dir",
        disk.describe(""),
        identity.cluster,
        cluster,
        identity.cluster
    )))
}

/// Replaces the identity in `disk`, durably.
pub fn store(disk: &dyn Disk, identity: &Identity) -> Result<()> {
    let tmp = format!("{IDENTITY_FILE}.tmp");
    let fail =
        |err: std::io::Error| Error::Internal(format!("writing {}: {err}", disk.describe(&tmp)));
    let bytes = serde_json::to_vec_pretty(identity)
        .map_err(|err| Error::Internal(format!("encoding the identity: {err}")))?;
    let file = disk.create(&tmp).map_err(fail)?;
    file.append(&bytes).map_err(fail)?;
    file.append(b"\n").map_err(fail)?;
    file.sync().map_err(fail)?;
    disk.rename(&tmp, IDENTITY_FILE).map_err(fail)?;
    disk.sync_dir().map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::SimDisk;

    #[test]
    fn an_identity_survives_a_crash_once_stored() {
        let disk = SimDisk::new();
        assert_eq!(load(&disk).unwrap(), None);
        let identity = Identity {
            format: IDENTITY_FORMAT,
            cluster: "c".into(),
            server_id: "a".into(),
            addr: "h:1".into(),
            former_ids: vec!["z".into()],
            settled_epoch: 3,
            settled_servers: vec![ServerInfo {
                id: "a".into(),
                addr: "h:1".into(),
            }],
        };
        store(&disk, &identity).unwrap();
        disk.crash(&mut |_| 0);
        assert_eq!(load(&disk).unwrap(), Some(identity.clone()));
        assert!(check_cluster(&disk, &identity, "c").is_ok());
        let err = check_cluster(&disk, &identity, "other").unwrap_err();
        assert!(
            err.to_string().contains("belongs to cluster \"c\""),
            "{err}"
        );
    }
}
