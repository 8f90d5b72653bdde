//! Two-phase commit: how a replicated write (`setr`, `append`) reaches all the replicas of its key
//! or none of them. Both sides are state machines with no sockets, clocks or randomness of their
//! own: [`coordinator::Coordinator`] (driven by the client library) says which messages to send and
//! decides on the answers; [`participant::Participant`] (driven by the storage server) votes,
//! applies and, when the coordinator goes silent, finishes the transaction with the other
//! participants. Their drivers move the messages and read the clocks.
//!
//! # Protocol
//! The client coordinates. It proposes a version (above anything it knows of the key) and sends
//! `Prepare {tx, key, op, epoch, expected_server_id, version, participants, range_lost}` to every replica of
//! the key; `participants` lists them in ring order and the first, the **primary**, holds the
//! transaction's decision. A participant votes yes only if
//! * the coordinator's epoch is the participant's epoch (both acted on the same view),
//! * the coordinator expects this server's current id (not a predecessor at the same address),
//! * the participant is not rebalancing (the key may be about to move),
//! * no other transaction is pending on that key (transactions on other keys go ahead), and
//! * the proposed version is above the key's version and above the version of any transaction
//!   aborted on the key (its *floor*); otherwise it answers `Outdated {above}` and the
//!   coordinator proposes again;
//! * an append does not start a fresh list on a key it lacks whose range the view records as
//!   lost (`range_lost`): the real list may come back with a server that held it, and the fresh
//!   one would beat it by version (`data_loss`; a `setr` starts the key afresh).
//!
//! A yes vote computes the value the write will produce (an append extends the list as it is
//! now: the key is held from here on), records it as pending and holds the key. On all yes, the
//! coordinator commits at the **primary first**, then at the others; on any no, timeout or
//! unreachable replica before that, it aborts everywhere. The write is acknowledged to the
//! caller once the primary and a majority of the participants have committed. Commit and abort
//! are idempotent: recent decisions are remembered, so a repeated message gets the same answer and
//! never applies twice; a retried prepare gets the same vote.
//!
//! # Termination (the coordinator died or went silent)
//! A transaction pending for longer than the transaction timeout is resolved without it:
//! * At the **primary**, it is aborted unilaterally. That is safe because the coordinator commits
//!   nowhere before the primary has committed, and the primary now refuses that commit.
//! * At another participant, it asks the others (`TxStatus`). Any `Committed {version}` means
//!   the decision was commit: it commits. The primary answering `Aborted` (or any participant
//!   answering `Aborted`, which only happens once the primary can no longer commit) means abort.
//!   A participant asked about a transaction it never prepared records it as aborted, so a late
//!   prepare cannot revive it. If the primary is still pending, its own timeout settles it soon;
//!   the participant asks again.
//! * If the primary cannot be reached, the participant keeps asking. Once the primary has left
//!   the view (the server shell tells it) and every other participant answered without a
//!   commit or left the view too, it aborts: any copy that committed is on a server outside the
//!   view. If the write was acknowledged, the primary and a majority held it and all of them
//!   are gone, the one loss the protocol admits (below); otherwise nothing depended on it. So
//!   a key is never blocked for longer than about one transaction timeout after the view stops
//!   containing its primary.
//! * A participant is the id it voted under ([`crate::storage::PreparedTx::voted_as`]): a primary that
//!   was expired and rejoined under a new id while the write was pending still aborts it.
//! * Only the member a message names answers it (`Commit`, `Abort`, `TxStatus` name the id they
//!   expect): a fresh process at a dead member's address refuses instead of answering "never
//!   heard of it", which would read as an abort.
//!
//! Every abort of a pending transaction raises the key's floor to that transaction's version.
//! If the primary did commit and comes back later (it was paused, say), its copy carries that
//! version, and every write after the abort was made above it: the late copy can never overwrite
//! a newer acknowledged value. (It can resurface where nothing newer was written; that write's
//! caller never got an answer, so it may take effect late.)
//!
//! # What is recorded before each message
//! The participant hands the storage engine a record ([`crate::storage::Record`]) before it acts:
//! the prepared write before a yes vote, the decision before a commit or abort is acknowledged,
//! the raised floor with every abort. The in-memory engine keeps none of them past the process;
//! a durable engine makes them survive a restart.
//!
//! # Deliberately left out
//! * Recovery: nothing reads the records back yet, so a server that restarts comes back empty
//!   under a new id (the coordinator's id check then fails).
//! * Losing the primary and a majority at once can lose a write that was acknowledged.
//! * Writes across several keys: a transaction touches one key.

pub mod coordinator;
pub mod participant;

pub use coordinator::Coordinator;
pub use participant::Participant;

pub use crate::types::Prepare;

use crate::error::Result;
use crate::types::{version_after, Version};

/// How many of `n` replicas make a majority: the acknowledgement of a write and the answers of
/// a linearizable read both need this many, so any two such sets meet.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The version to propose next: near the wall clock `now_us` (so independent coordinators rarely
/// collide), above `above` (what a participant reported) and above `last` (this coordinator's
/// previous proposal), so proposals only grow.
/// Fails when `above` or `last` leaves no version below [`crate::types::VERSION_MAX`] (a peer
/// reported an absurd one): the write is refused rather than proposed at a wrapped version.
pub fn next_version(now_us: u64, above: Version, last: Version) -> Result<Version> {
    Ok(now_us.max(version_after(above)?).max(version_after(last)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_two_majorities_of_the_same_replicas_meet() {
        for n in 1..=7 {
            assert!(2 * majority(n) > n, "two majorities of {n} must overlap");
            assert!(majority(n) <= n);
        }
    }

    #[test]
    fn a_proposal_goes_above_the_report_and_the_last_one_and_follows_the_clock() {
        assert_eq!(next_version(1_000, 0, 0), Ok(1_000));
        assert_eq!(next_version(1_000, 5_000, 0), Ok(5_001));
        assert_eq!(next_version(1_000, 0, 7_000), Ok(7_001));
    }

    #[test]
    fn a_reported_version_at_the_top_of_the_range_is_refused_not_wrapped() {
        assert!(next_version(1_000, u64::MAX, 0).is_err());
        assert!(next_version(1_000, crate::types::VERSION_MAX, 0).is_err());
        assert!(next_version(1_000, 0, u64::MAX).is_err());
    }
}
