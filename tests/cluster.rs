//! Consul restarts and leader loss, on non-dev servers with a persistent `-data-dir`:
//! - a 3-server cluster whose leader is killed while locks are held and others wait: each holder
//!   keeps its lock or reports it lost, never two holders of a key, the waiters acquire once a new
//!   leader is elected, nothing panics;
//! - a single server restarted under a held lock: the holder keeps it (the outage is shorter than
//!   the TTL) and fencing tokens keep increasing across the restart.

#![cfg(feature = "test-util")]

mod support;

use std::time::Duration;

use consul_lock::{EphemeralLock, LockGuard};
use support::cluster::{single_server, three_servers};
use tokio::sync::oneshot;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_while_held_and_waited_for() {
    let mut servers = three_servers().await;
    let leader = servers[0].leader().await.expect("a leader");
    let li = servers.iter().position(|s| s.rpc_addr() == leader).expect("the leader is one of ours");
    let followers: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let (hold_via, wait_via) = (servers[followers[0]].client(), servers[followers[1]].client());

    let keys: Vec<String> = (0..3).map(|i| format!("cluster/k{i}")).collect();
    let mut holders: Vec<LockGuard> = Vec::new();
    for k in &keys {
        let g = EphemeralLock::new(k).client(hold_via.clone()).ttl(TTL).lock_delay(Duration::from_secs(1)).hold().await;
        holders.push(g.unwrap());
    }
    // One more lock held through the leader's own agent: killing it cuts that holder off.
    let cut_key = "cluster/via-leader".to_owned();
    let cut = EphemeralLock::new(&cut_key)
        .client(servers[li].client())
        .ttl(TTL)
        .lock_delay(Duration::from_secs(1))
        .hold()
        .await
        .unwrap();
    let (cut_tx, mut cut_waiter) = oneshot::channel();
    let lock = EphemeralLock::new(&cut_key).client(wait_via.clone()).ttl(TTL).acquire_timeout(Duration::from_secs(120));
    tokio::spawn(async move {
        let _ = cut_tx.send(lock.hold().await);
    });
    let mut waiters = Vec::new();
    for k in &keys {
        let (tx, rx) = oneshot::channel();
        let lock = EphemeralLock::new(k).client(wait_via.clone()).ttl(TTL).acquire_timeout(Duration::from_secs(120));
        tokio::spawn(async move {
            let _ = tx.send(lock.hold().await);
        });
        waiters.push(rx);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    servers[li].kill();
    let killed = Instant::now();
    let survivor = &servers[followers[0]];
    let end = killed + Duration::from_secs(60);
    let new_leader = loop {
        match survivor.leader().await {
            Some(l) if l != leader => break l,
            _ => {}
        }
        assert!(Instant::now() < end, "no new leader within 60 s:\n{}", survivor.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("new leader {new_leader} after {:?}", killed.elapsed());
    // Give renewals and the waiters' blocking queries time to hit the new leader.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut kept = 0;
    let mut acquired = Vec::new();
    for (i, (g, mut w)) in holders.into_iter().zip(waiters).enumerate() {
        let key = &keys[i];
        let now = hold_via.holder(key).await.unwrap();
        if g.is_held() {
            kept += 1;
            assert_eq!(now.map(|h| h.session_id).as_deref(), Some(g.session_id()), "{key}: held, yet not ours");
            if let Ok(r) = w.try_recv() {
                panic!("{key}: the waiter finished while the holder still holds: {r:?}");
            }
        }
        let token = g.fencing_token();
        g.release().await.unwrap_or_else(|e| panic!("{key}: release after failover: {e}"));
        let w = tokio::time::timeout(Duration::from_secs(90), w).await.expect("waiter bounded").expect("task");
        let w = w.unwrap_or_else(|e| panic!("{key}: the waiter did not acquire after the failover: {e}"));
        assert!(w.fencing_token() > token, "{key}: fencing {} after {token}", w.fencing_token());
        acquired.push(w);
    }
    eprintln!("leader kill: {kept}/3 holders kept their lock; 3/3 waiters acquired after {:?}", killed.elapsed());

    // The holder cut off with the leader cannot renew: it reports lost by its local deadline (last
    // renewal + TTL). Consul may end its session earlier: autopilot removes the dead server and its
    // node is deregistered, which invalidates the node's sessions at once, whatever their TTL — the
    // waiter can then take the key while the cut-off holder still believes it holds. Fencing tokens
    // are what protects a resource in that window (docs/RELIABILITY.md, "Node deregistration").
    let end = Instant::now() + Duration::from_secs(120);
    let mut next = None;
    let mut overlap_from = None;
    let lost_after = loop {
        if next.is_none() {
            if let Ok(r) = cut_waiter.try_recv() {
                let g = r.unwrap_or_else(|e| panic!("{cut_key}: the waiter did not acquire: {e}"));
                if cut.is_held() {
                    overlap_from = Some(Instant::now());
                    let node = reqwest::get(format!("http://{}/v1/catalog/node/srv{li}", survivor.http_addr()))
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap();
                    assert_eq!(node.trim(), "null", "an early new holder without the node being deregistered");
                }
                assert!(g.fencing_token() > cut.fencing_token(), "fencing");
                next = Some(g);
            }
        }
        if !cut.is_held() && next.is_some() {
            break killed.elapsed();
        }
        assert!(Instant::now() < end, "{cut_key}: not lost and taken over within 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        lost_after <= TTL + Duration::from_secs(3),
        "cut-off holder reported lost only {lost_after:?} after the kill"
    );
    match overlap_from {
        Some(t) => eprintln!(
            "cut-off holder: its node was deregistered and the key taken over {:?} before it reported lost \
             ({lost_after:?} after the kill)",
            t.elapsed()
        ),
        None => eprintln!("cut-off holder: reported lost {lost_after:?} after the kill, before any new holder"),
    }
    let next = next.unwrap();
    cut.release().await.unwrap();
    assert_eq!(wait_via.holder(&cut_key).await.unwrap().map(|h| h.session_id).as_deref(), Some(next.session_id()));
    next.release().await.unwrap();
    for w in acquired {
        assert!(w.is_held());
        w.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_restart_under_a_held_lock() {
    let mut server = single_server().await;
    let c = server.client();
    let g = EphemeralLock::new("restart/k").client(c.clone()).ttl(TTL).lock_delay(Duration::ZERO).hold().await.unwrap();
    let token = g.fencing_token();
    let sid = g.session_id().to_owned();

    server.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.start();
    server.wait_ready(Duration::from_secs(60)).await;
    eprintln!("restart: server back after {:?}", down.elapsed());
    let outage = down.elapsed();
    // Renewals retry during the outage; give them one round after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if outage + Duration::from_secs(3) < TTL / 2 {
        assert!(g.is_held(), "an outage of {outage:?} (< TTL/2) lost the lock");
    }
    let now = c.holder("restart/k").await.unwrap();
    if g.is_held() {
        assert_eq!(now.map(|h| h.session_id).as_deref(), Some(sid.as_str()), "held, yet the key is not ours");
    } else {
        assert!(now.is_none_or(|h| h.session_id != sid), "reported lost, yet Consul still has our session");
    }
    g.release().await.unwrap();
    let next = EphemeralLock::new("restart/k").client(c).acquire_timeout(Duration::from_secs(10)).hold().await.unwrap();
    assert!(next.fencing_token() > token, "fencing across a restart: {} after {token}", next.fencing_token());
    next.release().await.unwrap();
}
