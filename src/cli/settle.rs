//! `client wait-settled`: waits, up to `--wait-ms`, until the cluster has finished rebalancing
//! ([`Client::wait_settled`]), showing how far it has come (servers done, copies sent and still
//! to send) on stderr; prints the settled epoch and its servers, or exits 3 naming the epoch and
//! what is still rebalancing.
//!
//! Left out: waiting for a given epoch or a given membership (a script that added a server
//! waits for it to be in the view first, with `query_servers`).

use std::time::Duration;

use serde_json::json;

use super::output::Output;
use super::progress::{Progress, Shape};
use super::EXIT_OK;
use crate::client::Client;
use crate::error::Result;
use crate::net::Env;

/// Runs `client wait-settled`; returns the exit code.
pub async fn run(client: &Client, env: &Env, out: Output) -> Result<u8> {
    let wait = Duration::from_millis(client.options().wait_ms);
    let mut progress = Progress::new(out, Shape::Bar, env);
    let mut first = true;
    let settled = client
        .wait_settled(wait, |settling| {
            // A cluster settled at the first look has no progress worth a line.
            if first && settling.settled() {
                return;
            }
            first = false;
            let copies = settling.copies_sent.saturating_add(settling.copies_to_send);
            progress.update(
                settling.copies_sent,
                Some(copies),
                format!(
                    "epoch {}: {} of {} servers rebalanced{}, {} copies sent, {} to send",
                    settling.epoch,
                    settling.servers_done,
                    settling.servers.len(),
                    if settling.viewleader_rebalancing {
                        " (the view leader reports the view rebalancing)"
                    } else {
                        ""
                    },
                    settling.copies_sent,
                    settling.copies_to_send
                ),
            );
        })
        .await;
    progress.finish();
    let settled = settled?;
    let mut human = format!(
        "settled at epoch {} with {} servers",
        settled.epoch,
        settled.servers.len()
    );
    let servers = super::list_servers(&settled.servers, &mut human);
    out.ok(
        human,
        json!({"epoch": settled.epoch, "servers": servers, "settled": true}),
    );
    Ok(EXIT_OK)
}
