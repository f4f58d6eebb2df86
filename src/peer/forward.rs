//! Requests a follower cannot answer itself, sent on to the leader's peer URL: lease
//! keep-alives and TimeToLive, because only the leader's lessor knows exact deadlines (etcd
//! forwards the same two over its peer HTTP API).

use std::time::Duration;

use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::pb::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::pb::rsetcdpb::peer_client::PeerClient;

/// Why a forwarded request got no answer.
#[derive(Debug, thiserror::Error)]
#[error("forwarding to the leader at {url}: {reason}")]
pub struct ForwardError {
    pub url: String,
    pub reason: String,
}

/// The cluster id and membership as a running member at `url` knows them.
pub async fn fetch_members(url: &str) -> Result<(u64, Vec<crate::cluster::Member>), ForwardError> {
    let fail = |reason: String| ForwardError { url: url.to_string(), reason };
    let channel = super::dial::endpoint(url)
        .map_err(fail)?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let request = crate::pb::rsetcdpb::MembersRequest {};
    let resp = PeerClient::new(channel)
        .members(request)
        .await
        .map_err(|s| fail(s.message().to_string()))?
        .into_inner();
    let members = resp.members.into_iter().map(crate::cluster::Member::from).collect();
    Ok((resp.cluster_id, members))
}

/// A connection to the current leader, kept while the leader stays the same.
#[derive(Default)]
pub struct LeaderLink {
    cached: Mutex<Option<(String, PeerClient<Channel>)>>,
}

impl LeaderLink {
    async fn client(&self, url: &str) -> Result<PeerClient<Channel>, ForwardError> {
        let mut cached = self.cached.lock().await;
        if let Some((cached_url, client)) = cached.as_ref() {
            if cached_url == url {
                return Ok(client.clone());
            }
        }
        let fail = |reason: String| ForwardError { url: url.to_string(), reason };
        let channel = super::dial::endpoint(url)
            .map_err(fail)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        let client = PeerClient::new(channel);
        *cached = Some((url.to_string(), client.clone()));
        Ok(client)
    }

    pub async fn keep_alive(
        &self,
        url: &str,
        id: i64,
    ) -> Result<LeaseKeepAliveResponse, ForwardError> {
        let mut client = self.client(url).await?;
        let answer = client.lease_keep_alive(LeaseKeepAliveRequest { id }).await;
        answer.map(|r| r.into_inner()).map_err(|s| self.failed(url, s))
    }

    pub async fn time_to_live(
        &self,
        url: &str,
        request: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ForwardError> {
        let mut client = self.client(url).await?;
        let answer = client.lease_time_to_live(request).await;
        answer.map(|r| r.into_inner()).map_err(|s| self.failed(url, s))
    }

    /// A promotion checked by the leader: the leader's own error (not a transport failure)
    /// comes back as the inner error.
    pub async fn member_promote(
        &self,
        url: &str,
        id: u64,
    ) -> Result<Result<Vec<crate::pb::etcdserverpb::Member>, crate::server::Error>, ForwardError>
    {
        let mut client = self.client(url).await?;
        match client.member_promote(crate::pb::etcdserverpb::MemberPromoteRequest { id }).await {
            Ok(resp) => Ok(Ok(resp.into_inner().members)),
            Err(status) => match crate::server::Error::from_etcd_message(status.message()) {
                Some(err) => Ok(Err(err)),
                None => Err(self.failed(url, status)),
            },
        }
    }

    fn failed(&self, url: &str, status: tonic::Status) -> ForwardError {
        ForwardError { url: url.to_string(), reason: status.message().to_string() }
    }
}
