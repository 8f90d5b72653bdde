//! The 2PC coordinator of `setr` and `append`, as a state machine with no sockets: it says which
//! prepares to send, takes the votes as they come, decides, and then takes the commit answers and
//! says whether the write is acknowledged. The driver in the client library moves the messages.
//!
//! The rules (the module doc of [`super`] has the whole protocol and the termination that covers
//! a coordinator that dies):
//! * vote phase: commit only when every replica voted yes; abort at the first no or when the
//!   votes do not all arrive in time; an `Outdated` vote means "propose a higher version", so
//!   the round is aborted and retried above it;
//! * commit phase: the primary (the first participant) commits first, because its record is the
//!   decision that survivors consult; the others follow. The write is acknowledged once the
//!   primary and a majority of the participants have committed.

use super::{majority, Prepare};
use crate::error::Error;
use crate::types::{Epoch, Key, Op, ServerInfo, TxId, Version};

/// A participant's answer to a prepare, as the coordinator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteReply {
    Yes,
    Outdated { above: Version },
    No(Error),
}

/// The outcome of the voting phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Abort {
        reason: Error,
    },
    /// Abort this round and propose again above `above`.
    Repropose {
        above: Version,
    },
}

/// The primary's answer to the commit, as the coordinator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitReply {
    Committed,
    /// The primary no longer accepts the commit (it resolved the transaction itself).
    Refused(String),
    /// No answer, or an unexpected one: the commit may or may not have happened.
    Failed(Error),
}

/// What follows the primary's answer to the commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterPrimary {
    /// Committed at the primary: commit at the others.
    CommitOthers,
    /// Aborted at the primary: tell the others to abort; the write failed with this error.
    AbortOthers(Error),
    /// The outcome is unknown (an [`Error::Uncertain`]): report it, never retry.
    Uncertain(Error),
}

/// One replicated write being decided.
#[derive(Debug)]
pub struct Coordinator {
    tx: TxId,
    key: Key,
    op: Op,
    epoch: Epoch,
    version: Version,
    participants: Vec<ServerInfo>,
    range_lost: bool,
    yes: Vec<bool>,
    decision: Option<Decision>,
}

impl Coordinator {
    pub fn new(
        tx: TxId,
        key: Key,
        op: Op,
        epoch: Epoch,
        version: Version,
        participants: Vec<ServerInfo>,
    ) -> Self {
        let yes = vec![false; participants.len()];
        Self {
            tx,
            key,
            op,
            epoch,
            version,
            participants,
            range_lost: false,
            yes,
            decision: None,
        }
    }

    /// Marks the key's range as recorded lost in the view (see [`Prepare::range_lost`]).
    pub fn range_lost(mut self, lost: bool) -> Self {
        self.range_lost = lost;
        self
    }

    pub fn participants(&self) -> &[ServerInfo] {
        &self.participants
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn tx(&self) -> TxId {
        self.tx
    }

    /// The prepare for participant `index`.
    pub fn prepare(&self, index: usize) -> Prepare {
        Prepare {
            tx: self.tx,
            key: self.key.clone(),
            op: self.op.clone(),
            epoch: self.epoch,
            expected_server_id: self.participants[index].id.clone(),
            version: self.version,
            participants: self.participants.clone(),
            range_lost: self.range_lost,
        }
    }

    /// Takes participant `index`'s vote; returns the decision once there is one.
    pub fn on_vote(&mut self, index: usize, vote: VoteReply) -> Option<&Decision> {
        if self.decision.is_none() {
            match vote {
                VoteReply::Yes => {
                    self.yes[index] = true;
                    if self.yes.iter().all(|y| *y) {
                        self.decision = Some(Decision::Commit);
                    }
                }
                VoteReply::Outdated { above } => {
                    self.decision = Some(Decision::Repropose { above })
                }
                VoteReply::No(reason) => self.decision = Some(Decision::Abort { reason }),
            }
        }
        self.decision.as_ref()
    }

    /// The votes did not all arrive in time.
    pub fn on_timeout(&mut self) -> &Decision {
        let missing: Vec<&str> = self
            .participants
            .iter()
            .zip(&self.yes)
            .filter(|(_, yes)| !**yes)
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

    /// Takes the primary's answer to the commit, which is sent before any other.
    pub fn on_primary_commit(&self, reply: CommitReply) -> AfterPrimary {
        let primary = &self.participants[0].addr;
        match reply {
            CommitReply::Committed => AfterPrimary::CommitOthers,
            CommitReply::Refused(why) => AfterPrimary::AbortOthers(Error::Refused(format!(
                "the primary {primary} no longer accepts the commit: {why}"
            ))),
            CommitReply::Failed(Error::Protocol(unexpected)) => AfterPrimary::Uncertain(
                Error::Uncertain(format!("protocol mismatch: {unexpected}")),
            ),
            CommitReply::Failed(err) => AfterPrimary::Uncertain(Error::Uncertain(format!(
                "the primary {primary} did not acknowledge the commit ({err}); \
                 the replicas will settle it among themselves"
            ))),
        }
    }

    /// Whether the write is acknowledged once the primary and `others_committed` of the other
    /// participants have committed; `Err` is the [`Error::Uncertain`] to report if not.
    pub fn on_commit_acks(&self, others_committed: usize) -> Result<(), Error> {
        let committed = 1 + others_committed;
        if committed < self.acks_needed() {
            return Err(Error::Uncertain(format!(
                "committed at the primary but only {committed} of {} replicas acknowledged; \
                 the others will settle it with the primary",
                self.participants.len()
            )));
        }
        Ok(())
    }

    /// How many participants must have committed (the primary among them) before the write is
    /// acknowledged: a majority.
    pub fn acks_needed(&self) -> usize {
        majority(self.participants.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Value;

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
            100,
            participants,
        )
    }

    #[test]
    fn all_yes_commits() {
        let mut c = coordinator(3);
        assert_eq!(c.on_vote(0, VoteReply::Yes), None);
        assert_eq!(c.on_vote(2, VoteReply::Yes), None);
        assert_eq!(c.on_vote(1, VoteReply::Yes), Some(&Decision::Commit));
        assert_eq!(c.tx(), 1);
    }

    #[test]
    fn one_no_aborts_and_later_yes_votes_do_not_change_it() {
        let mut c = coordinator(3);
        c.on_vote(0, VoteReply::Yes);
        let no = Error::Conflict("busy".into());
        assert_eq!(
            c.on_vote(1, VoteReply::No(no.clone())),
            Some(&Decision::Abort { reason: no.clone() })
        );
        assert_eq!(
            c.on_vote(2, VoteReply::Yes),
            Some(&Decision::Abort { reason: no })
        );
    }

    #[test]
    fn an_outdated_vote_asks_for_a_higher_version() {
        let mut c = coordinator(2);
        assert_eq!(
            c.on_vote(1, VoteReply::Outdated { above: 150 }),
            Some(&Decision::Repropose { above: 150 })
        );
    }

    #[test]
    fn a_missing_vote_at_the_deadline_aborts_naming_the_silent_replica() {
        let mut c = coordinator(2);
        c.on_vote(0, VoteReply::Yes);
        match c.on_timeout() {
            Decision::Abort {
                reason: Error::Timeout(msg),
            } => assert!(msg.contains(":1"), "{msg}"),
            other => panic!("expected a timeout abort, got {other:?}"),
        }
    }

    #[test]
    fn prepares_carry_the_epoch_the_expected_id_the_version_and_every_participant() {
        let c = coordinator(2);
        let Prepare {
            epoch,
            expected_server_id,
            version,
            participants,
            ..
        } = c.prepare(1);
        assert_eq!(epoch, 4);
        assert_eq!(expected_server_id, "s1");
        assert_eq!(version, 100);
        assert_eq!(participants.len(), 2);
    }

    #[test]
    fn a_majority_including_the_primary_acknowledges() {
        assert_eq!(coordinator(1).acks_needed(), 1);
        assert_eq!(coordinator(2).acks_needed(), 2);
        assert_eq!(coordinator(3).acks_needed(), 2);
        let c = coordinator(3);
        assert_eq!(c.on_commit_acks(1), Ok(()));
        assert!(matches!(c.on_commit_acks(0), Err(Error::Uncertain(_))));
    }

    #[test]
    fn the_primarys_answer_to_the_commit_decides_what_the_others_hear() {
        let c = coordinator(3);
        assert_eq!(
            c.on_primary_commit(CommitReply::Committed),
            AfterPrimary::CommitOthers
        );
        assert!(matches!(
            c.on_primary_commit(CommitReply::Refused("aborted".into())),
            AfterPrimary::AbortOthers(Error::Refused(msg)) if msg.contains(":0") && msg.contains("aborted")
        ));
        assert!(matches!(
            c.on_primary_commit(CommitReply::Failed(Error::Timeout("slow".into()))),
            AfterPrimary::Uncertain(Error::Uncertain(msg)) if msg.contains("slow")
        ));
    }
}
