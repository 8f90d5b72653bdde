//! The view leader's Raft group, from the client's side: every member's status, and adding or
//! removing a member (`client viewleader status|add|remove`).

use super::{unexpected, Client};
use crate::error::Result;
use crate::rpc::message::{ViewLeaderReply, ViewLeaderRequest};
use crate::types::MemberStatus;

/// Members asked for their status in one `viewleader status`: the listed ones and those they
/// name, up to a whole group.
pub const STATUS_MEMBERS_MAX: usize = crate::viewleader::raft::MEMBERS_MAX;

/// One member's answer to `status`: its address, and its status or why it gave none.
pub type MemberAnswer = (String, Result<MemberStatus>);

impl Client {
    /// The status of the member at `addr`.
    pub async fn member_status(&self, addr: &str) -> Result<MemberStatus> {
        match self
            .viewleader
            .call_at(addr, &ViewLeaderRequest::Status, self.timeout())
            .await?
        {
            ViewLeaderReply::Status(status) => Ok(status),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Every member's status: those `--viewleader` lists, then any other voter or learner they
    /// name, each asked once. A member that does not answer is listed with its error.
    pub async fn group_status(&self) -> Result<Vec<MemberAnswer>> {
        let mut addrs = self.viewleader.addresses()?;
        // A bare host names a whole port range: ask only what answers the hello there.
        if addrs.len() > 1 && !self.viewleader.target().contains(',') {
            addrs.truncate(0);
            if let Ok(status) = self.member_status_found().await {
                addrs.push(status.addr);
            }
        }
        let mut answers: Vec<MemberAnswer> = Vec::new();
        let mut at = 0;
        while at < addrs.len() && answers.len() < STATUS_MEMBERS_MAX {
            let addr = addrs[at].clone();
            at += 1;
            let answer = self.member_status(&addr).await;
            if let Ok(status) = &answer {
                for (_, other) in status.voters.iter().chain(&status.learners) {
                    if !other.is_empty() && !addrs.contains(other) {
                        addrs.push(other.clone());
                    }
                }
            }
            answers.push((addr, answer));
        }
        Ok(answers)
    }

    /// The status of whichever member the target finds first.
    async fn member_status_found(&self) -> Result<MemberStatus> {
        match self.viewleader_call(ViewLeaderRequest::Status).await? {
            ViewLeaderReply::Status(status) => Ok(status),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Adds member `id` at `addr` to the group: a learner until it has caught up, then a voter.
    /// Answers the leader's status after the change.
    pub async fn add_member(&self, id: u64, addr: &str) -> Result<MemberStatus> {
        let request = ViewLeaderRequest::AddMember {
            id,
            addr: addr.into(),
        };
        match self.viewleader_call(request).await? {
            ViewLeaderReply::Status(status) => Ok(status),
            other => Err(unexpected("add_member", &other)),
        }
    }

    /// Removes member `id` from the group; answers the leader's status after the change.
    pub async fn remove_member(&self, id: u64) -> Result<MemberStatus> {
        match self
            .viewleader_call(ViewLeaderRequest::RemoveMember { id })
            .await?
        {
            ViewLeaderReply::Status(status) => Ok(status),
            other => Err(unexpected("remove_member", &other)),
        }
    }
}
