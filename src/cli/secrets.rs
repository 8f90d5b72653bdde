//! `client secrets DIR`: makes a cluster's secrets, a member's and the client's derived from it
//! (see `crate::net::secret` for what each allows), and says which process takes which.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::output::Output;
use crate::errinput;
use crate::error::{Error, Result};
use crate::net::secret::{fresh_bytes, ClusterSecret};
use crate::net::Env;

/// The member's file: view leaders, servers, and operators' tools that need a member's rights.
pub const MEMBER_FILE: &str = "member.secret";
/// The client's file: everything else that calls the cluster.
pub const CLIENT_FILE: &str = "client.secret";

/// Writes `DIR/member.secret` and `DIR/client.secret` (mode 0600), refusing to replace either.
pub fn make(dir: &Path, out: Output) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|err| errinput!("cannot create {}: {err}", dir.display()))?;
    let member_path = dir.join(MEMBER_FILE);
    let client_path = dir.join(CLIENT_FILE);
    for path in [&member_path, &client_path] {
        if path.exists() {
            return Err(errinput!(
                "{} exists already; remove it first (every process of the cluster must then \
                 get the new secret)",
                path.display()
            ));
        }
    }
    let member = ClusterSecret::member(fresh_bytes(&Env::real()));
    write_private(&member_path, &member.to_file_text())?;
    write_private(&client_path, &member.client_part().to_file_text())?;
    let (member_shown, client_shown) = (member_path.display(), client_path.display());
    out.ok(
        format!(
            "wrote {member_shown} and {client_shown}\n\
             view leaders and servers: --cluster-secret-file {member_shown}\n\
             clients:                  --cluster-secret-file {client_shown}\n\
             (or set RINGLEADER_CLUSTER_SECRET_FILE; keep both files private)"
        ),
        json!({"member": member_path, "client": client_path}),
    );
    Ok(())
}

/// Creates `path` readable by its owner only and writes `text` into it.
fn write_private(path: &PathBuf, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|err| errinput!("cannot create {}: {err}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| Error::Internal(format!("cannot write {}: {err}", path.display())))
}
