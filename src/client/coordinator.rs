//! The 2PC coordinator of `setr`, as a state machine with no sockets: it says which prepares to
//! send, takes the votes as they come, and decides. The driver in [`super::Client::setr`] moves
//! the messages.
//!
//! The decision rule: commit only when every replica voted yes, at a version above every vote
//! (so all replicas store the same version and it only grows); abort at the first no, or when
//! the votes do not all arrive in time. The participant's doc ([`crate::server::participant`])
//! has the whole protocol and what it leaves out.

use crate::error::Error;
use crate::rpc::message::{Epoch, Key, Op, ServerInfo, ServerRequest, TxId, Version};

/// The outcome of the voting phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Commit { version: Version },
    Abort { reason: Error },
}

/// One replicated write being decided.
#[derive(Debug)]
pub struct Coordinator {
    tx: TxId,
    key: Key,
    op: Op,
    epoch: Epoch,
    participants: Vec<ServerInfo>,
    votes: Vec<Option<Version>>,
    decision: Option<Decision>,
}

impl Coordinator {
    pub fn new(tx: TxId, key: Key, op: Op, epoch: Epoch, participants: Vec<ServerInfo>) -> Self {
        let votes = vec![None; participants.len()];
        Self {
            tx,
            key,
            op,
            epoch,
            participants,
            votes,
            decision: None,
        }
    }

    pub fn participants(&self) -> &[ServerInfo] {
        &self.participants
    }

    /// The prepare for participant `index`.
    pub fn prepare(&self, index: usize) -> ServerRequest {
        ServerRequest::Prepare {
            tx: self.tx,
            key: self.key.clone(),
            op: self.op.clone(),
            epoch: self.epoch,
            expected_server_id: self.participants[index].id.clone(),
        }
    }

    /// Takes participant `index`'s vote; returns the decision once there is one.
    pub fn on_vote(&mut self, index: usize, vote: Result<Version, Error>) -> Option<&Decision> {
        if self.decision.is_none() {
            match vote {
                Ok(version) => {
                    self.votes[index] = Some(version);
                    if self.votes.iter().all(Option::is_some) {
                        let highest = self.votes.iter().flatten().copied().max().unwrap_or(0);
                        self.decision = Some(Decision::Commit {
                            version: highest + 1,
                        });
                    }
                }
                Err(reason) => self.decision = Some(Decision::Abort { reason }),
            }
        }
        self.decision.as_ref()
    }

    /// The votes did not all arrive in time.
    pub fn on_timeout(&mut self) -> &Decision {
        let missing: Vec<&str> = self
            .participants
            .iter()
            .zip(&self.votes)
            .filter(|(_, vote)| vote.is_none())
            .map(|(p, _)| p.addr.as_str())
            .collect();
        let reason = Error::Timeout(format!(
            "no vote on {:?} from {}",
            self.key,
            missing.join(", ")
        ));
        self.decision.get_or_insert(Decision::Abort { reason })
    }

    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    /// The message that carries the decision to every participant.
    pub fn decision_message(&self) -> Option<ServerRequest> {
        match self.decision.as_ref()? {
            Decision::Commit { version } => Some(ServerRequest::Commit {
                tx: self.tx,
                version: *version,
            }),
            Decision::Abort { .. } => Some(ServerRequest::Abort { tx: self.tx }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::message::Value;

    fn coordinator(n: usize) -> Coordinator {
        let participants = (0..n)
            .map(|i| ServerInfo {
                id: format!("s{i}"),
                addr: format!(":{i}"),
            })
            .collect();
        Coordinator::new(
            1,
            "k".into(),
            Op::Put(Value::Text("v".into())),
            4,
            participants,
        )
    }

    #[test]
    fn all_yes_commits_above_every_replicas_version() {
        let mut c = coordinator(3);
        assert_eq!(c.on_vote(0, Ok(4)), None);
        assert_eq!(c.on_vote(2, Ok(7)), None);
        assert_eq!(c.on_vote(1, Ok(5)), Some(&Decision::Commit { version: 8 }));
        assert!(matches!(
            c.decision_message(),
            Some(ServerRequest::Commit { tx: 1, version: 8 })
        ));
    }

    #[test]
    fn one_no_aborts_and_later_yes_votes_do_not_change_it() {
        let mut c = coordinator(3);
        c.on_vote(0, Ok(1));
        let no = Error::Refused("busy".into());
        assert_eq!(
            c.on_vote(1, Err(no.clone())),
            Some(&Decision::Abort { reason: no.clone() })
        );
        assert_eq!(c.on_vote(2, Ok(1)), Some(&Decision::Abort { reason: no }));
        assert!(matches!(
            c.decision_message(),
            Some(ServerRequest::Abort { tx: 1 })
        ));
    }

    #[test]
    fn a_missing_vote_at_the_deadline_aborts_naming_the_silent_replica() {
        let mut c = coordinator(2);
        c.on_vote(0, Ok(1));
        match c.on_timeout() {
            Decision::Abort {
                reason: Error::Timeout(msg),
            } => assert!(msg.contains(":1"), "{msg}"),
            other => panic!("expected a timeout abort, got {other:?}"),
        }
    }

    #[test]
    fn prepares_carry_the_epoch_and_the_expected_id() {
        let c = coordinator(2);
        match c.prepare(1) {
            ServerRequest::Prepare {
                epoch,
                expected_server_id,
                ..
            } => {
                assert_eq!(epoch, 4);
                assert_eq!(expected_server_id, "s1");
            }
            other => panic!("{other:?}"),
        }
    }
}
