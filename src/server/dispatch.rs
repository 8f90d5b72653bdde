//! A storage server's answers: one `match` over its requests, each turned into calls on the
//! storage engine and the 2PC participant under the node's lock. Faults ([`crate::faults`])
//! decide whether a request is handled and whether its reply goes out; `crash` and `recover`
//! are answered only with `--fault-injection`.

use std::sync::Arc;

use tracing::info;

use super::node::StorageServer;
use crate::errinput;
use crate::error::{Error, Result};
use crate::faults::{check_injection, PlantedBug};
use crate::rpc::message::{ServerReply, ServerRequest, ServiceKind};
use crate::rpc::server::{Answer, Handler};
use crate::storage::{self, Record};
use crate::twopc::participant::{Context, Vote};
use crate::types::{check_epoch, check_key, check_value, check_version, Op, ServerInfo, Space};

/// Epochs past the newest this server heard of that a reader's repair may name: a reader can be
/// a view ahead of a server (it fetched the view first), never far ahead.
pub const REPAIR_EPOCHS_AHEAD_MAX: u64 = 2;

/// Keys in one `Versions` request (a rebalancing sender asks in batches of at most this many).
pub const VERSIONS_BATCH_KEYS_MAX: usize = 20_000;

impl Handler for StorageServer {
    type Request = ServerRequest;
    type Reply = ServerReply;
    const SERVICE: ServiceKind = ServiceKind::Server;

    async fn handle(self: Arc<Self>, request: ServerRequest) -> Answer<ServerReply> {
        let ends_crash = matches!(request, ServerRequest::Crash | ServerRequest::Recover);
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let op = request.name();
        let work = self
            .metrics
            .observed(op, &*self.env.clock, self.clone().dispatch(request));
        self.faults.handle(ends_crash, work).await
    }

    fn members_only(request: &ServerRequest) -> bool {
        request.members_only()
    }

    fn name(request: &ServerRequest) -> &'static str {
        request.name()
    }
}

impl StorageServer {
    /// Refuses a request addressed to a member this process is not and never was: a process
    /// started at a dead member's address has none of its data or transactions, and answering
    /// for it ("not found", "never prepared here") would pass absence off as the member's word.
    fn check_addressee(&self, request: &ServerRequest) -> Result<()> {
        let Some(expected) = request.addressed_to() else {
            return Ok(());
        };
        let node = self.node()?;
        if node.is_or_was(expected) {
            return Ok(());
        }
        Err(Error::StaleView(format!(
            "the process at {} has server id {}, not the expected id {expected} (that member restarted or left)",
            self.addr, node.id
        )))
    }

    /// Answers `request`. A request that read or changed the store is answered only once
    /// everything the engine has written is durable: a yes vote, a commit, an abort's floor,
    /// a stored transfer, an applied set, and also a read, so that nothing a client saw can be
    /// lost in a crash (a value committed but not yet synced would otherwise be readable and
    /// then forgotten). One group-committed sync covers every request waiting at once.
    async fn dispatch(self: Arc<Self>, request: ServerRequest) -> Result<ServerReply> {
        let durability = match &request {
            ServerRequest::Set { .. }
            | ServerRequest::Get {
                space: Space::Local,
                ..
            } => self.local_durability.clone(),
            _ => self.durability.clone(),
        };
        let touches_store = !matches!(
            request,
            ServerRequest::Print { .. }
                | ServerRequest::QueryAllKeys { .. }
                | ServerRequest::Crash
                | ServerRequest::Recover
                | ServerRequest::Status
                | ServerRequest::Relay { .. }
                | ServerRequest::Repair { .. }
                | ServerRequest::Decommission { .. }
        );
        let reply = self.answer(request).await?;
        if touches_store {
            durability.flush().await?;
        }
        Ok(reply)
    }

    async fn answer(self: Arc<Self>, request: ServerRequest) -> Result<ServerReply> {
        self.check_addressee(&request)?;
        match request {
            ServerRequest::Print { text } => {
                println!("{text}");
                info!(%text, "print");
                Ok(ServerReply::Printed)
            }
            ServerRequest::Set {
                key,
                value,
                request_id,
            } => {
                check_key(&key)?;
                check_value(&value)?;
                let mut node = self.node()?;
                if let Some(version) = request_id.and_then(|id| node.recent_sets.get(&id).copied())
                {
                    // A retry of a set already applied: the same answer, applied once.
                    return Ok(ServerReply::Stored { version });
                }
                let version = storage::set_local(&mut *node.local, key, value)?;
                if let Some(id) = request_id {
                    node.local.record(&Record::Applied {
                        request_id: id,
                        version,
                    })?;
                    node.recent_sets.insert(id, version);
                }
                Ok(ServerReply::Stored { version })
            }
            ServerRequest::Get { key, space } => {
                check_key(&key)?;
                Ok(ServerReply::Value(self.node()?.engine(space).get(&key)))
            }
            ServerRequest::QueryAllKeys {
                after,
                limit,
                space,
            } => {
                let node = self.node()?;
                let (keys, more) =
                    storage::keys_page(node.engine(space), after.as_deref(), limit as usize);
                Ok(ServerReply::Keys { keys, more })
            }
            ServerRequest::Prepare(args) => {
                check_key(&args.key)?;
                if let Op::Put(value) = &args.op {
                    check_value(value)?;
                }
                let participants = args.participants.len();
                if participants == 0 || participants > crate::ring::REPLICATION_COUNT {
                    return Err(errinput!(
                        "a transaction has 1 to {} participants, not {participants}",
                        crate::ring::REPLICATION_COUNT
                    ));
                }
                let now_ms = self.now_ms();
                let mut node = self.node()?;
                let node = &mut *node;
                let ctx = Context {
                    server_id: &node.id,
                    epoch: node.view.epoch,
                    rebalancing: node.rebalanced_epoch < node.view.epoch,
                    now_ms,
                    vote_yes_on_held_keys: self.options.planted_bug
                        == Some(PlantedBug::VoteYesOnHeldKeys),
                };
                match node.participant.prepare(&ctx, &mut *node.store, args) {
                    Ok(Vote::Yes) => Ok(ServerReply::Prepared),
                    Ok(Vote::Outdated { above }) => {
                        self.metrics.transaction("vote_no", "outdated");
                        Ok(ServerReply::Outdated { above })
                    }
                    Err(err) => {
                        self.metrics.transaction("vote_no", err.kind());
                        Err(err)
                    }
                }
            }
            ServerRequest::Commit { tx, .. } => {
                let mut node = self.node()?;
                let node = &mut *node;
                node.participant.commit(&mut *node.store, tx)?;
                self.metrics.transaction("commit", "coordinator");
                Ok(ServerReply::Committed)
            }
            ServerRequest::Abort { tx, .. } => {
                let mut node = self.node()?;
                let node = &mut *node;
                node.participant.abort(&mut *node.store, tx)?;
                self.metrics.transaction("abort", "coordinator");
                Ok(ServerReply::Aborted)
            }
            ServerRequest::Read { key, .. } => {
                check_key(&key)?;
                let node = self.node()?;
                Ok(ServerReply::ReadValue {
                    value: node.store.get(&key),
                    epoch: node.view.epoch,
                })
            }
            ServerRequest::Crash => {
                check_injection(self.options.fault_injection, "crash")?;
                self.set_crashed(true);
                Ok(ServerReply::Crashed(true))
            }
            ServerRequest::Recover => {
                check_injection(self.options.fault_injection, "recover")?;
                self.set_crashed(false);
                Ok(ServerReply::Crashed(false))
            }
            ServerRequest::TxStatus { tx, .. } => {
                let mut node = self.node()?;
                let node = &mut *node;
                Ok(ServerReply::TxState(
                    node.participant.status(&mut *node.store, tx)?,
                ))
            }
            ServerRequest::Transfer { epoch, entries, .. } => {
                check_epoch(epoch)?;
                for (key, versioned) in &entries {
                    check_key(key)?;
                    check_version(versioned.version)?;
                    check_value(&versioned.value)?;
                }
                let mut node = self.node()?;
                // A plan made for an older view is superseded: its copies may belong elsewhere
                // now, and its sender replans when it sees the newer view.
                if epoch < node.view.epoch {
                    return Err(Error::StaleView(format!(
                        "a transfer from epoch {epoch} reached server {} at epoch {}",
                        node.id, node.view.epoch
                    )));
                }
                // Remembered with the version each entry brought: the plan for this epoch does
                // not offer back the keys still at that version, whose senders cover every new
                // replica (`rebalance`, "Copies received before planning"). Noted before they
                // are applied, as a copy that is not stored cannot be at that version, save by
                // another copy of the same version, which is as good.
                node.received
                    .record(epoch, entries.iter().map(|(k, v)| (k, v.version)));
                let stored = node.store.apply_batch(entries)?;
                Ok(ServerReply::Transferred { stored })
            }
            ServerRequest::Relay { to, request } => {
                if !request.is_relayable() {
                    return Err(errinput!(
                        "a relay carries a transfer, a versions request or a tx_status, not {}",
                        request.name()
                    ));
                }
                if request.addressed_to() != Some(&to.id) {
                    return Err(errinput!(
                        "a relay to {} must carry a request addressed to it",
                        to.id
                    ));
                }
                let timeout = std::time::Duration::from_millis(self.options.rpc_timeout_ms);
                self.peers.call(&to.addr, &request, timeout).await
            }
            ServerRequest::Status => Ok(ServerReply::Status(self.status()?)),
            ServerRequest::Versions { keys, .. } => {
                if keys.len() > VERSIONS_BATCH_KEYS_MAX {
                    return Err(errinput!(
                        "at most {} keys per versions request",
                        VERSIONS_BATCH_KEYS_MAX
                    ));
                }
                let node = self.node()?;
                Ok(ServerReply::Versions(
                    keys.iter().map(|k| node.store.version(k)).collect(),
                ))
            }
            ServerRequest::Repair { key, epoch, to, .. } => self.repair(key, epoch, to).await,
            ServerRequest::Decommission { .. } => self.decommission().await,
        }
    }

    /// A reader's repair: this server's copy of `key` sent to the lagging replicas `to`, as a
    /// rebalancing transfer would send it. At this server's epoch only the key's replicas in its
    /// view are served; a reader a view ahead names replicas this server cannot check yet, so
    /// that is allowed for at most [`REPAIR_EPOCHS_AHEAD_MAX`] epochs past the newest it heard
    /// of, and a caller cannot carry a far-future epoch (or a copy) anywhere with it.
    async fn repair(&self, key: String, epoch: u64, to: Vec<ServerInfo>) -> Result<ServerReply> {
        check_key(&key)?;
        check_epoch(epoch)?;
        if to.len() >= crate::ring::REPLICATION_COUNT {
            return Err(errinput!(
                "a repair goes to at most {} other replicas, not {}",
                crate::ring::REPLICATION_COUNT - 1,
                to.len()
            ));
        }
        let copy = {
            let node = self.node()?;
            // A reader of an older view refreshes it (its replicas may have moved); one of a
            // newer view knows replicas this server has not heard of yet, so only a view of
            // the same epoch is checked here (the replicas refuse a transfer of an epoch older
            // than theirs).
            if epoch < node.view.epoch {
                return Err(Error::StaleView(format!(
                    "a repair of epoch {epoch} reached server {} at epoch {}",
                    node.id, node.view.epoch
                )));
            }
            let known = node.epoch_seen.max(node.view.epoch);
            if epoch > known.saturating_add(REPAIR_EPOCHS_AHEAD_MAX) {
                return Err(Error::StaleView(format!(
                    "a repair of epoch {epoch} reached server {}, which has heard of epoch \
                     {known} at most",
                    node.id
                )));
            }
            if epoch == node.view.epoch {
                let replicas = crate::ring::replicas(&key, &node.view.servers);
                let stranger = to
                    .iter()
                    .find(|t| !node.view.servers.contains(t) || !replicas.contains(&t.id));
                if let Some(stranger) = stranger {
                    return Err(errinput!(
                        "{} ({}) is not a replica of {key:?} in the view of epoch {epoch}",
                        stranger.id,
                        stranger.addr
                    ));
                }
            }
            node.store.get(&key)
        };
        let Some(copy) = copy else {
            return Ok(ServerReply::Repaired { stored: 0 });
        };
        let entries = vec![(key, copy)];
        let sent = futures::future::join_all(to.iter().map(|target| {
            let request = ServerRequest::Transfer {
                epoch,
                server_id: target.id.clone(),
                entries: entries.clone(),
            };
            async move { self.call_member(target, &request, 0).await }
        }))
        .await;
        let stored = sent
            .iter()
            .filter(|reply| matches!(reply, Ok(ServerReply::Transferred { .. })))
            .count();
        Ok(ServerReply::Repaired {
            stored: stored as u64,
        })
    }
}
