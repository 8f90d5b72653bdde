//! The memory measurement: bulk-load keys onto their replicas in a running ringleader cluster,
//! then read each server process's peak resident set (VmHWM in /proc) and the raw bytes of the
//! keys and values it holds, one JSON line per server.

use std::collections::HashMap;

use clap::Args;
use ringleader::client::{Client, ClientOptions};
use ringleader::error::{Error, Result};
use ringleader::ring::Ring;
use ringleader::tools::bench::key_name;
use ringleader::tools::bench::ringleader::bulk_load;
use ringleader::types::Value;
use serde_json::json;

/// A bulk transfer of up to a batch of keys may take this long.
pub const LOAD_TIMEOUT_MS: u64 = 60_000;

#[derive(Args, Debug)]
pub struct MemoryArgs {
    /// ringleader's view leader, host:port.
    #[arg(long)]
    pub viewleader: String,
    /// Keys to load.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// A server process: ADDR=PID (its RPC address and its process id), once per server.
    #[arg(long = "server", required = true)]
    pub servers: Vec<String>,
}

/// A `/proc/PID/status` line in bytes: `VmHWM` is the peak resident set, `VmRSS` the current.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|err| Error::InvalidRequest(format!("{path}: {err}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| Error::Internal(format!("{path} has no {field} line")))
}

pub async fn run(args: MemoryArgs) -> Result<()> {
    ringleader::tools::bench::validate_common(&[1], 0, args.keys, args.value_bytes)?;
    let mut pids = HashMap::new();
    for server in &args.servers {
        let (addr, pid) = server
            .split_once('=')
            .and_then(|(addr, pid)| Some((addr.to_string(), pid.parse::<u32>().ok()?)))
            .ok_or_else(|| {
                Error::InvalidRequest(format!("--server {server}: expected ADDR=PID"))
            })?;
        pids.insert(addr, pid);
    }
    let client = Client::new(ClientOptions {
        viewleader: args.viewleader.clone(),
        timeout_ms: LOAD_TIMEOUT_MS,
        wait_ms: LOAD_TIMEOUT_MS,
    });
    let view = client.query_servers().await?;
    let ring = Ring::of_servers(&view.servers);
    let keys: Vec<String> = (0..args.keys).map(key_name).collect();
    let value = Value::Text("x".repeat(args.value_bytes));
    eprintln!(
        "loading {} keys of {} bytes on {} servers",
        args.keys,
        args.value_bytes,
        view.servers.len()
    );
    bulk_load(&client, &view, &ring, &keys, &value).await?;
    let mut raw: HashMap<&str, u64> = HashMap::new();
    for key in &keys {
        for id in ring.replicas(key) {
            *raw.entry(id).or_default() += (key.len() + args.value_bytes) as u64;
        }
    }
    for server in &view.servers {
        let pid = pids.get(&server.addr).ok_or_else(|| {
            Error::InvalidRequest(format!("no --server {}=PID given", server.addr))
        })?;
        let status = client.status(&server.addr).await?;
        let line = json!({"kind": "memory", "server": server.addr, "keys_held": status.keys,
                          "raw_bytes": raw.get(server.id.as_str()).copied().unwrap_or(0),
                          "peak_rss_bytes": status_bytes(*pid, "VmHWM:")?,
                          "rss_bytes": status_bytes(*pid, "VmRSS:")?});
        println!("{line}");
    }
    Ok(())
}
