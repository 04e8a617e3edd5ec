//! Elections through a shared `Session` against a real agent: resigning is one write and keeps the
//! session for the next campaign, another session's candidate takes over, terms strictly increase,
//! the session's settings are rejected on a bound election before any request, one campaign per key
//! per session at a time, loss through the key or the session, and the blocking mirror.

#![cfg(feature = "test-util")]

mod support;

use std::sync::mpsc;
use std::time::Duration;

use consul_lock::{Error, Session};
use support::*;
use tokio::time::timeout;

/// Long enough that no renewal falls inside a test (renewals every TTL/2), so request counts are exact.
const TTL: Duration = Duration::from_secs(60);

async fn session(client: consul_lock::Client) -> Session {
    Session::new(client, TTL).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_is_one_write_keeps_the_session_and_another_session_takes_over() {
    let key = unique("election-session");
    let (c1, c2) = (client(), client());
    let (s1, s2) = (session(c1.clone()).await, session(c2.clone()).await);
    let (e1, e2) = (s1.election(&key), s2.election(&key));
    let mut last_term = 0;
    let mut current = e1.campaign(b"a0".to_vec()).await.unwrap();
    for round in 0..4 {
        let (mine, theirs, next_session) = if round % 2 == 0 { (&s1, &e2, &s2) } else { (&s2, &e1, &s1) };
        assert_eq!(current.session_id(), mine.id(), "the campaign is the shared session's");
        assert!(current.term() > last_term, "terms strictly increase: {} after {last_term}", current.term());
        last_term = current.term();
        let leader = e1.leader().await.unwrap().expect("a leader");
        assert_eq!((leader.session_id.as_str(), leader.term), (mine.id(), current.term()));
        // The other session's candidate waits in line; the resignation hands over to it.
        let (e, value) = (theirs.clone(), format!("r{}", round + 1).into_bytes());
        let next = tokio::spawn(async move { e.campaign(value).await });
        assert!(eventually(Duration::from_secs(5), || async { queue_len(&key).await == 1 }).await, "queued");
        let counter = if round % 2 == 0 { &c1 } else { &c2 };
        let before = counter.request_count();
        current.resign().await.unwrap();
        assert_eq!(counter.request_count() - before, 1, "resigning on a shared session is one request");
        assert!(mine.is_alive(), "resigning keeps the shared session");
        assert!(session_exists(mine.id()).await, "the resigned session still exists in Consul");
        current = timeout(Duration::from_secs(10), next).await.expect("the next candidate leads").unwrap().unwrap();
        assert_eq!(current.session_id(), next_session.id());
    }
    assert!(current.term() > last_term);
    current.resign().await.unwrap();
    assert_eq!(e1.leader().await.unwrap(), None);
    assert!(raw_keys(&format!("{key}/.consul-lock-queue/")).await.is_empty(), "no queue entry left behind");
    assert!(s1.is_alive() && s2.is_alive());
    s1.destroy().await.unwrap();
    s2.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_settings_are_rejected_on_a_bound_election_before_any_request() {
    let key = unique("election-session-settings");
    let c = client();
    let s = session(c.clone()).await;
    let before = c.request_count();
    let bound = || s.election(&key);
    let cases = [
        ("ttl", bound().ttl(Duration::from_secs(20))),
        ("lock_delay", bound().lock_delay(Duration::ZERO)),
        ("session_name", bound().session_name("mine".into())),
    ];
    for (setting, election) in &cases {
        let err = election.campaign(b"v".to_vec()).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidConfig(m) if m.contains(setting)), "{setting}: {err}");
        let err = election.run_as_leader(b"v".to_vec(), async {}).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidConfig(m) if m.contains(setting)), "{setting}: {err}");
    }
    assert_eq!(c.request_count(), before, "rejected before any request");
    assert!(raw_kv(&key).await.is_none());
    // The same election without them campaigns.
    let l = bound().acquire_timeout(Duration::from_secs(5)).campaign(b"v".to_vec()).await.unwrap();
    assert_eq!(l.session_id(), s.id());
    l.resign().await.unwrap();
    s.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_campaign_through_the_same_session_waits_in_process_for_the_first() {
    let key = unique("election-session-twice");
    let s = session(client()).await;
    let election = s.election(&key);
    let first = election.campaign(b"first".to_vec()).await.unwrap();
    let e = election.clone();
    let mut second = tokio::spawn(async move { e.campaign(b"second".to_vec()).await });
    assert!(timeout(Duration::from_millis(500), &mut second).await.is_err(), "one campaign per key per session");
    assert_eq!(queue_len(&key).await, 0, "the second waits in-process, not in Consul's queue");
    assert!(first.is_leader());
    let term = first.term();
    first.resign().await.unwrap();
    let second = timeout(Duration::from_secs(10), second).await.expect("elected after the first").unwrap().unwrap();
    assert_eq!(second.session_id(), s.id());
    assert!(second.term() > term);
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"second");
    second.resign().await.unwrap();
    s.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_session_leader_learns_of_an_outside_delete_and_the_line_moves_on() {
    let key = unique("election-session-delete");
    let (s1, s2) = (session(client()).await, session(client()).await);
    let (e1, e2) = (s1.election(&key), s2.election(&key));

    // Awaiting lost() watches the key: the delete is seen, and the candidate in line is elected.
    let l1 = e1.campaign(b"a".to_vec()).await.unwrap();
    let e = e2.clone();
    let next = tokio::spawn(async move { e.campaign(b"b".to_vec()).await });
    assert!(eventually(Duration::from_secs(5), || async { queue_len(&key).await == 1 }).await, "queued");
    assert!(timeout(Duration::from_millis(200), l1.lost()).await.is_err(), "still leader");
    raw_delete(&key).await;
    timeout(Duration::from_secs(10), l1.lost()).await.expect("the leader sees the delete");
    assert!(!l1.is_leader());
    let l2 = timeout(Duration::from_secs(10), next).await.expect("the next candidate leads").unwrap().unwrap();
    assert_eq!(l2.session_id(), s2.id());
    assert!(s1.is_alive(), "a lost leadership does not lose the shared session");
    l1.resign().await.unwrap();

    // Without lost(), the next proclaim finds out, and cleans up so the line moves on.
    let e = e1.clone();
    let next = tokio::spawn(async move { e.campaign(b"a2".to_vec()).await });
    assert!(eventually(Duration::from_secs(5), || async { queue_len(&key).await == 1 }).await, "queued");
    raw_delete(&key).await;
    assert!(l2.proclaim(b"b2".to_vec()).await.unwrap_err().is_lost());
    assert!(!l2.is_leader());
    let l3 = timeout(Duration::from_secs(10), next).await.expect("the next candidate leads").unwrap().unwrap();
    assert_eq!((l3.session_id(), e1.leader().await.unwrap().unwrap().value), (s1.id(), b"a2".to_vec()));
    l2.resign().await.unwrap();

    // Losing the session loses the leadership; a campaign on a lost session fails.
    destroy_session(s1.id()).await;
    timeout(Duration::from_secs(10), l3.lost()).await.expect("lost with the session");
    timeout(Duration::from_secs(10), s1.lost()).await.expect("the session is known lost");
    l3.resign().await.unwrap();
    let err = e1.acquire_timeout(Duration::from_secs(5)).campaign(b"again".to_vec()).await.unwrap_err();
    assert!(err.is_lost(), "{err}");
    s2.destroy().await.unwrap();
}

#[test]
fn blocking_mirror_campaigns_through_a_shared_session() {
    let client = consul_lock::blocking::Client::builder().address(consul().http_addr()).build().unwrap();
    let key = unique("election-session-blocking");
    let s1 = consul_lock::blocking::Session::new(&client, TTL).unwrap();
    let s2 = consul_lock::blocking::Session::new(&client, TTL).unwrap();
    let err = s1.election(&key).ttl(Duration::from_secs(20)).campaign(b"x".to_vec()).unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("ttl")), "{err}");
    let l1 = s1.election(&key).campaign(b"a".to_vec()).unwrap();
    assert_eq!(l1.session_id(), s1.id());
    let (tx, rx) = mpsc::channel();
    let e2 = s2.election(&key);
    let waiter = std::thread::spawn(move || {
        let l = e2.campaign(b"b".to_vec()).unwrap();
        tx.send((l.term(), l.session_id().to_owned())).unwrap();
        assert!(!l.lost_timeout(Duration::from_millis(200)), "leads a moment");
        l.resign().unwrap();
    });
    let t1 = l1.term();
    l1.resign().unwrap();
    assert!(s1.is_alive(), "resigning keeps the shared session");
    let (t2, sid) = rx.recv_timeout(Duration::from_secs(10)).expect("the other session's candidate leads");
    assert_eq!(sid, s2.id());
    assert!(t2 > t1);
    let again = s1.election(&key).acquire_timeout(Duration::from_secs(10)).campaign(b"a2".to_vec()).unwrap();
    assert_eq!(again.session_id(), s1.id(), "the resigned session campaigns again");
    assert!(again.term() > t2);
    waiter.join().unwrap();
    again.resign().unwrap();
    assert_eq!(s1.election(&key).leader().unwrap(), None);
    s1.destroy().unwrap();
    s2.destroy().unwrap();
}
