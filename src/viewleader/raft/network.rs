//! How members reach each other: openraft's messages over ringleader's RPC, pooled per member.
//! A member in a simulated crash sends nothing (as if its process were frozen).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;

use super::{decode, encode, MemberId, TypeConfig};
use crate::error::Error;
use crate::faults::Faults;
use crate::rpc::client::Pool;
use crate::rpc::message::{RaftMessage, ViewLeaderReply, ViewLeaderRequest};

/// The longest a member waits to connect to another, in ms.
pub const CONNECT_TIMEOUT_MS: u64 = 500;

type Calls = Pool<ViewLeaderRequest, ViewLeaderReply>;
type Failed<E = openraft::error::Infallible> =
    RPCError<MemberId, BasicNode, RaftError<MemberId, E>>;

/// Makes a [`Peer`] for each member openraft talks to.
pub struct Network {
    pool: Arc<Calls>,
    faults: Arc<Faults>,
}

impl Network {
    pub fn new(pool: Arc<Calls>, faults: Arc<Faults>) -> Self {
        Self { pool, faults }
    }
}

/// One other member.
pub struct Peer {
    pool: Arc<Calls>,
    faults: Arc<Faults>,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, _target: MemberId, node: &BasicNode) -> Peer {
        Peer {
            pool: self.pool.clone(),
            faults: self.faults.clone(),
            addr: node.addr.clone(),
        }
    }
}

impl Peer {
    /// Sends `message` and decodes openraft's result from the reply.
    async fn call<T, E>(
        &self,
        message: RaftMessage,
        timeout: Duration,
    ) -> Result<T, RPCError<MemberId, BasicNode, RaftError<MemberId, E>>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.faults.is_crashed() {
            return Err(RPCError::Unreachable(Unreachable::new(
                &Error::Unreachable("this member is in a simulated crash".into()),
            )));
        }
        let reply = self
            .pool
            .call(&self.addr, &ViewLeaderRequest::Raft(message), timeout)
            .await;
        let bytes = match reply {
            Ok(ViewLeaderReply::Raft(bytes)) => bytes,
            Ok(other) => {
                return Err(RPCError::Network(NetworkError::new(&Error::Protocol(
                    format!("{} answered a Raft message with {other:?}", self.addr),
                ))))
            }
            Err(err @ Error::Unreachable(_)) => {
                self.pool.forget(&self.addr);
                return Err(RPCError::Unreachable(Unreachable::new(&err)));
            }
            Err(err) => {
                if matches!(err, Error::Timeout(_)) {
                    self.pool.forget(&self.addr);
                }
                return Err(RPCError::Network(NetworkError::new(&err)));
            }
        };
        let answer: Result<T, RaftError<MemberId, E>> =
            decode(&bytes).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        answer.map_err(|err| RPCError::RemoteError(openraft::error::RemoteError::new(0, err)))
    }
}

/// Encodes a request, or fails it as a network error (only a bug can make encoding fail).
fn encoded<T: serde::Serialize, E: std::error::Error>(
    value: &T,
) -> Result<Vec<u8>, RPCError<MemberId, BasicNode, RaftError<MemberId, E>>> {
    encode(value).map_err(|err| RPCError::Network(NetworkError::new(&err)))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, Failed> {
        let bytes = encoded(&rpc)?;
        self.call(RaftMessage::Append(bytes), option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<MemberId>, Failed<InstallSnapshotError>> {
        let bytes = encoded(&rpc)?;
        self.call(RaftMessage::Snapshot(bytes), option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, Failed> {
        let bytes = encoded(&rpc)?;
        self.call(RaftMessage::Vote(bytes), option.hard_ttl()).await
    }
}
