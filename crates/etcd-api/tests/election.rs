//! etcd's Election and Lock services through a real gRPC connection, over
//! the embedded store and (proxy mode) over a real etcd: campaigns exclude
//! each other and a Drover elector on the same prefix, observers see every
//! leader and proclaim, and bad requests get etcd's answers and change
//! nothing.

use std::future::Future;
use std::time::Duration;

use drover_election::{Election, ElectionError};
use drover_etcd_api::pb::etcdserverpb as etcdpb;
use drover_etcd_api::pb::etcdserverpb::kv_client::KvClient;
use drover_etcd_api::pb::etcdserverpb::lease_client::LeaseClient;
use drover_etcd_api::pb::v3electionpb as pb;
use drover_etcd_api::pb::v3electionpb::election_client::ElectionClient;
use drover_etcd_api::pb::v3lockpb as lockpb;
use drover_etcd_api::pb::v3lockpb::lock_client::LockClient;
use drover_etcd_api::testing::TestServer;
use drover_etcd_api::{
    DEFAULT_SESSION_TTL, ELECTION_SESSION_EXPIRED, EtcdApiConfig, MISSING_LEADER_KEY,
    MUTEX_SESSION_EXPIRED, NO_LEADER, NOT_LEADER,
};
use drover_store::Store;
use drover_store::keys::Keys;
use drover_store::lease::{Lease, LeaseConfig};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Bound on every wait for a server answer or a state to appear.
const ANSWER: Duration = Duration::from_secs(30);
/// Long enough that no lease expires during a test; the tests revoke them.
const TTL: i64 = 60;

struct Api {
    _server: TestServer,
    channel: Channel,
}

impl Api {
    async fn serve<S: Store>(store: S) -> Self {
        let server = TestServer::start(store, EtcdApiConfig::default())
            .await
            .unwrap();
        let channel = server.channel().await.unwrap();
        Api {
            _server: server,
            channel,
        }
    }

    fn election(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel.clone())
    }

    fn lock(&self) -> LockClient<Channel> {
        LockClient::new(self.channel.clone())
    }

    async fn grant(&self) -> i64 {
        LeaseClient::new(self.channel.clone())
            .lease_grant(etcdpb::LeaseGrantRequest { ttl: TTL, id: 0 })
            .await
            .unwrap()
            .into_inner()
            .id
    }

    async fn revoke(&self, lease: i64) {
        LeaseClient::new(self.channel.clone())
            .lease_revoke(etcdpb::LeaseRevokeRequest { id: lease })
            .await
            .unwrap();
    }

    async fn ttl_of(&self, lease: i64) -> i64 {
        LeaseClient::new(self.channel.clone())
            .lease_time_to_live(etcdpb::LeaseTimeToLiveRequest {
                id: lease,
                keys: false,
            })
            .await
            .unwrap()
            .into_inner()
            .ttl
    }

    /// Every key under `prefix`, oldest create revision first.
    async fn keys_under(&self, prefix: &str) -> Vec<etcd_kv::KeyValue> {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        let mut kvs = KvClient::new(self.channel.clone())
            .range(etcdpb::RangeRequest {
                key: prefix.into(),
                range_end: end,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .kvs;
        kvs.sort_by_key(|kv| kv.create_revision);
        kvs
    }

    /// Waits (bounded) until `prefix` holds `count` keys.
    async fn wait_for_keys(&self, prefix: &str, count: usize) -> Vec<etcd_kv::KeyValue> {
        for _ in 0..600 {
            let kvs = self.keys_under(prefix).await;
            if kvs.len() == count {
                return kvs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{prefix} never held {count} keys");
    }

    fn campaign(
        &self,
        name: &str,
        lease: i64,
        value: &str,
    ) -> JoinHandle<Result<pb::LeaderKey, Status>> {
        let mut client = self.election();
        let request = pb::CampaignRequest {
            name: name.into(),
            lease,
            value: value.into(),
        };
        tokio::spawn(async move {
            let answer = client.campaign(request).await?.into_inner();
            assert!(answer.header.is_some(), "every answer has a header");
            Ok(answer
                .leader
                .expect("a campaign answer names the leader key"))
        })
    }

    async fn leader(&self, name: &str) -> Result<etcd_kv::KeyValue, Status> {
        let answer = self
            .election()
            .leader(pb::LeaderRequest { name: name.into() })
            .await?
            .into_inner();
        assert!(answer.header.unwrap().revision > 0);
        Ok(answer.kv.expect("a leader answer carries the key"))
    }
}

use drover_etcd_api::pb::mvccpb as etcd_kv;

async fn answered<T>(f: impl Future<Output = T>) -> T {
    timeout(ANSWER, f)
        .await
        .expect("the server answered in time")
}

async fn joined<T>(handle: JoinHandle<T>) -> T {
    answered(handle).await.expect("the task did not panic")
}

fn name_in(keys: &Keys, what: &str) -> String {
    format!("{}{what}", keys.prefix())
}

// ------------------------------------------------------------------ cases

async fn campaigns_exclude_each_other_until_the_leader_resigns<S: Store>(store: S, keys: Keys) {
    let api = Api::serve(store).await;
    let name = name_in(&keys, "web");
    let (a, b) = (api.grant().await, api.grant().await);

    let leader_a = joined(api.campaign(&name, a, "a")).await.unwrap();
    assert_eq!(leader_a.key, format!("{name}/{a:x}").into_bytes());
    assert_eq!(leader_a.name, name.as_bytes());
    assert_eq!(leader_a.lease, a);
    assert!(leader_a.rev > 0);

    let waiting_b = api.campaign(&name, b, "b");
    let candidates = api.wait_for_keys(&format!("{name}/"), 2).await;
    assert_eq!(candidates[1].key, format!("{name}/{b:x}").into_bytes());
    assert_eq!(candidates[1].lease, b);
    assert!(!waiting_b.is_finished(), "b must wait while a leads");
    let leader = api.leader(&name).await.unwrap();
    assert_eq!(leader.key, leader_a.key);
    assert_eq!(leader.value, b"a");
    assert_eq!(leader.create_revision, leader_a.rev);

    // Proclaim changes the value, not the leadership.
    let mut election = api.election();
    answered(election.proclaim(pb::ProclaimRequest {
        leader: Some(leader_a.clone()),
        value: b"a2".to_vec(),
    }))
    .await
    .unwrap();
    let leader = api.leader(&name).await.unwrap();
    assert_eq!((leader.value.as_slice(), leader.version), (&b"a2"[..], 2));
    assert_eq!(leader.create_revision, leader_a.rev);
    assert!(!waiting_b.is_finished());

    let resigned = answered(election.resign(pb::ResignRequest {
        leader: Some(leader_a.clone()),
    }))
    .await
    .unwrap()
    .into_inner();
    assert!(resigned.header.unwrap().revision > leader_a.rev);
    let leader_b = joined(waiting_b).await.unwrap();
    assert_eq!(leader_b.key, format!("{name}/{b:x}").into_bytes());
    assert_eq!(api.leader(&name).await.unwrap().value, b"b");

    // The old leader key can no longer proclaim; the value stays b's.
    let stale = answered(election.proclaim(pb::ProclaimRequest {
        leader: Some(leader_a.clone()),
        value: b"stale".to_vec(),
    }))
    .await
    .unwrap_err();
    assert_eq!((stale.code(), stale.message()), (Code::Unknown, NOT_LEADER));
    assert_eq!(api.leader(&name).await.unwrap().value, b"b");
    // Resigning an old key is harmless and never deletes the successor.
    answered(election.resign(pb::ResignRequest {
        leader: Some(leader_a),
    }))
    .await
    .unwrap();
    assert_eq!(api.leader(&name).await.unwrap().key, leader_b.key);

    api.revoke(a).await;
    api.revoke(b).await;
}

async fn observe_reports_every_leader_and_proclaim<S: Store>(store: S, keys: Keys) {
    let api = Api::serve(store).await;
    let name = name_in(&keys, "observed");
    let (a, b) = (api.grant().await, api.grant().await);
    let mut observed = answered(api.election().observe(pb::LeaderRequest {
        name: name.clone().into(),
    }))
    .await
    .unwrap()
    .into_inner();
    let mut next = async || {
        let answer = answered(observed.message())
            .await
            .unwrap()
            .expect("the stream stays open");
        assert!(answer.header.unwrap().revision > 0);
        answer.kv.unwrap()
    };

    let leader_a = joined(api.campaign(&name, a, "a")).await.unwrap();
    let seen = next().await;
    assert_eq!(
        (seen.key.clone(), seen.value.clone()),
        (leader_a.key.clone(), b"a".to_vec())
    );
    let waiting_b = api.campaign(&name, b, "b");
    api.wait_for_keys(&format!("{name}/"), 2).await;

    let mut election = api.election();
    for value in ["a2", "a2"] {
        // etcd reports every write to the leader key, even of the same value.
        answered(election.proclaim(pb::ProclaimRequest {
            leader: Some(leader_a.clone()),
            value: value.into(),
        }))
        .await
        .unwrap();
        let seen = next().await;
        assert_eq!(
            (seen.key.clone(), seen.value.clone()),
            (leader_a.key.clone(), value.as_bytes().to_vec())
        );
    }
    answered(election.resign(pb::ResignRequest {
        leader: Some(leader_a),
    }))
    .await
    .unwrap();
    let seen = next().await;
    assert_eq!(seen.key, format!("{name}/{b:x}").into_bytes());
    assert_eq!(seen.value, b"b");
    joined(waiting_b).await.unwrap();

    api.revoke(a).await;
    api.revoke(b).await;
}

async fn bad_election_requests_get_etcds_answers_and_change_nothing<S: Store>(
    store: S,
    keys: Keys,
) {
    let api = Api::serve(store).await;
    let name = name_in(&keys, "bad");
    let mut election = api.election();

    let none = api.leader(&name).await.unwrap_err();
    assert_eq!((none.code(), none.message()), (Code::Unknown, NO_LEADER));

    let missing = answered(election.proclaim(pb::ProclaimRequest {
        leader: None,
        value: b"x".to_vec(),
    }))
    .await
    .unwrap_err();
    assert_eq!(
        (missing.code(), missing.message()),
        (Code::Unknown, MISSING_LEADER_KEY)
    );
    let missing = answered(election.resign(pb::ResignRequest { leader: None }))
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code(), missing.message()),
        (Code::Unknown, MISSING_LEADER_KEY)
    );

    // A lease the store does not know: etcd's "lease not found".
    let unknown_lease = 0x7eed_0000_0000_0001;
    let refused = joined(api.campaign(&name, unknown_lease, "x"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(refused.message(), "etcdserver: requested lease not found");
    let refused = answered(api.lock().lock(lockpb::LockRequest {
        name: name.clone().into(),
        lease: unknown_lease,
    }))
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    // Proclaiming for a key that was never a candidate.
    let invented = pb::LeaderKey {
        name: name.clone().into(),
        key: format!("{name}/1234").into_bytes(),
        rev: 1,
        lease: 0x1234,
    };
    let refused = answered(election.proclaim(pb::ProclaimRequest {
        leader: Some(invented),
        value: b"x".to_vec(),
    }))
    .await
    .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::Unknown, NOT_LEADER)
    );

    let not_utf8 = joined({
        let mut client = api.election();
        tokio::spawn(async move {
            client
                .campaign(pb::CampaignRequest {
                    name: vec![0xff, 0xfe],
                    lease: 1,
                    value: Vec::new(),
                })
                .await
        })
    })
    .await
    .unwrap_err();
    assert_eq!(not_utf8.code(), Code::InvalidArgument);

    assert!(
        api.keys_under(&format!("{name}/")).await.is_empty(),
        "nothing was written"
    );
}

async fn a_waiting_campaign_whose_lease_is_revoked_fails<S: Store>(store: S, keys: Keys) {
    let api = Api::serve(store).await;
    let name = name_in(&keys, "expiring");
    let (a, b) = (api.grant().await, api.grant().await);
    let leader_a = joined(api.campaign(&name, a, "a")).await.unwrap();
    let waiting_b = api.campaign(&name, b, "b");
    api.wait_for_keys(&format!("{name}/"), 2).await;

    api.revoke(b).await;
    let failed = joined(waiting_b).await.unwrap_err();
    assert_eq!(
        (failed.code(), failed.message()),
        (Code::Unknown, ELECTION_SESSION_EXPIRED)
    );
    assert_eq!(
        api.leader(&name).await.unwrap().key,
        leader_a.key,
        "a still leads"
    );

    // The same for a waiting lock.
    let lock_name = name_in(&keys, "expiring-lock");
    let (c, d) = (api.grant().await, api.grant().await);
    answered(api.lock().lock(lockpb::LockRequest {
        name: lock_name.clone().into(),
        lease: c,
    }))
    .await
    .unwrap();
    let waiting_d = tokio::spawn({
        let mut client = api.lock();
        let request = lockpb::LockRequest {
            name: lock_name.clone().into(),
            lease: d,
        };
        async move { client.lock(request).await }
    });
    api.wait_for_keys(&format!("{lock_name}/"), 2).await;
    api.revoke(d).await;
    let failed = joined(waiting_d).await.unwrap_err();
    assert_eq!(
        (failed.code(), failed.message()),
        (Code::Unknown, MUTEX_SESSION_EXPIRED)
    );

    for lease in [a, c] {
        api.revoke(lease).await;
    }
}

async fn a_campaign_whose_client_goes_away_withdraws_its_key<S: Store>(store: S, keys: Keys) {
    let api = Api::serve(store).await;
    let name = name_in(&keys, "abandoned");
    let (a, b) = (api.grant().await, api.grant().await);
    joined(api.campaign(&name, a, "a")).await.unwrap();
    let waiting_b = api.campaign(&name, b, "b");
    api.wait_for_keys(&format!("{name}/"), 2).await;

    // Dropping the call resets the HTTP/2 stream, as a cancelled client does.
    waiting_b.abort();
    let left = api.wait_for_keys(&format!("{name}/"), 1).await;
    assert_eq!(left[0].key, format!("{name}/{a:x}").into_bytes());

    api.revoke(a).await;
    api.revoke(b).await;
}

async fn locks_exclude_each_other_until_unlocked<S: Store>(store: S, keys: Keys) {
    let api = Api::serve(store).await;
    let name = name_in(&keys, "mutex");
    let (a, b) = (api.grant().await, api.grant().await);
    let mut lock = api.lock();
    let held = answered(lock.lock(lockpb::LockRequest {
        name: name.clone().into(),
        lease: a,
    }))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(held.key, format!("{name}/{a:x}").into_bytes());
    assert!(held.header.unwrap().revision > 0);

    let waiting_b = tokio::spawn({
        let mut client = api.lock();
        let request = lockpb::LockRequest {
            name: name.clone().into(),
            lease: b,
        };
        async move { client.lock(request).await.map(|r| r.into_inner()) }
    });
    let queued = api.wait_for_keys(&format!("{name}/"), 2).await;
    assert!(
        queued.iter().all(|kv| kv.value.is_empty()),
        "mutex keys carry no value"
    );
    assert!(
        !waiting_b.is_finished(),
        "b must wait while a holds the lock"
    );

    let unlocked = answered(lock.unlock(lockpb::UnlockRequest { key: held.key }))
        .await
        .unwrap()
        .into_inner();
    assert!(unlocked.header.unwrap().revision > 0);
    let held_b = joined(waiting_b).await.unwrap();
    assert_eq!(held_b.key, format!("{name}/{b:x}").into_bytes());

    api.revoke(a).await;
    api.revoke(b).await;
}

async fn no_lease_means_a_fresh_session_lease<S: Store>(store: S, keys: Keys) {
    let api = Api::serve(store).await;
    let name = name_in(&keys, "sessionless");
    let leader = joined(api.campaign(&name, 0, "x")).await.unwrap();
    assert_ne!(leader.lease, 0, "a lease was granted for the campaign");
    assert_eq!(
        leader.key,
        format!("{name}/{:x}", leader.lease).into_bytes()
    );
    let ttl = api.ttl_of(leader.lease).await;
    assert!(ttl > 0 && ttl <= DEFAULT_SESSION_TTL, "ttl {ttl}");

    let lock_name = name_in(&keys, "sessionless-lock");
    let held = answered(api.lock().lock(lockpb::LockRequest {
        name: lock_name.clone().into(),
        lease: 0,
    }))
    .await
    .unwrap()
    .into_inner();
    let kv = api
        .wait_for_keys(&format!("{lock_name}/"), 1)
        .await
        .remove(0);
    assert_eq!(kv.key, held.key);
    assert_ne!(kv.lease, 0);
    api.revoke(leader.lease).await;
    api.revoke(kv.lease).await;
}

/// A campaign through the served API and a Drover [`Election`] on the
/// prefix `<name>/` share one election: each waits for the other.
async fn served_campaigns_and_drover_candidates_exclude_each_other<S: Store>(store: S, keys: Keys) {
    let api = Api::serve(store.clone()).await;
    let name = name_in(&keys, "mixed");
    let election = Election::with_prefix(store.clone(), format!("{name}/")).unwrap();
    let drover_lease = Lease::grant(store.clone(), LeaseConfig::new(TTL))
        .await
        .unwrap();

    // The served campaign leads; the Drover candidate waits.
    let served = api.grant().await;
    let leader = joined(api.campaign(&name, served, "served")).await.unwrap();
    let drover = tokio::spawn({
        let election = election.clone();
        let view = drover_store::lease::LeaseView::of(&drover_lease);
        async move {
            election
                .campaign_with_view(view, b"drover".to_vec(), &Default::default())
                .await
        }
    });
    api.wait_for_keys(&format!("{name}/"), 2).await;
    assert!(!drover.is_finished(), "the Drover candidate must wait");
    answered(api.election().resign(pb::ResignRequest {
        leader: Some(leader),
    }))
    .await
    .unwrap();
    let term = joined(drover).await.unwrap();
    assert_eq!(api.leader(&name).await.unwrap().value, b"drover");

    // Now the Drover term leads and a served campaign waits.
    let waiting = api.campaign(&name, served, "served");
    api.wait_for_keys(&format!("{name}/"), 2).await;
    assert!(!waiting.is_finished(), "the served campaign must wait");
    term.resign().await.unwrap();
    joined(waiting).await.unwrap();
    assert!(matches!(
        term.proclaim("late").await,
        Err(ElectionError::TermEnded { .. })
    ));

    api.revoke(served).await;
    drover_lease.revoke().await.unwrap();
}

drover_store_etcd::on_both_backends!(
    campaigns_exclude_each_other_until_the_leader_resigns,
    observe_reports_every_leader_and_proclaim,
    bad_election_requests_get_etcds_answers_and_change_nothing,
    a_waiting_campaign_whose_lease_is_revoked_fails,
    a_campaign_whose_client_goes_away_withdraws_its_key,
    locks_exclude_each_other_until_unlocked,
    no_lease_means_a_fresh_session_lease,
    served_campaigns_and_drover_candidates_exclude_each_other,
);
