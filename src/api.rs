//! The client-facing API as plain Rust: what the HTTP layer (and forwarded
//! writes arriving over gRPC) ask of the controller, and the typed errors it answers
//! with. HTTP status codes and JSON shapes are decided only at the edge (`http`).

use serde::Serialize;
use std::future::Future;

/// How many voters must hold a write durably before the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteConcern {
    Count(usize),
    Majority,
    All,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRequest {
    /// The message of a single write (empty for a batch).
    pub message: String,
    /// `Some`: an atomic batch of these messages instead of `message`.
    pub batch: Option<Vec<String>>,
    /// Land only if the log's next offset is exactly this when applied.
    pub if_next_offset: Option<u64>,
    /// `None`: the configured default.
    pub w: Option<WriteConcern>,
    /// `None`: the configured default; `Some(0)`: no limit.
    pub timeout_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    /// `Some`: not a write of messages but this change of the log (through the
    /// log like a write, answered once applied; `message`, `batch`, `w` and the
    /// condition are ignored).
    pub op: Option<LogOp>,
}

/// Changes of the log other than appends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOp {
    /// Remove every message below `before` (it must not pass the next offset).
    Trim {
        before: u64,
    },
    SetCursor {
        name: String,
        offset: u64,
        force: bool,
    },
    DeleteCursor {
        name: String,
    },
}

impl WriteRequest {
    /// A single unconditional write with the configured defaults.
    pub fn single(message: impl Into<String>) -> Self {
        WriteRequest {
            message: message.into(),
            batch: None,
            if_next_offset: None,
            w: None,
            timeout_ms: None,
            idempotency_key: None,
            op: None,
        }
    }

    /// A change of the log (see [`LogOp`]).
    pub fn op(op: LogOp) -> Self {
        WriteRequest {
            op: Some(op),
            ..Self::single("")
        }
    }

    /// The messages it appends, in order.
    pub fn messages(&self) -> Vec<&[u8]> {
        match &self.batch {
            Some(b) => b.iter().map(|m| m.as_bytes()).collect(),
            None => vec![self.message.as_bytes()],
        }
    }
}

/// A write's answer; for a batch, `offset` is its first message's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteResult {
    pub offset: u64,
    pub index: u64,
    pub term: u64,
    pub acks: usize,
    pub committed: bool,
    /// True when an earlier write with the same idempotency key is returned.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Cursors below the new first offset (an explicit trim).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passed_cursors: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Local,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub from: u64,
    /// `None`: the configured default.
    pub limit: Option<usize>,
    pub consistency: Consistency,
    /// Long poll: when nothing exists at `from`, wait up to this long for it.
    pub wait_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadMessage {
    pub offset: u64,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadResult {
    pub messages: Vec<ReadMessage>,
    pub next_offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub node_id: String,
    pub grpc_addr: String,
    pub http_addr: String,
    pub voter: bool,
    pub match_index: Option<u64>,
    pub reachable: Option<bool>,
    pub last_heartbeat_ms: Option<u64>,
    /// On the leader: this member said it is repairing (not counted).
    pub repairing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub node_id: String,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<String>,
    pub phase: String,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// The lowest offset still held (everything below was trimmed).
    pub first_offset: u64,
    /// The offset the next message will get.
    pub next_offset: u64,
    /// Bytes the message store occupies on this node.
    pub log_bytes: u64,
    pub members: Vec<MemberStatus>,
    pub health: serde_json::Value,
    /// Catching up after disk damage: not voting, not counted (`core::repair`).
    pub repairing: bool,
    /// While repairing: durable index and the leader's commit it must reach
    /// (`target` 0 until a leader has been heard).
    pub repair: Option<RepairProgress>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RepairProgress {
    pub index: u64,
    pub target: u64,
}

impl Status {
    /// `/ready`: in the run phase and a leader is known.
    pub fn is_ready(&self) -> bool {
        self.phase == "run" && self.leader_id.is_some()
    }
}

/// Errors the API returns, each with one SPEC code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("message is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("no quorum: {0}")]
    NoQuorum(String),
    #[error("{}", match leader_hint {
        Some(h) => format!("this node is not the leader; the leader is at {h}"),
        None => "no leader is known".to_string(),
    })]
    NoLeader { leader_hint: Option<String> },
    #[error("write not acknowledged by {w} voters within the timeout ({acks} so far)")]
    WriteTimeout {
        offset: u64,
        index: u64,
        acks: usize,
        w: usize,
    },
    #[error("storage error: {0}")]
    Storage(String),
    /// The write may or may not have been appended (the leader was lost after it
    /// may have received it): like a timeout, it may still commit. 504.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
    /// The client did not send its request in time (a slow or stalled body). 408.
    #[error("request timeout: {0}")]
    RequestTimeout(String),
    /// A batch over `write.max_batch_messages` or `write.max_batch_bytes`. 413.
    #[error("{0}")]
    BatchTooLarge(String),
    /// `If-Next-Offset` did not hold when the write was applied; nothing
    /// was appended. 409.
    #[error("the log's next offset is {next_offset}, not the one the write was conditioned on; nothing was appended")]
    OffsetConflict { next_offset: u64 },
    /// The offset asked for was trimmed. 410.
    #[error("offsets below {first_offset} were trimmed")]
    OffsetTrimmed { first_offset: u64 },
    /// A cursor may only move forward without `force`. 409.
    #[error("cursor is at {current}; moving it back needs \"force\": true")]
    CursorRegression { current: u64 },
    /// No room for another cursor. 409.
    #[error("there are already {max} cursors (cursors.max_cursors); delete one first")]
    TooManyCursors { max: u64 },
}

impl ApiError {
    /// The SPEC's snake_case error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::NoQuorum(_) => "no_quorum",
            ApiError::NoLeader { .. } => "no_leader",
            ApiError::WriteTimeout { .. } | ApiError::OutcomeUnknown(_) => "write_timeout",
            ApiError::Storage(_) => "storage_error",
            ApiError::NotFound(_) => "not_found",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::BatchTooLarge(_) => "payload_too_large",
            ApiError::OffsetConflict { .. } => "offset_conflict",
            ApiError::OffsetTrimmed { .. } => "offset_trimmed",
            ApiError::CursorRegression { .. } => "cursor_regression",
            ApiError::TooManyCursors { .. } => "too_many_cursors",
        }
    }
}

/// What the HTTP layer needs from a node. The controller's handle implements it;
/// HTTP tests use a fake.
pub trait NodeApi: Send + Sync + 'static {
    fn write(
        &self,
        req: WriteRequest,
    ) -> impl Future<Output = Result<WriteResult, ApiError>> + Send;
    fn read(&self, req: ReadRequest) -> impl Future<Output = Result<ReadResult, ApiError>> + Send;
    fn status(&self) -> impl Future<Output = Result<Status, ApiError>> + Send;
    /// Number of voters now (bounds `w`).
    fn voter_count(&self) -> usize;
    /// Every cursor and its offset, by name, including every change
    /// acknowledged before the call (a linearizable read).
    fn cursors(&self) -> impl Future<Output = Result<Vec<(String, u64)>, ApiError>> + Send {
        async { Err(ApiError::Internal("cursors are not supported here".into())) }
    }
    /// Add or update (`Some`) or remove (`None`) one member through the log;
    /// returns the index of the committed change.
    fn change_member(
        &self,
        node_id: String,
        member: Option<MemberSpec>,
    ) -> impl Future<Output = Result<u64, ApiError>> + Send {
        let _ = (node_id, member);
        async {
            Err(ApiError::Internal(
                "membership changes are not supported here".into(),
            ))
        }
    }
    /// The next offset of this node's committed copy, updated on every apply
    /// (streams wait on it). `None`: this node cannot stream.
    fn applied_offsets(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Completes when the node has stopped serving (streams then end).
    fn stopped(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
    /// Hand leadership to `to` (or the most caught-up voter); returns the target.
    fn transfer_leadership(
        &self,
        to: Option<String>,
    ) -> impl Future<Output = Result<String, ApiError>> + Send {
        let _ = to;
        async {
            Err(ApiError::Internal(
                "leadership transfer is not supported here".into(),
            ))
        }
    }
}

/// A member as an operator describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub grpc_addr: String,
    pub http_addr: String,
    pub voter: bool,
}

/// The API error for a proposal the core refused.
pub(crate) fn propose_error(e: crate::core::ProposeError) -> ApiError {
    use crate::core::ProposeError as P;
    match e {
        P::NotLeader { .. } => ApiError::NoLeader { leader_hint: None },
        P::Transferring => ApiError::NoLeader { leader_hint: None },
        P::NotReady | P::ChangeInProgress => ApiError::NoQuorum(e.to_string()),
        P::InvalidChange(m) => ApiError::InvalidRequest(m),
    }
}
