//! Requests that follow the leader (SPEC §6): a write a follower forwards, and the
//! ReadIndex of a linearizable read, go to whichever node leads, again and again
//! across leader changes, until they get an answer or their own deadline passes.
//!
//! Why: a leader that is killed, paused or cut off leaves the requests it holds
//! unanswered. Without following, a client waits for its write timeout (30 s by
//! default) although a new leader is elected within an election timeout.
//!
//! Invariants:
//! - a forwarded write (or trim or cursor command) carries an idempotency key (the
//!   client's, or an internal one no client can send: it starts with a NUL byte),
//!   and every re-send uses the same key, so the state machine applies it at most
//!   once whichever leader commits it;
//! - a re-send happens only when the node we sent to can no longer answer: its RPC
//!   failed, it answered that it is not (or no longer) the leader, or another leader
//!   became known while we waited for it;
//! - every loop is bounded: by the request's deadline, and by `leader_wait` without
//!   any leader to send to; pauses between attempts use `Backoff`;
//! - a forwarded request is never forwarded again by the leader that receives it
//!   (`handle::no_hint`), so requests cannot loop between nodes.

use super::NodeHandle;
use crate::api::{ApiError, WriteRequest, WriteResult};
use crate::backoff::Backoff;
use crate::node::interface::LeaderView;
use crate::transport::RpcError;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// First byte of internal idempotency keys: not visible ASCII, so no client key
/// (`Idempotency-Key` must be visible ASCII) can collide with one.
const INTERNAL_KEY_PREFIX: char = '\0';

/// How long past a request's deadline an attempt in flight may still answer:
/// the leader times a write out at the same deadline and its answer (504 with
/// the entry's offset) says more than "outcome unknown".
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// How long requests follow the leader.
#[derive(Clone, Copy, Debug)]
pub struct FollowConfig {
    /// A write's deadline when it names none (`write.timeout_ms`); `None`: no limit.
    pub write_timeout: Option<Duration>,
    /// Longest wait for a leader to send to before giving up (about two elections).
    pub leader_wait: Duration,
    /// A read's whole budget for its ReadIndex across leader changes.
    pub read_timeout: Duration,
}

impl FollowConfig {
    pub fn new(write_timeout: Option<Duration>, election_timeout_max: Duration) -> Self {
        let leader_wait = election_timeout_max * 2 + Duration::from_secs(1);
        FollowConfig {
            write_timeout,
            leader_wait,
            read_timeout: leader_wait + Duration::from_secs(5),
        }
    }
}

/// Where the next attempt goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Local,
    Remote(String),
}

/// How one attempt ended.
enum Attempt<T> {
    Done(Result<T, ApiError>),
    /// The target cannot answer; `ApiError` is what the client gets if no other
    /// leader is found in time.
    Retry(ApiError),
}

/// A key for a forwarded write whose client gave none. Short, since every key
/// is remembered (`write.idempotency_window` of them, in every snapshot): 64
/// random bits per node make a collision within a window of 100,000 keys about
/// a one in three billion chance.
pub fn internal_key(node_id: &str) -> String {
    let r: u64 = rand::random();
    format!("{INTERNAL_KEY_PREFIX}{node_id}/{r:016x}")
}

fn is_internal(key: &str) -> bool {
    key.starts_with(INTERNAL_KEY_PREFIX)
}

/// Forward a write that this node cannot take (it is not the leader; `addr` is
/// the leader it knows) and follow the leader until it is answered.
pub async fn forward_write(
    h: &NodeHandle,
    mut req: WriteRequest,
    addr: String,
) -> Result<WriteResult, ApiError> {
    let key = req
        .idempotency_key
        .get_or_insert_with(|| internal_key(&h.me.0))
        .clone();
    let timeout = match req.timeout_ms {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
        None => h.follow.write_timeout,
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let unknown = || ApiError::OutcomeUnknown("the leader was lost while forwarding".into());
    let res = follow(h, Target::Remote(addr), deadline, unknown, |target| {
        let mut req = req.clone();
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            req.timeout_ms = Some((left.as_millis() as u64).max(1));
        }
        async move {
            match target {
                Target::Local => write_outcome(h.write_local(req).await),
                Target::Remote(addr) => match h.peers.forward_write(&addr, &req).await {
                    Ok(r) => Attempt::Done(Ok(r)),
                    Err(RpcError::Api(e)) => write_outcome(Err(e)),
                    Err(e) => {
                        tracing::debug!(error = %e, "forwarding a write failed; following the leader");
                        Attempt::Retry(unknown())
                    }
                },
            }
        }
    })
    .await;
    // Our own re-send found our earlier attempt: for the client it is one write.
    res.map(|mut r| {
        if is_internal(&key) {
            r.duplicate = false;
        }
        r
    })
}

/// What a write attempt's answer means: errors that prove the target cannot take
/// the write (not the leader, deposed, shutting down) are retried under the same
/// key; every other answer is final.
fn write_outcome(r: Result<WriteResult, ApiError>) -> Attempt<WriteResult> {
    match r {
        Err(e @ (ApiError::NoLeader { .. } | ApiError::OutcomeUnknown(_))) => {
            Attempt::Retry(match e {
                ApiError::NoLeader { .. } => {
                    ApiError::OutcomeUnknown("the leader was lost while forwarding".into())
                }
                e => e,
            })
        }
        Err(ApiError::ShuttingDown) => Attempt::Retry(ApiError::OutcomeUnknown(
            "the leader shut down while holding the write".into(),
        )),
        other => Attempt::Done(other),
    }
}

/// The read index for a linearizable read, from whichever node leads.
///
/// A node that knows no leader answers at once (SPEC: 503 `no_leader`); one that
/// led when the read began and lost leadership during its round follows.
pub async fn read_index(h: &NodeHandle) -> Result<u64, ApiError> {
    let was_leader = h.shared.leader.borrow().me;
    let start = match h.read_index_local().await {
        Err(ApiError::NoLeader {
            leader_hint: Some(addr),
        }) => Target::Remote(addr),
        Err(ApiError::NoLeader { leader_hint: None }) if was_leader => Target::Local,
        other => return other,
    };
    let deadline = Some(Instant::now() + h.follow.read_timeout);
    let no_leader = || ApiError::NoLeader { leader_hint: None };
    follow(h, start, deadline, no_leader, |target| async move {
        let r = match target {
            Target::Local => h.read_index_local().await,
            Target::Remote(addr) => match h.peers.read_index(&addr).await {
                Ok(i) => Ok(i),
                Err(RpcError::Api(e)) => Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "asking the leader for a read index failed");
                    return Attempt::Retry(no_leader());
                }
            },
        };
        match r {
            Err(ApiError::NoLeader { .. } | ApiError::ShuttingDown) => Attempt::Retry(no_leader()),
            other => Attempt::Done(other),
        }
    })
    .await
}

/// The loop: send to `target`; while waiting, a different leader becoming known
/// abandons the attempt (the old one cannot answer, and a re-send is safe); when
/// an attempt must be retried, wait for a leader to send to, with backoff. The
/// same leader failing again and again is given `leader_wait` in all; each new
/// leader gets that long afresh.
async fn follow<T, F, Fut>(
    h: &NodeHandle,
    mut target: Target,
    deadline: Option<Instant>,
    on_give_up: impl Fn() -> ApiError,
    mut attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut(Target) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut views = h.shared.leader.subscribe();
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
    let mut failing_since: Option<Instant> = None;
    loop {
        let started = views.borrow_and_update().clone();
        let outcome = tokio::select! {
            biased;
            a = attempt(target.clone()) => a,
            _ = replaced(&mut views, &target, &started) => {
                tracing::debug!(?target, "the leader changed while a request waited; following it");
                Attempt::Retry(on_give_up())
            }
            _ = sleep_until(deadline.map(|d| d + ANSWER_GRACE)) => return Err(on_give_up()),
        };
        let last_error = match outcome {
            Attempt::Done(r) => return r,
            Attempt::Retry(e) => e,
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        let until = deadline.map_or(since + h.follow.leader_wait, |d| {
            d.min(since + h.follow.leader_wait)
        });
        let Some((next, fresh)) =
            next_target(&mut views, &target, &started, until, &mut backoff).await
        else {
            return Err(last_error);
        };
        if fresh {
            failing_since = None;
            backoff.reset();
        }
        h.shared.follow_retries.inc();
        target = next;
    }
}

/// Resolves when a leader other than `target` becomes known (or the same one in
/// a later term: it was deposed and re-elected, forgetting what it held).
async fn replaced(views: &mut watch::Receiver<LeaderView>, target: &Target, at: &LeaderView) {
    loop {
        if views.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let v = views.borrow_and_update().clone();
        if target_of(&v).is_some_and(|t| t != *target || v.term > at.term) {
            return;
        }
    }
}

fn target_of(v: &LeaderView) -> Option<Target> {
    if v.me {
        Some(Target::Local)
    } else {
        v.addr.clone().map(Target::Remote)
    }
}

/// The next node to try, and whether it is a new leader: one known now that is
/// not the one that just failed (or is, in a later term); else the failed one
/// again after a backoff pause (its failure may have been brief: a connection
/// re-established); else the first leader to become known. `None` when nothing
/// is found before `until`.
async fn next_target(
    views: &mut watch::Receiver<LeaderView>,
    failed: &Target,
    at: &LeaderView,
    until: Instant,
    backoff: &mut Backoff,
) -> Option<(Target, bool)> {
    loop {
        let v = views.borrow_and_update().clone();
        let known = target_of(&v);
        if let Some(t) = &known {
            if t != failed || v.term > at.term {
                return Some((t.clone(), true));
            }
        }
        let wake = until.min(Instant::now() + backoff.next_delay());
        tokio::select! {
            r = views.changed() => if r.is_err() { return None },
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= until {
                    return None;
                }
                if let Some(t) = known {
                    return Some((t, false));
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_keys_are_unique_and_cannot_be_sent_by_a_client() {
        let a = internal_key("n1");
        let b = internal_key("n1");
        assert_ne!(a, b);
        assert!(is_internal(&a));
        assert!(!is_internal("order-42"));
        // A client's key must be visible ASCII (http::handlers); this one is not.
        assert!(axum::http::HeaderValue::from_str(&a).is_err());
    }

    #[test]
    fn only_answers_that_prove_the_target_cannot_take_the_write_are_retried() {
        let retried = |e: ApiError| matches!(write_outcome(Err(e)), Attempt::Retry(_));
        assert!(retried(ApiError::NoLeader { leader_hint: None }));
        assert!(retried(ApiError::OutcomeUnknown("deposed".into())));
        assert!(retried(ApiError::ShuttingDown));
        assert!(!retried(ApiError::InvalidRequest("w".into())));
        assert!(!retried(ApiError::NoQuorum("q".into())));
        assert!(!retried(ApiError::WriteTimeout {
            offset: 1,
            index: 2,
            acks: 1,
            w: 2
        }));
        assert!(!retried(ApiError::Storage("full".into())));
    }

    #[test]
    fn a_leader_is_a_target_only_when_known() {
        let mut v = LeaderView::default();
        assert_eq!(target_of(&v), None);
        v.addr = Some("a:1".into());
        assert_eq!(target_of(&v), Some(Target::Remote("a:1".into())));
        v.me = true;
        assert_eq!(target_of(&v), Some(Target::Local));
    }
}
