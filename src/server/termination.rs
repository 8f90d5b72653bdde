//! Finishing transactions whose coordinator went silent. Every [`TX_CHECK_MS`] the server asks
//! its participant which transactions outlived the transaction timeout: those it is the primary
//! of it aborts at once; for the others it asks the other participants where the transaction
//! stands (`TxStatus`) and lets the participant decide on the answers. The rules, and why they
//! are safe, are in the module doc of [`crate::twopc`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::node::StorageServer;
use crate::rpc::message::{ServerReply, ServerRequest};
use crate::twopc::participant::Overdue;
use crate::types::{ServerInfo, TxId, TxState};

/// How often pending transactions are checked against the transaction timeout.
pub const TX_CHECK_MS: u64 = 100;

/// Resolves overdue transactions until `stop` fires. A crashed server resolves nothing.
pub(super) async fn resolve_overdue(server: Arc<StorageServer>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_millis(TX_CHECK_MS));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        if server.is_crashed() {
            continue;
        }
        let now_ms = server.now_ms();
        let overdue = {
            let Ok(mut guard) = server.node() else { return };
            let node = &mut *guard;
            let overdue = node
                .participant
                .overdue(now_ms, server.options.tx_timeout_ms);
            let mut acted = Vec::new();
            for item in overdue {
                match item {
                    Overdue::Ask { tx, .. } if !node.resolving.insert(tx) => {}
                    Overdue::Ask { .. } => acted.push(item),
                    Overdue::AbortAsPrimary { tx, .. } => {
                        if node.participant.abort(&mut *node.store, tx).is_ok() {
                            acted.push(item);
                        }
                    }
                }
            }
            acted
        };
        for item in overdue {
            match item {
                Overdue::AbortAsPrimary { tx, key } => {
                    server.metrics.transaction("abort", "primary_timeout");
                    info!(tx = %format!("{tx:x}"), %key, "coordinator silent; aborted as the primary");
                }
                Overdue::Ask { tx, others } => {
                    tokio::spawn(ask_and_resolve(server.clone(), tx, others));
                }
            }
        }
    }
}

/// Asks the other participants where `tx` stands and resolves it if their answers allow.
async fn ask_and_resolve(server: Arc<StorageServer>, tx: TxId, others: Vec<ServerInfo>) {
    let asks = others.iter().enumerate().map(|(attempt, other)| {
        let server = server.clone();
        async move {
            let request = ServerRequest::TxStatus {
                tx,
                server_id: other.id.clone(),
            };
            // A fresh process at the member's address refuses (it is not that member): that
            // is no answer, never an abort.
            let state = match server.call_member(other, &request, attempt).await {
                Ok(ServerReply::TxState(state)) => Some(state),
                _ => None,
            };
            (other.clone(), state)
        }
    });
    let answers = futures::future::join_all(asks).await;
    let Ok(mut node) = server.node() else { return };
    let node = &mut *node;
    node.resolving.remove(&tx);
    if server.is_crashed() {
        return;
    }
    let servers = &node.view.servers;
    let state = node
        .participant
        .resolve(&mut *node.store, tx, &answers, |id| {
            servers.iter().any(|s| s.id == id)
        });
    match state {
        TxState::Prepared => return,
        TxState::Committed { .. } => server.metrics.transaction("commit", "termination"),
        TxState::Aborted => server.metrics.transaction("abort", "termination"),
    }
    info!(tx = %format!("{tx:x}"), ?state, "coordinator silent; resolved with the other participants");
}
