//! Conversions between protobuf types and `core`/`api` types.
//!
//! Invariants:
//! - `core -> pb` is infallible; `pb -> core` is `TryFrom` and rejects missing or
//!   invalid fields with a [`ConvertError`] (peer input never panics);
//! - a round trip `core -> pb -> core` is the identity;
//! - payloads stay `bytes::Bytes` end to end (no copies of entry data).

use super::pb;
use super::pb::envelope::Msg;
use super::{JoinOutcome, JoinRequest};
use crate::api::{ApiError, LogOp, WriteConcern, WriteRequest, WriteResult};
use crate::core::SnapshotMeta;
use crate::core::{
    DiskState, Entry, EntryPayload, Envelope, Member, Membership, Message, Snapshot,
};
use std::collections::BTreeMap;

/// A protobuf message from a peer that does not describe a valid value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("invalid field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConvertError {
    ConvertError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn node_id(field: &'static str, id: String) -> Result<String, ConvertError> {
    if id.is_empty() {
        return Err(ConvertError::Missing(field));
    }
    Ok(id)
}

// ------------------------------------------------------------------ membership

impl From<&Membership> for pb::Membership {
    fn from(m: &Membership) -> Self {
        let members = m.members.iter().map(|(id, m)| pb::Member {
            node_id: id.clone(),
            grpc_addr: m.grpc_addr.clone(),
            http_addr: m.http_addr.clone(),
            voter: m.voter,
        });
        pb::Membership {
            members: members.collect(),
        }
    }
}

impl TryFrom<pb::Membership> for Membership {
    type Error = ConvertError;
    fn try_from(m: pb::Membership) -> Result<Self, ConvertError> {
        let mut members = BTreeMap::new();
        for pm in m.members {
            let id = node_id("member.node_id", pm.node_id)?;
            let member = Member {
                grpc_addr: pm.grpc_addr,
                http_addr: pm.http_addr,
                voter: pm.voter,
            };
            if members.insert(id.clone(), member).is_some() {
                return Err(invalid("membership", format!("duplicate member {id}")));
            }
        }
        Ok(Membership { members })
    }
}

impl From<&SnapshotMeta> for pb::SnapshotMeta {
    fn from(m: &SnapshotMeta) -> Self {
        pb::SnapshotMeta {
            index: m.index,
            term: m.term,
            membership: Some((&m.membership).into()),
        }
    }
}

impl TryFrom<pb::SnapshotMeta> for SnapshotMeta {
    type Error = ConvertError;
    fn try_from(m: pb::SnapshotMeta) -> Result<Self, ConvertError> {
        let membership = m
            .membership
            .ok_or(ConvertError::Missing("meta.membership"))?;
        Ok(SnapshotMeta {
            index: m.index,
            term: m.term,
            membership: membership.try_into()?,
        })
    }
}

// ------------------------------------------------------------------ entries

impl From<&Entry> for pb::Entry {
    fn from(e: &Entry) -> Self {
        use pb::entry::Payload;
        let payload = match &e.payload {
            EntryPayload::Noop => Payload::Noop(pb::Empty {}),
            EntryPayload::Command(b) => Payload::Command(b.clone()),
            EntryPayload::Membership(m) => Payload::Membership(m.into()),
        };
        pb::Entry {
            index: e.index,
            term: e.term,
            payload: Some(payload),
        }
    }
}

impl TryFrom<pb::Entry> for Entry {
    type Error = ConvertError;
    fn try_from(e: pb::Entry) -> Result<Self, ConvertError> {
        use pb::entry::Payload;
        let payload = match e.payload.ok_or(ConvertError::Missing("entry.payload"))? {
            Payload::Noop(_) => EntryPayload::Noop,
            Payload::Command(b) => EntryPayload::Command(b),
            Payload::Membership(m) => EntryPayload::Membership(m.try_into()?),
        };
        Ok(Entry {
            index: e.index,
            term: e.term,
            payload,
        })
    }
}

// ------------------------------------------------------------------ envelopes

impl From<&Envelope> for pb::Envelope {
    fn from(env: &Envelope) -> Self {
        pb::Envelope {
            from: env.from.clone(),
            to: env.to.clone(),
            term: env.term,
            msg: Some(msg_to_pb(&env.msg)),
        }
    }
}

fn msg_to_pb(msg: &Message) -> Msg {
    use pb::envelope as e;
    match msg {
        &Message::PreVote {
            last_log_index,
            last_log_term,
        } => Msg::PreVote(e::PreVote {
            last_log_index,
            last_log_term,
        }),
        &Message::PreVoteResp { granted } => Msg::PreVoteResp(e::PreVoteResp { granted }),
        &Message::Vote {
            last_log_index,
            last_log_term,
            transfer,
        } => Msg::Vote(e::Vote {
            last_log_index,
            last_log_term,
            transfer,
        }),
        &Message::VoteResp { granted } => Msg::VoteResp(e::VoteResp { granted }),
        Message::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => Msg::Append(e::Append {
            prev_index: *prev_index,
            prev_term: *prev_term,
            entries: entries.iter().map(Into::into).collect(),
            commit: *commit,
        }),
        &Message::AppendResp {
            success,
            index,
            hint_index,
            hint_term,
            repairing,
            incarnation,
        } => Msg::AppendResp(e::AppendResp {
            success,
            index,
            hint_index,
            hint_term,
            repairing,
            incarnation,
        }),
        &Message::Heartbeat { commit, ctx } => Msg::Heartbeat(e::Heartbeat { commit, ctx }),
        &Message::HeartbeatResp {
            ctx,
            repairing,
            incarnation,
            disk,
        } => Msg::HeartbeatResp(e::HeartbeatResp {
            ctx,
            repairing,
            incarnation,
            degraded: disk != DiskState::Healthy,
            disk_failing: disk == DiskState::Failing,
        }),
        Message::Snapshot { snapshot } => Msg::Snapshot(e::Snapshot {
            meta: Some((&snapshot.meta).into()),
            data: snapshot.data.clone(),
        }),
        Message::TimeoutNow => Msg::TimeoutNow(e::TimeoutNow {}),
    }
}

impl TryFrom<pb::Envelope> for Envelope {
    type Error = ConvertError;
    fn try_from(env: pb::Envelope) -> Result<Self, ConvertError> {
        let msg = msg_from_pb(env.msg.ok_or(ConvertError::Missing("envelope.msg"))?)?;
        Ok(Envelope {
            from: node_id("envelope.from", env.from)?,
            to: node_id("envelope.to", env.to)?,
            term: env.term,
            msg,
        })
    }
}

fn msg_from_pb(msg: Msg) -> Result<Message, ConvertError> {
    Ok(match msg {
        Msg::PreVote(m) => Message::PreVote {
            last_log_index: m.last_log_index,
            last_log_term: m.last_log_term,
        },
        Msg::PreVoteResp(m) => Message::PreVoteResp { granted: m.granted },
        Msg::Vote(m) => Message::Vote {
            last_log_index: m.last_log_index,
            last_log_term: m.last_log_term,
            transfer: m.transfer,
        },
        Msg::VoteResp(m) => Message::VoteResp { granted: m.granted },
        Msg::Append(m) => append_from_pb(m)?,
        Msg::AppendResp(m) => Message::AppendResp {
            success: m.success,
            index: m.index,
            hint_index: m.hint_index,
            hint_term: m.hint_term,
            repairing: m.repairing,
            incarnation: m.incarnation,
        },
        Msg::Heartbeat(m) => Message::Heartbeat {
            commit: m.commit,
            ctx: m.ctx,
        },
        Msg::HeartbeatResp(m) => Message::HeartbeatResp {
            ctx: m.ctx,
            repairing: m.repairing,
            incarnation: m.incarnation,
            disk: match (m.disk_failing, m.degraded) {
                (true, true) => DiskState::Failing,
                (false, true) => DiskState::Degraded,
                (false, false) => DiskState::Healthy,
                // A failing disk is also unhealthy: that is what older
                // versions, which read only `degraded`, must see.
                (true, false) => {
                    return Err(invalid("disk_failing", "set without degraded"));
                }
            },
        },
        Msg::Snapshot(m) => {
            let meta = m
                .meta
                .ok_or(ConvertError::Missing("snapshot.meta"))?
                .try_into()?;
            Message::Snapshot {
                snapshot: Snapshot { meta, data: m.data },
            }
        }
        Msg::TimeoutNow(_) => Message::TimeoutNow,
    })
}

fn append_from_pb(m: pb::envelope::Append) -> Result<Message, ConvertError> {
    let entries = m
        .entries
        .into_iter()
        .map(Entry::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    // Entries must be consecutive and follow prev_index; anything else is a peer bug
    // the core should never see.
    for (i, e) in entries.iter().enumerate() {
        if Some(e.index) != m.prev_index.checked_add(i as u64 + 1) {
            return Err(invalid(
                "append.entries",
                "entry indexes are not consecutive",
            ));
        }
    }
    Ok(Message::Append {
        prev_index: m.prev_index,
        prev_term: m.prev_term,
        entries,
        commit: m.commit,
    })
}

// ------------------------------------------------------------------ cluster RPCs

impl From<&WriteRequest> for pb::WriteRequestPb {
    fn from(r: &WriteRequest) -> Self {
        use pb::write_concern::Kind;
        let w = r.w.map(|w| pb::WriteConcern {
            kind: Some(match w {
                WriteConcern::Count(n) => Kind::Count(n as u64),
                WriteConcern::Majority => Kind::Majority(pb::Empty {}),
                WriteConcern::All => Kind::All(pb::Empty {}),
            }),
        });
        pb::WriteRequestPb {
            message: r.message.clone(),
            w,
            timeout_ms: r.timeout_ms,
            idempotency_key: r.idempotency_key.clone(),
            batch: r.batch.is_some(),
            messages: r.batch.clone().unwrap_or_default(),
            if_next_offset: r.if_next_offset,
            op: r.op.as_ref().map(log_op_pb),
        }
    }
}

impl TryFrom<pb::WriteRequestPb> for WriteRequest {
    type Error = ConvertError;
    fn try_from(r: pb::WriteRequestPb) -> Result<Self, ConvertError> {
        use pb::write_concern::Kind;
        let w = match r.w {
            None => None,
            Some(w) => Some(match w.kind.ok_or(ConvertError::Missing("w.kind"))? {
                Kind::Count(n) => WriteConcern::Count(to_usize("w.count", n)?),
                Kind::Majority(_) => WriteConcern::Majority,
                Kind::All(_) => WriteConcern::All,
            }),
        };
        if !r.batch && !r.messages.is_empty() {
            return Err(invalid("messages", "given without batch"));
        }
        Ok(WriteRequest {
            message: r.message,
            batch: r.batch.then_some(r.messages),
            if_next_offset: r.if_next_offset,
            op: r.op.map(log_op).transpose()?,
            w,
            timeout_ms: r.timeout_ms,
            idempotency_key: r.idempotency_key,
        })
    }
}

fn log_op_pb(op: &LogOp) -> pb::LogOpPb {
    use pb::log_op_pb::Kind;
    let kind = match op {
        LogOp::Trim { before } => Kind::TrimBefore(*before),
        LogOp::SetCursor {
            name,
            offset,
            force,
        } => Kind::SetCursor(pb::CursorSetPb {
            name: name.clone(),
            offset: *offset,
            force: *force,
        }),
        LogOp::DeleteCursor { name } => Kind::DeleteCursor(name.clone()),
    };
    pb::LogOpPb { kind: Some(kind) }
}

fn log_op(op: pb::LogOpPb) -> Result<LogOp, ConvertError> {
    use pb::log_op_pb::Kind;
    Ok(match op.kind.ok_or(ConvertError::Missing("op.kind"))? {
        Kind::TrimBefore(before) => LogOp::Trim { before },
        Kind::SetCursor(c) => LogOp::SetCursor {
            name: c.name,
            offset: c.offset,
            force: c.force,
        },
        Kind::DeleteCursor(name) => LogOp::DeleteCursor { name },
    })
}

fn to_usize(field: &'static str, n: u64) -> Result<usize, ConvertError> {
    usize::try_from(n).map_err(|_| invalid(field, "too large"))
}

impl From<&WriteResult> for pb::WriteResultPb {
    fn from(r: &WriteResult) -> Self {
        pb::WriteResultPb {
            offset: r.offset,
            index: r.index,
            term: r.term,
            acks: r.acks as u64,
            committed: r.committed,
            duplicate: r.duplicate,
            passed_cursors: r.passed_cursors.clone(),
        }
    }
}

impl TryFrom<pb::WriteResultPb> for WriteResult {
    type Error = ConvertError;
    fn try_from(r: pb::WriteResultPb) -> Result<Self, ConvertError> {
        Ok(WriteResult {
            offset: r.offset,
            index: r.index,
            term: r.term,
            acks: to_usize("acks", r.acks)?,
            committed: r.committed,
            duplicate: r.duplicate,
            passed_cursors: r.passed_cursors,
        })
    }
}

/// The reply to a forwarded write.
pub(crate) fn write_reply(res: Result<WriteResult, ApiError>) -> pb::WriteReplyPb {
    use pb::write_reply_pb::Result as R;
    let result = match res {
        Ok(r) => R::Ok((&r).into()),
        Err(e) => R::Error((&e).into()),
    };
    pb::WriteReplyPb {
        result: Some(result),
    }
}

pub(crate) fn from_write_reply(
    r: pb::WriteReplyPb,
) -> Result<Result<WriteResult, ApiError>, ConvertError> {
    use pb::write_reply_pb::Result as R;
    Ok(
        match r
            .result
            .ok_or(ConvertError::Missing("write_reply.result"))?
        {
            R::Ok(r) => Ok(r.try_into()?),
            R::Error(e) => Err(e.into()),
        },
    )
}

pub(crate) fn read_index_reply(res: Result<u64, ApiError>) -> pb::ReadIndexReply {
    use pb::read_index_reply::Result as R;
    let result = match res {
        Ok(index) => R::Index(index),
        Err(e) => R::Error((&e).into()),
    };
    pb::ReadIndexReply {
        result: Some(result),
    }
}

pub(crate) fn from_read_index_reply(
    r: pb::ReadIndexReply,
) -> Result<Result<u64, ApiError>, ConvertError> {
    use pb::read_index_reply::Result as R;
    Ok(
        match r
            .result
            .ok_or(ConvertError::Missing("read_index_reply.result"))?
        {
            R::Index(i) => Ok(i),
            R::Error(e) => Err(e.into()),
        },
    )
}

impl From<&ApiError> for pb::ApiErrorPb {
    fn from(e: &ApiError) -> Self {
        let mut pb = pb::ApiErrorPb {
            code: e.code().to_string(),
            message: e.to_string(),
            ..Default::default()
        };
        match e {
            ApiError::InvalidRequest(s)
            | ApiError::NoQuorum(s)
            | ApiError::Storage(s)
            | ApiError::NotFound(s)
            | ApiError::Internal(s)
            | ApiError::RequestTimeout(s) => pb.message = s.clone(),
            ApiError::BatchTooLarge(s) => {
                pb.code = "batch_too_large".into();
                pb.message = s.clone();
            }
            ApiError::OffsetConflict { next_offset: o }
            | ApiError::OffsetTrimmed { first_offset: o }
            | ApiError::CursorRegression { current: o } => pb.offset = Some(*o),
            ApiError::TooManyCursors { max } => pb.limit = Some(*max),
            ApiError::OutcomeUnknown(s) => {
                pb.code = "outcome_unknown".into();
                pb.message = s.clone();
            }
            ApiError::PayloadTooLarge { limit } => pb.limit = Some(*limit as u64),
            ApiError::NoLeader { leader_hint } => pb.leader_hint = leader_hint.clone(),
            ApiError::WriteTimeout {
                offset,
                index,
                acks,
                w,
            } => {
                pb.offset = Some(*offset);
                pb.index = Some(*index);
                pb.acks = Some(*acks as u64);
                pb.w = Some(*w as u64);
            }
            ApiError::ShuttingDown => {}
        }
        pb
    }
}

/// Never fails: an unknown code or a missing field becomes `Internal` or zero, so a
/// newer peer's error still reaches the client as an error.
impl From<pb::ApiErrorPb> for ApiError {
    fn from(e: pb::ApiErrorPb) -> Self {
        let n = |v: Option<u64>| v.unwrap_or(0);
        let size = |v: Option<u64>| usize::try_from(n(v)).unwrap_or(usize::MAX);
        match e.code.as_str() {
            "invalid_request" => ApiError::InvalidRequest(e.message),
            "payload_too_large" => ApiError::PayloadTooLarge {
                limit: size(e.limit),
            },
            "no_quorum" => ApiError::NoQuorum(e.message),
            "no_leader" => ApiError::NoLeader {
                leader_hint: e.leader_hint,
            },
            "write_timeout" => ApiError::WriteTimeout {
                offset: n(e.offset),
                index: n(e.index),
                acks: size(e.acks),
                w: size(e.w),
            },
            "storage_error" => ApiError::Storage(e.message),
            "not_found" => ApiError::NotFound(e.message),
            "shutting_down" => ApiError::ShuttingDown,
            "internal" => ApiError::Internal(e.message),
            "request_timeout" => ApiError::RequestTimeout(e.message),
            "outcome_unknown" => ApiError::OutcomeUnknown(e.message),
            "batch_too_large" => ApiError::BatchTooLarge(e.message),
            "offset_conflict" => ApiError::OffsetConflict {
                next_offset: n(e.offset),
            },
            "offset_trimmed" => ApiError::OffsetTrimmed {
                first_offset: n(e.offset),
            },
            "cursor_regression" => ApiError::CursorRegression {
                current: n(e.offset),
            },
            "too_many_cursors" => ApiError::TooManyCursors { max: n(e.limit) },
            other => ApiError::Internal(format!("{other}: {}", e.message)),
        }
    }
}

impl From<&JoinRequest> for pb::JoinRequest {
    fn from(r: &JoinRequest) -> Self {
        pb::JoinRequest {
            node_id: r.node_id.clone(),
            grpc_addr: r.grpc_addr.clone(),
            http_addr: r.http_addr.clone(),
        }
    }
}

impl TryFrom<pb::JoinRequest> for JoinRequest {
    type Error = ConvertError;
    fn try_from(r: pb::JoinRequest) -> Result<Self, ConvertError> {
        if r.grpc_addr.is_empty() {
            return Err(ConvertError::Missing("join.grpc_addr"));
        }
        Ok(JoinRequest {
            node_id: node_id("join.node_id", r.node_id)?,
            grpc_addr: r.grpc_addr,
            http_addr: r.http_addr,
        })
    }
}

impl From<JoinOutcome> for pb::JoinReply {
    fn from(o: JoinOutcome) -> Self {
        pb::JoinReply {
            ok: o.ok,
            leader_id: o.leader_id.unwrap_or_default(),
            leader_grpc_addr: o.leader_grpc_addr.unwrap_or_default(),
            error: o.error.unwrap_or_default(),
            cluster_id: o.cluster_id,
        }
    }
}

impl From<pb::JoinReply> for JoinOutcome {
    fn from(r: pb::JoinReply) -> Self {
        let opt = |s: String| (!s.is_empty()).then_some(s);
        JoinOutcome {
            ok: r.ok,
            leader_id: opt(r.leader_id),
            leader_grpc_addr: opt(r.leader_grpc_addr),
            error: opt(r.error),
            cluster_id: r.cluster_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn membership() -> Membership {
        let m = |g: &str, v| Member {
            grpc_addr: g.into(),
            http_addr: format!("h{g}"),
            voter: v,
        };
        Membership {
            members: [
                ("n1".to_string(), m("a:1", true)),
                ("n2".to_string(), m("b:2", false)),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn all_messages() -> Vec<Message> {
        let entries = vec![
            Entry {
                index: 6,
                term: 2,
                payload: EntryPayload::Noop,
            },
            Entry {
                index: 7,
                term: 2,
                payload: EntryPayload::Command(Bytes::from_static(b"x")),
            },
            Entry {
                index: 8,
                term: 3,
                payload: EntryPayload::Membership(membership()),
            },
        ];
        let meta = SnapshotMeta {
            index: 9,
            term: 3,
            membership: membership(),
        };
        vec![
            Message::PreVote {
                last_log_index: 1,
                last_log_term: 2,
            },
            Message::PreVoteResp { granted: true },
            Message::Vote {
                last_log_index: 3,
                last_log_term: 4,
                transfer: true,
            },
            Message::VoteResp { granted: false },
            Message::Append {
                prev_index: 5,
                prev_term: 1,
                entries,
                commit: 4,
            },
            Message::AppendResp {
                success: false,
                index: 5,
                hint_index: 2,
                hint_term: 1,
                repairing: true,
                incarnation: 3,
            },
            Message::Heartbeat { commit: 7, ctx: 8 },
            Message::HeartbeatResp {
                ctx: 8,
                repairing: true,
                incarnation: 4,
                disk: DiskState::Failing,
            },
            Message::Snapshot {
                snapshot: Snapshot {
                    meta,
                    data: Bytes::from_static(b"snap"),
                },
            },
            Message::TimeoutNow,
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for msg in all_messages() {
            let env = Envelope {
                from: "n1".into(),
                to: "n2".into(),
                term: 9,
                msg,
            };
            let back = Envelope::try_from(pb::Envelope::from(&env)).unwrap();
            assert_eq!(back, env);
        }
    }

    #[test]
    fn invalid_envelopes_are_errors() {
        let good = pb::Envelope::from(&Envelope {
            from: "n1".into(),
            to: "n2".into(),
            term: 1,
            msg: Message::TimeoutNow,
        });
        let missing_msg = pb::Envelope {
            msg: None,
            ..good.clone()
        };
        assert_eq!(
            Envelope::try_from(missing_msg),
            Err(ConvertError::Missing("envelope.msg"))
        );
        let no_from = pb::Envelope {
            from: String::new(),
            ..good.clone()
        };
        assert!(Envelope::try_from(no_from).is_err());
        let no_payload = pb::Envelope {
            msg: Some(Msg::Append(pb::envelope::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![pb::Entry {
                    index: 1,
                    term: 1,
                    payload: None,
                }],
                commit: 0,
            })),
            ..good.clone()
        };
        assert!(Envelope::try_from(no_payload).is_err());
        let failing_only = pb::Envelope {
            msg: Some(Msg::HeartbeatResp(pb::envelope::HeartbeatResp {
                ctx: 1,
                repairing: false,
                incarnation: 0,
                degraded: false,
                disk_failing: true,
            })),
            ..good.clone()
        };
        assert_eq!(
            Envelope::try_from(failing_only),
            Err(invalid("disk_failing", "set without degraded"))
        );
        let gap = pb::Envelope {
            msg: Some(Msg::Append(pb::envelope::Append {
                prev_index: u64::MAX,
                prev_term: 0,
                entries: vec![pb::Entry {
                    index: 0,
                    term: 1,
                    payload: Some(pb::entry::Payload::Noop(pb::Empty {})),
                }],
                commit: 0,
            })),
            ..good
        };
        assert!(Envelope::try_from(gap).is_err());
    }

    #[test]
    fn duplicate_members_are_rejected() {
        let mut pb = pb::Membership::from(&membership());
        pb.members.push(pb.members[0].clone());
        assert!(Membership::try_from(pb).is_err());
    }

    #[test]
    fn api_errors_round_trip() {
        let errors = vec![
            ApiError::InvalidRequest("bad w".into()),
            ApiError::PayloadTooLarge { limit: 10 },
            ApiError::NoQuorum("2 of 5".into()),
            ApiError::NoLeader {
                leader_hint: Some("n3".into()),
            },
            ApiError::NoLeader { leader_hint: None },
            ApiError::WriteTimeout {
                offset: 1,
                index: 2,
                acks: 3,
                w: 4,
            },
            ApiError::Storage("disk".into()),
            ApiError::NotFound("n9".into()),
            ApiError::ShuttingDown,
            ApiError::Internal("oops".into()),
            ApiError::BatchTooLarge("too many".into()),
            ApiError::OffsetConflict { next_offset: 7 },
            ApiError::OffsetTrimmed { first_offset: 8 },
            ApiError::CursorRegression { current: 9 },
            ApiError::TooManyCursors { max: 10 },
        ];
        for e in errors {
            assert_eq!(ApiError::from(pb::ApiErrorPb::from(&e)), e);
        }
        let unknown = pb::ApiErrorPb {
            code: "new_code".into(),
            ..Default::default()
        };
        assert!(matches!(ApiError::from(unknown), ApiError::Internal(_)));
    }

    #[test]
    fn write_requests_round_trip() {
        for w in [
            None,
            Some(WriteConcern::Count(2)),
            Some(WriteConcern::Majority),
            Some(WriteConcern::All),
        ] {
            let req = WriteRequest {
                message: "hi".into(),
                batch: None,
                if_next_offset: None,
                op: None,
                w,
                timeout_ms: Some(0),
                idempotency_key: Some("k".into()),
            };
            assert_eq!(
                WriteRequest::try_from(pb::WriteRequestPb::from(&req)).unwrap(),
                req
            );
            let batch = WriteRequest {
                message: String::new(),
                batch: Some(vec!["a".into(), String::new()]),
                if_next_offset: Some(4),
                ..req
            };
            let back = WriteRequest::try_from(pb::WriteRequestPb::from(&batch)).unwrap();
            assert_eq!(back, batch);
            for op in [
                LogOp::Trim { before: 3 },
                LogOp::SetCursor {
                    name: "c".into(),
                    offset: 2,
                    force: true,
                },
                LogOp::DeleteCursor { name: "c".into() },
            ] {
                let req = WriteRequest::op(op);
                let back = WriteRequest::try_from(pb::WriteRequestPb::from(&req)).unwrap();
                assert_eq!(back, req);
            }
        }
    }
}
