//! Fault injection, in one place: what a process does when a test, the demo, the chaos run or the
//! distributed-log harness asks it to misbehave. Nothing here is on the path of a healthy
//! request beyond two atomic loads.
//!
//! * **Simulated crash** ([`Faults::crash`], the `crash`/`recover` requests and `POST /crash`,
//!   `/recover`): the process keeps its memory but answers nothing except the request that ends
//!   the crash, drops the connection of every other request, drops a reply computed while the
//!   crash began, and sends nothing (its background loops wait in [`Faults::wait_until_up`]).
//!   This is the crash of the INF-3203 log assignment: a node that comes back with its state.
//! * **Reply faults** ([`ReplyFaults`], a storage server's test-only option): drop every n-th
//!   reply (the caller times out and retries) or send it twice (the caller must ignore the
//!   second), so that retries and exactly-once can be tested through the real network path.
//!
//! * **Coordinator crash points** ([`CrashPoint`], `Client::write_then_crash`): a client that
//!   stops in the middle of a two-phase commit, on purpose, so that the participants' termination
//!   can be tested. The client library checks for it at the three points it names; nothing else
//!   in the write path knows about faults.
//!
//! * **Planted bugs** ([`PlantedBug`], a storage server's test-only option): a known defect
//!   switched on at run time, so that a test can prove the simulation and its checks catch it.
//!   Never set outside tests.
//!
//! A process applies them by turning each request's outcome into an [`Answer`] through
//! [`Faults::admits`] and [`Faults::answer`]; the RPC layer only carries the answer out.
//!
//! **Opt-in.** The faults a caller can ask for over the network (`crash`, `recover`, and the
//! log harness's `POST /exit`) are refused with [`Error::Forbidden`] unless the process was
//! started with `--fault-injection` ([`check_injection`]): otherwise anyone who reaches a port
//! could silence a node. The reply faults and planted bugs are options no flag sets, so they
//! need no gate; a coordinator crash point stops only the client that chose it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::rpc::server::Answer;

/// Refuses the fault `what` (a crash, a recovery, an exit) asked for over the network, unless
/// the process was started with `--fault-injection` (`enabled`). One place, so that the RPC
/// requests of the storage server and the view leader and the HTTP routes refuse alike.
pub fn check_injection(enabled: bool, what: &str) -> Result<()> {
    if enabled {
        return Ok(());
    }
    // An operator should see that someone tried: on a real cluster nobody should.
    warn!(request = what, "refused: started without --fault-injection");
    Err(Error::Forbidden(format!(
        "{what} refused: this process was started without --fault-injection (fault injection \
         is meant for tests, the demo, chaos runs and the distributed-log harness; restart it \
         with --fault-injection to allow crash, recover and /exit)"
    )))
}

/// Where a coordinator stops on purpose, to test what happens when a client dies mid-commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the first participant voted; the others never hear of the transaction.
    AfterFirstPrepare,
    /// After every participant voted yes; nobody hears the decision.
    AfterAllPrepares,
    /// After the primary committed; the others never hear the decision.
    AfterFirstCommit,
}

/// A defect a test switches on to prove it is caught (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// A participant votes yes on a key that another transaction holds: two writes of one key
    /// prepare at once, and the later commit overwrites the list the earlier one extended.
    VoteYesOnHeldKeys,
}

/// Drop every `drop_every`-th reply and send every `duplicate_every`-th reply twice (0 = never).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyFaults {
    pub drop_every: u64,
    pub duplicate_every: u64,
}

/// The faults one process is under. See the module doc.
#[derive(Debug, Default)]
pub struct Faults {
    crashed: AtomicBool,
    /// Wakes background work when a simulated crash ends.
    recovered: Notify,
    replies: ReplyFaults,
    /// Replies sent, for the reply faults.
    replies_sent: AtomicU64,
}

impl Faults {
    pub fn new(replies: ReplyFaults) -> Self {
        Self {
            replies,
            ..Self::default()
        }
    }

    /// Starts a simulated crash.
    pub fn crash(&self) {
        self.crashed.store(true, Ordering::Release);
        info!("simulated crash: answering nothing but recover until then");
    }

    /// Ends a simulated crash and wakes whatever waited for it.
    pub fn recover(&self) {
        self.crashed.store(false, Ordering::Release);
        self.recovered.notify_waiters();
        info!("recovered from a simulated crash");
    }

    pub fn is_crashed(&self) -> bool {
        self.crashed.load(Ordering::Acquire)
    }

    /// Returns once the process is not crashed (at once if it is not).
    pub async fn wait_until_up(&self) {
        while self.is_crashed() {
            let woken = self.recovered.notified();
            if !self.is_crashed() {
                return;
            }
            woken.await;
        }
    }

    /// Whether to handle a request at all; if not, its connection is dropped unanswered.
    /// `ends_crash`: the request starts or ends a simulated crash, and is handled even then.
    pub fn admits(&self, ends_crash: bool) -> bool {
        ends_crash || !self.is_crashed()
    }

    /// Handles one request under the faults: hangs up on it during a crash, else runs `work`
    /// and passes its reply through [`Faults::answer`]. `ends_crash`: the request starts or ends
    /// a simulated crash, and is handled even then.
    pub async fn handle<R>(
        &self,
        ends_crash: bool,
        work: impl std::future::Future<Output = Result<R>>,
    ) -> Answer<R> {
        if !self.admits(ends_crash) {
            return Answer::Hangup;
        }
        let reply = work.await;
        self.answer(ends_crash, reply)
    }

    /// What becomes of a reply: dropped if a crash began meanwhile, else subject to the reply
    /// faults.
    pub fn answer<R>(&self, ends_crash: bool, reply: Result<R>) -> Answer<R> {
        if !ends_crash && self.is_crashed() {
            return Answer::Silence;
        }
        let ReplyFaults {
            drop_every,
            duplicate_every,
        } = self.replies;
        if drop_every == 0 && duplicate_every == 0 {
            return Answer::Reply(reply);
        }
        let n = self.replies_sent.fetch_add(1, Ordering::Relaxed) + 1;
        if drop_every > 0 && n.is_multiple_of(drop_every) {
            tracing::debug!("fault hook: reply dropped");
            Answer::Silence
        } else if duplicate_every > 0 && n.is_multiple_of(duplicate_every) {
            Answer::Twice(reply)
        } else {
            Answer::Reply(reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crashed_process_admits_only_the_request_that_ends_the_crash_and_drops_late_replies() {
        let faults = Faults::default();
        assert!(faults.admits(false));
        faults.crash();
        assert!(!faults.admits(false) && faults.admits(true));
        assert!(matches!(faults.answer(false, Ok(1)), Answer::Silence));
        assert!(matches!(faults.answer(true, Ok(1)), Answer::Reply(Ok(1))));
        faults.recover();
        assert!(matches!(faults.answer(false, Ok(1)), Answer::Reply(Ok(1))));
    }

    #[test]
    fn a_requested_fault_is_refused_without_fault_injection_and_says_how_to_allow_it() {
        assert_eq!(check_injection(true, "crash"), Ok(()));
        let refused = check_injection(false, "crash").unwrap_err();
        assert_eq!(refused.kind(), "forbidden");
        assert_eq!(refused.exit_code(), 4);
        let message = refused.to_string();
        assert!(message.contains("crash refused"), "{message}");
        assert!(message.contains("--fault-injection"), "{message}");
        assert!(message.contains("tests"), "{message}");
        assert!(!refused.is_retryable());
    }

    #[test]
    fn reply_faults_drop_and_duplicate_on_their_counts() {
        let faults = Faults::new(ReplyFaults {
            drop_every: 2,
            duplicate_every: 3,
        });
        let fates: Vec<&str> = (0..6)
            .map(|_| match faults.answer(false, Ok(())) {
                Answer::Reply(_) => "reply",
                Answer::Twice(_) => "twice",
                Answer::Silence => "silence",
                Answer::Hangup => "hangup",
            })
            .collect();
        assert_eq!(
            fates,
            ["reply", "silence", "twice", "silence", "reply", "silence"]
        );
    }
}
