//! One conformance suite for the coordinator's state store, run against a
//! real 3-member etcd cluster and against the embedded store; then what
//! only elections across replicas can show.

use crate::etcd_fixture::EtcdCluster;
use seawall_coordinator::store::embedded::EmbeddedStore;
use seawall_coordinator::store::etcd::EtcdStore;
use seawall_coordinator::store::{LeaderInfo, StateStore, StoreError};
use std::time::{Duration, Instant};

fn me(id: &str) -> LeaderInfo {
    LeaderInfo {
        id: id.into(),
        address: format!("{id}.test:7443"),
        epoch: 0,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What every store must do.
async fn conformance(store: &dyn StateStore) {
    let lead = store.campaign(&me("r1")).await.unwrap();
    assert!(lead.is_valid());
    let fence = lead.fence.clone();
    let leader = store
        .leader()
        .await
        .unwrap()
        .expect("a leader after campaign");
    assert_eq!((leader.id.as_str(), leader.epoch), ("r1", fence.epoch));

    // Writes, reads, revisions.
    let r1 = store.put(&fence, "jobs/a", b"1", Some(0)).await.unwrap();
    let r2 = store.put(&fence, "jobs/b", b"2", None).await.unwrap();
    assert!(r2 > r1 && r1 > 0, "revisions must grow: {r1} {r2}");
    let a = store.get("jobs/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.revision), (&b"1"[..], r1));
    assert!(store.get("jobs/none").await.unwrap().is_none());
    store.put(&fence, "agents/x", b"x", None).await.unwrap();
    let jobs = store.list("jobs/").await.unwrap();
    let keys: Vec<&str> = jobs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["jobs/a", "jobs/b"]);

    // Compare-and-set: create-if-absent refuses an existing key; a stale
    // revision is refused; the right one passes.
    match store.put(&fence, "jobs/a", b"again", Some(0)).await {
        Err(StoreError::Conflict { found, .. }) => assert_eq!(found, r1),
        other => panic!("create over an existing key: {other:?}"),
    }
    assert!(matches!(
        store.put(&fence, "jobs/a", b"stale", Some(r1 - 1)).await,
        Err(StoreError::Conflict { .. })
    ));
    let r3 = store.put(&fence, "jobs/a", b"3", Some(r1)).await.unwrap();
    assert!(r3 > r2);

    // A write with extra keys lands whole, or not at all when its
    // comparison fails.
    let line = |k: &str| vec![(k.to_string(), b"line".to_vec())];
    let r4 = store
        .put_with(&fence, "jobs/d", b"4", Some(0), &line("audit/1"))
        .await
        .unwrap();
    assert!(r4 > r3);
    assert_eq!(store.get("audit/1").await.unwrap().unwrap().value, b"line");
    assert!(matches!(
        store
            .put_with(&fence, "jobs/d", b"again", Some(0), &line("audit/2"))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(store.get("audit/2").await.unwrap().is_none());

    // Lease-bound keys (agent registrations) are readable like any other.
    store
        .put_bound(&fence, "agents/eu/a1", b"a1")
        .await
        .unwrap();
    assert_eq!(
        store.get("agents/eu/a1").await.unwrap().unwrap().value,
        b"a1"
    );

    // Deletes.
    store.delete(&fence, "jobs/b").await.unwrap();
    assert!(store.get("jobs/b").await.unwrap().is_none());

    // A fence from another epoch writes nothing.
    let mut stale = fence.clone();
    stale.epoch -= 1;
    assert!(matches!(
        store.put(&stale, "jobs/c", b"no", None).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        store.delete(&stale, "jobs/a").await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        store
            .put_with(
                &stale,
                "jobs/c",
                b"no",
                None,
                &[("audit/3".into(), b"no".to_vec())]
            )
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(store.get("jobs/c").await.unwrap().is_none());
    assert!(store.get("audit/3").await.unwrap().is_none());
    store.resign(&lead).await.unwrap();
}

#[test]
fn embedded_store_conforms_and_fences_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.redb");
    runtime().block_on(async {
        let store = EmbeddedStore::open(&path).unwrap();
        conformance(&store).await;
        let old = store.campaign(&me("r1")).await.unwrap().fence;
        // A second coordinator on the same file is refused, with the reason.
        let err = EmbeddedStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("in use"), "{err}");
        drop(store);
        // After a restart the old epoch is fenced and the data is kept.
        let store = EmbeddedStore::open(&path).unwrap();
        let new = store.campaign(&me("r1")).await.unwrap().fence;
        assert!(new.epoch > old.epoch);
        assert!(matches!(
            store.put(&old, "jobs/z", b"z", None).await,
            Err(StoreError::Fenced { .. })
        ));
        assert_eq!(store.get("jobs/a").await.unwrap().unwrap().value, b"3");
        // Registrations bound to the old leadership are gone.
        assert!(store.get("agents/eu/a1").await.unwrap().is_none());
    });
}

#[test]
fn etcd_store_conforms_and_elects_one_leader_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let mut etcd = EtcdCluster::start(tmp.path(), 3);
    let endpoints = etcd.endpoints();
    runtime().block_on(async {
        let ttl = Duration::from_secs(3);
        let s1 = EtcdStore::connect(&endpoints, "/conformance", ttl)
            .await
            .unwrap();
        conformance(&s1).await;

        // Two replicas: the second waits while the first leads.
        let s2 = EtcdStore::connect(&endpoints, "/conformance", ttl)
            .await
            .unwrap();
        let first = s1.campaign(&me("r1")).await.unwrap();
        let second = tokio::spawn(async move {
            let l = s2.campaign(&me("r2")).await.unwrap();
            (s2, l, Instant::now())
        });
        tokio::time::sleep(Duration::from_secs(2 * ttl.as_secs())).await;
        assert!(!second.is_finished(), "two leaders at once");
        assert!(
            first.is_valid(),
            "the lease must be kept alive while leading"
        );
        assert_eq!(s1.leader().await.unwrap().unwrap().id, "r1");

        // The first stops keeping its lease (as a crashed replica would): the
        // second leads within the TTL plus a little, with a higher epoch, and
        // the first's fence writes nothing.
        let old = first.fence.clone();
        let dropped = Instant::now();
        drop(first);
        let (s2, second, won_at) = second.await.unwrap();
        let took = won_at - dropped;
        assert!(
            took < ttl + Duration::from_secs(2),
            "takeover took {took:?}"
        );
        assert!(second.fence.epoch > old.epoch);
        assert!(matches!(
            s1.put(&old, "jobs/late", b"x", None).await,
            Err(StoreError::Fenced { .. })
        ));
        s2.put(&second.fence, "jobs/new-leader", b"ok", None)
            .await
            .unwrap();
        assert_eq!(s1.leader().await.unwrap().unwrap().id, "r2");
        // A registration bound to the lost leader's lease went with it.
        assert!(s1.get("agents/eu/a1").await.unwrap().is_none());

        s2.resign(&second).await.unwrap();

        // One etcd member down: the cluster keeps quorum, and a leader on a
        // production-like lease keeps it and goes on writing.
        let s3 = EtcdStore::connect(&endpoints, "/conformance", Duration::from_secs(10))
            .await
            .unwrap();
        let third = s3.campaign(&me("r3")).await.unwrap();
        etcd.kill(0);
        let mut wrote = false;
        for _ in 0..100 {
            if s3
                .put(&third.fence, "jobs/quorum", b"2of3", None)
                .await
                .is_ok()
            {
                wrote = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(wrote, "no write with two of three members up");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            third.is_valid(),
            "leadership lost with two of three members up"
        );
        s3.put(&third.fence, "jobs/quorum", b"still", None)
            .await
            .unwrap();
        s3.resign(&third).await.unwrap();
    });
}
