//! Protobuf bytes decoded by prost, then converted to core values (`TryFrom`).
//!
//! Properties:
//! - a valid core value converted to protobuf, encoded, decoded and converted back
//!   is the same value (and the protobuf round trip is the identity);
//! - for any bytes prost accepts, the conversion never panics; it fails exactly
//!   when an independent validity check (written here, from the proto's comments
//!   and the core's invariants) says the message is invalid;
//! - when it succeeds, converting the value back gives the same protobuf message
//!   (members sorted): nothing dropped, nothing invented;
//! - decoding never allocates more than a small multiple of the input.
use super::alloc_meter::bounded;
use super::harness::{hex, Stats};
use super::*;
use prost::Message as _;
use raftlog::api::{ApiError, WriteConcern, WriteRequest, WriteResult};
use raftlog::core::{Entry, Envelope, Message, Snapshot, SnapshotMeta};
use raftlog::transport::pb::{self, envelope::Msg};
use raftlog::transport::{JoinOutcome, JoinRequest};

/// prost grows repeated fields by doubling; an element is under 128 bytes and
/// takes 2 bytes of input or more.
const ALLOC_PER_BYTE: usize = 128;
const ALLOC_SLACK: usize = 64 * 1024;

// ---------------------------------------------------------------- generation

fn message(rng: &mut SmallRng) -> Message {
    let u = gen::u64_edge;
    match rng.gen_range(0..10) {
        0 => Message::PreVote {
            last_log_index: u(rng),
            last_log_term: u(rng),
        },
        1 => Message::PreVoteResp { granted: rng.gen() },
        2 => Message::Vote {
            last_log_index: u(rng),
            last_log_term: u(rng),
            transfer: rng.gen(),
        },
        3 => Message::VoteResp { granted: rng.gen() },
        4 | 5 => append(rng),
        6 => Message::AppendResp {
            success: rng.gen(),
            index: u(rng),
            hint_index: u(rng),
            hint_term: u(rng),
            repairing: rng.gen(),
            incarnation: rng.gen(),
        },
        7 => Message::Heartbeat {
            commit: u(rng),
            ctx: u(rng),
        },
        8 => Message::HeartbeatResp {
            ctx: u(rng),
            repairing: rng.gen(),
            incarnation: rng.gen(),
            disk: [
                raftlog::core::DiskState::Failing,
                raftlog::core::DiskState::Degraded,
                raftlog::core::DiskState::Healthy,
            ][rng.gen_range(0..3)],
        },
        _ if rng.gen() => Message::TimeoutNow,
        _ => Message::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: u(rng),
                    term: u(rng),
                    membership: gen::membership(rng),
                },
                data: gen::bytes(rng, 200),
            },
        },
    }
}

fn append(rng: &mut SmallRng) -> Message {
    let count = rng.gen_range(0..5u64);
    let prev_index = gen::u64_edge(rng).min(u64::MAX - count);
    let entries = (0..count)
        .map(|i| Entry {
            index: prev_index + 1 + i,
            term: gen::u64_edge(rng),
            payload: gen::payload(rng),
        })
        .collect();
    Message::Append {
        prev_index,
        prev_term: gen::u64_edge(rng),
        entries,
        commit: gen::u64_edge(rng),
    }
}

fn envelope(rng: &mut SmallRng) -> Envelope {
    Envelope {
        from: gen::id(rng),
        to: gen::id(rng),
        term: gen::u64_edge(rng),
        msg: message(rng),
    }
}

fn write_request(rng: &mut SmallRng) -> WriteRequest {
    let w = match rng.gen_range(0..4) {
        0 => None,
        1 => Some(WriteConcern::Majority),
        2 => Some(WriteConcern::All),
        _ => Some(WriteConcern::Count(gen::u64_edge(rng) as usize)),
    };
    WriteRequest {
        message: gen::string(rng),
        batch: None,
        if_next_offset: None,
        op: None,
        w,
        timeout_ms: rng.gen_bool(0.5).then(|| gen::u64_edge(rng)),
        idempotency_key: rng.gen_bool(0.5).then(|| gen::string(rng)),
    }
}

fn api_error(rng: &mut SmallRng) -> ApiError {
    let s = gen::string(rng);
    let n = gen::u64_edge(rng);
    match rng.gen_range(0..11) {
        0 => ApiError::InvalidRequest(s),
        1 => ApiError::PayloadTooLarge { limit: n as usize },
        2 => ApiError::NoQuorum(s),
        3 => ApiError::NoLeader {
            leader_hint: rng.gen_bool(0.5).then_some(s),
        },
        4 => ApiError::WriteTimeout {
            offset: n,
            index: gen::u64_edge(rng),
            acks: gen::u64_edge(rng) as usize,
            w: gen::u64_edge(rng) as usize,
        },
        5 => ApiError::Storage(s),
        6 => ApiError::OutcomeUnknown(s),
        7 => ApiError::NotFound(s),
        8 => ApiError::ShuttingDown,
        _ => ApiError::Internal(s),
    }
}

/// A valid value of one of the converted types, encoded with prost from the
/// crate's own conversion, after checking its round trip.
pub fn valid_encoding(rng: &mut SmallRng) -> Result<Vec<u8>, String> {
    match rng.gen_range(0..8) {
        0..=3 => {
            let env = envelope(rng);
            let bytes = pb::Envelope::from(&env).encode_to_vec();
            let back = pb::Envelope::decode(&bytes[..]).map_err(|e| e.to_string())?;
            same(Envelope::try_from(back), Ok(env), "envelope round trip")?;
            Ok(bytes)
        }
        4 => {
            let req = write_request(rng);
            let bytes = pb::WriteRequestPb::from(&req).encode_to_vec();
            let back = pb::WriteRequestPb::decode(&bytes[..]).map_err(|e| e.to_string())?;
            same(
                WriteRequest::try_from(back),
                Ok(req),
                "write request round trip",
            )?;
            Ok(bytes)
        }
        5 => {
            let e = api_error(rng);
            let bytes = pb::ApiErrorPb::from(&e).encode_to_vec();
            let back = pb::ApiErrorPb::decode(&bytes[..]).map_err(|e| e.to_string())?;
            same(ApiError::from(back), e, "api error round trip")?;
            Ok(bytes)
        }
        6 => {
            let r = WriteResult {
                offset: gen::u64_edge(rng),
                index: gen::u64_edge(rng),
                term: gen::u64_edge(rng),
                acks: gen::u64_edge(rng) as usize,
                committed: rng.gen(),
                duplicate: rng.gen(),
                passed_cursors: vec![gen::string(rng)],
            };
            let bytes = pb::WriteResultPb::from(&r).encode_to_vec();
            let back = pb::WriteResultPb::decode(&bytes[..]).map_err(|e| e.to_string())?;
            same(
                WriteResult::try_from(back),
                Ok(r),
                "write result round trip",
            )?;
            Ok(bytes)
        }
        _ => {
            let j = JoinRequest {
                node_id: gen::id(rng),
                grpc_addr: gen::id(rng),
                http_addr: gen::string(rng),
            };
            let bytes = pb::JoinRequest::from(&j).encode_to_vec();
            let back = pb::JoinRequest::decode(&bytes[..]).map_err(|e| e.to_string())?;
            same(
                JoinRequest::try_from(back),
                Ok(j),
                "join request round trip",
            )?;
            Ok(bytes)
        }
    }
}

fn same<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Result<(), String> {
    if got != want {
        return Err(format!("{what}: got {got:?}, want {want:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------- mutation

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The length prefixes (start, end, value) of every length-delimited field of
/// `buf`, recursing into values that parse as messages. False if `buf` is not a
/// well-formed message.
fn length_prefixes(buf: &[u8], base: usize, out: &mut Vec<(usize, usize, u64)>) -> bool {
    let mut pos = 0;
    while pos < buf.len() {
        let Some(key) = read_varint(buf, &mut pos) else {
            return false;
        };
        let skip = match key & 7 {
            0 => read_varint(buf, &mut pos).map(|_| 0),
            1 => Some(8),
            5 => Some(4),
            2 => {
                let start = pos;
                let Some(len) = read_varint(buf, &mut pos) else {
                    return false;
                };
                if len > (buf.len() - pos) as u64 {
                    return false;
                }
                out.push((base + start, base + pos, len));
                let value = &buf[pos..pos + len as usize];
                let mut inner = Vec::new();
                if length_prefixes(value, base + pos, &mut inner) {
                    out.extend(inner);
                }
                Some(len as usize)
            }
            _ => None,
        };
        match skip {
            Some(n) if n <= buf.len() - pos => pos += n,
            _ => return false,
        }
    }
    true
}

/// Rewrites one length prefix with a wrong or huge value.
fn corrupt_length(rng: &mut SmallRng, buf: &mut Vec<u8>) -> bool {
    let mut prefixes = Vec::new();
    length_prefixes(buf, 0, &mut prefixes);
    let Some(&(start, end, len)) = prefixes.choose(rng) else {
        return false;
    };
    let bad = *[
        0,
        len.wrapping_sub(1),
        len + 1,
        len * 2 + 1,
        (buf.len() - end) as u64 + 1,
        u32::MAX as u64,
        1 << 31,
        u64::MAX,
        rng.gen(),
    ]
    .choose(rng)
    .unwrap();
    let mut varint = Vec::new();
    put_varint(&mut varint, bad);
    buf.splice(start..end, varint);
    true
}

/// Appends a field with a random number and wire type (unknown fields, wrong
/// wire types for known numbers, a repeated singular field).
fn extra_field(rng: &mut SmallRng, buf: &mut Vec<u8>) {
    let field = *[1u64, 2, 3, 4, 5, 10, 14, 18, 19, 20, 536_870_911]
        .choose(rng)
        .unwrap();
    let wire = *[0u64, 1, 2, 5, 3, 4, 7].choose(rng).unwrap();
    put_varint(buf, field << 3 | wire);
    match wire {
        0 => put_varint(buf, gen::u64_edge(rng)),
        1 => buf.extend_from_slice(&rng.gen::<u64>().to_le_bytes()),
        5 => buf.extend_from_slice(&rng.gen::<u32>().to_le_bytes()),
        2 => {
            let value = gen::bytes(rng, 40);
            put_varint(buf, value.len() as u64);
            buf.extend_from_slice(&value);
        }
        _ => {}
    }
}

/// Byte-level damage to a valid encoding; returns the kind, for the stats.
fn damage(rng: &mut SmallRng, buf: &mut Vec<u8>, donor: &[u8]) -> &'static str {
    match rng.gen_range(0..5) {
        0 if corrupt_length(rng, buf) => "length prefix",
        1 => {
            extra_field(rng, buf);
            "extra field"
        }
        _ => gen::mutate(rng, buf, donor),
    }
}

/// Semantic damage to a valid envelope: values prost accepts but the core
/// must not (or, for some, may) see.
fn invalid_envelope(rng: &mut SmallRng) -> pb::Envelope {
    let mut env = pb::Envelope::from(&envelope(rng));
    match rng.gen_range(0..6) {
        0 => env.from.clear(),
        1 => env.to.clear(),
        2 => env.msg = None,
        _ => {}
    }
    match &mut env.msg {
        Some(Msg::Append(a)) => damage_append(rng, a),
        Some(Msg::Snapshot(s)) => match rng.gen_range(0..3) {
            0 => s.meta = None,
            1 => s.meta.as_mut().unwrap().membership = None,
            _ => damage_members(rng, s.meta.as_mut().unwrap().membership.as_mut().unwrap()),
        },
        _ => {}
    }
    env
}

fn damage_append(rng: &mut SmallRng, a: &mut pb::envelope::Append) {
    if a.entries.is_empty() || rng.gen_bool(0.2) {
        a.prev_index = u64::MAX - rng.gen_range(0..2);
        a.entries.push(pb::Entry::from(&Entry {
            index: a.prev_index.wrapping_add(1),
            term: 1,
            payload: raftlog::core::EntryPayload::Noop,
        }));
        return;
    }
    let i = rng.gen_range(0..a.entries.len());
    let e = &mut a.entries[i];
    match rng.gen_range(0..4) {
        0 => e.payload = None,
        1 => e.index = e.index.wrapping_add(*[1, 2, u64::MAX].choose(rng).unwrap()),
        2 => {
            let dup = e.clone();
            a.entries.insert(i, dup);
        }
        _ => match &mut e.payload {
            Some(pb::entry::Payload::Membership(m)) => damage_members(rng, m),
            _ => e.payload = None,
        },
    }
}

fn damage_members(rng: &mut SmallRng, m: &mut pb::Membership) {
    match m.members.first().cloned() {
        Some(first) if rng.gen() => m.members.push(first),
        Some(_) => m.members[0].node_id.clear(),
        None => m.members.push(pb::Member::default()),
    }
}

// ---------------------------------------------------------------- oracles

fn members_problem(m: &pb::Membership) -> Option<String> {
    let mut seen = std::collections::BTreeSet::new();
    for pm in &m.members {
        if pm.node_id.is_empty() {
            return Some("member without id".into());
        }
        if !seen.insert(&pm.node_id) {
            return Some(format!("duplicate member {}", pm.node_id));
        }
    }
    None
}

fn entry_problem(e: &pb::Entry) -> Option<String> {
    match &e.payload {
        None => Some("entry without payload".into()),
        Some(pb::entry::Payload::Membership(m)) => members_problem(m),
        Some(_) => None,
    }
}

fn meta_problem(meta: Option<&pb::SnapshotMeta>) -> Option<String> {
    match meta.map(|m| &m.membership) {
        None => Some("snapshot without meta".into()),
        Some(None) => Some("meta without membership".into()),
        Some(Some(m)) => members_problem(m),
    }
}

/// Why this envelope must not reach the core, if it must not.
pub fn envelope_problem(env: &pb::Envelope) -> Option<String> {
    if env.from.is_empty() || env.to.is_empty() {
        return Some("no from or to".into());
    }
    let Some(msg) = &env.msg else {
        return Some("no message".into());
    };
    match msg {
        Msg::Append(a) => a.entries.iter().enumerate().find_map(|(i, e)| {
            let want = a.prev_index.checked_add(i as u64 + 1);
            if want != Some(e.index) {
                return Some(format!("entry {i} has index {}", e.index));
            }
            entry_problem(e)
        }),
        Msg::Snapshot(s) => meta_problem(s.meta.as_ref()),
        // A failing disk is an unhealthy one too (older versions read only
        // `degraded`).
        Msg::HeartbeatResp(h) if h.disk_failing && !h.degraded => {
            Some("disk_failing without degraded".into())
        }
        _ => None,
    }
}

fn sort_members(m: &mut pb::Membership) {
    m.members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
}

/// `env` as the crate would produce it from the core value: members sorted.
fn normalized(mut env: pb::Envelope) -> pb::Envelope {
    match &mut env.msg {
        Some(Msg::Append(a)) => {
            for e in &mut a.entries {
                if let Some(pb::entry::Payload::Membership(m)) = &mut e.payload {
                    sort_members(m);
                }
            }
        }
        Some(Msg::Snapshot(s)) => {
            if let Some(m) = s.meta.as_mut().and_then(|m| m.membership.as_mut()) {
                sort_members(m);
            }
        }
        _ => {}
    }
    env
}

fn check_envelope(env: pb::Envelope, stats: &mut Stats) -> Result<(), String> {
    let problem = envelope_problem(&env);
    match (Envelope::try_from(env.clone()), problem) {
        (Ok(core), None) => {
            stats.note("envelope: converted");
            same(
                pb::Envelope::from(&core),
                normalized(env),
                "envelope back to protobuf",
            )
        }
        (Err(e), Some(_)) => {
            stats.note_error("envelope rejected", e);
            Ok(())
        }
        (Ok(core), Some(p)) => Err(format!("invalid envelope ({p}) converted to {core:?}")),
        (Err(e), None) => Err(format!("valid envelope {env:?} rejected: {e}")),
    }
}

fn check_write_request(r: pb::WriteRequestPb) -> Result<(), String> {
    let invalid = r.w.as_ref().is_some_and(|w| w.kind.is_none())
        || (!r.batch && !r.messages.is_empty())
        || r.op.as_ref().is_some_and(|op| op.kind.is_none());
    match WriteRequest::try_from(r.clone()) {
        Ok(req) if !invalid => same(pb::WriteRequestPb::from(&req), r, "write request back"),
        Err(_) if invalid => Ok(()),
        other => Err(format!("write request {r:?} converted to {other:?}")),
    }
}

const KNOWN_CODES: [&str; 10] = [
    "invalid_request",
    "payload_too_large",
    "no_quorum",
    "no_leader",
    "write_timeout",
    "storage_error",
    "not_found",
    "shutting_down",
    "internal",
    "outcome_unknown",
];

fn check_api_error(p: pb::ApiErrorPb) -> Result<(), String> {
    let e = ApiError::from(p.clone());
    let code_ok = match p.code.as_str() {
        "outcome_unknown" => matches!(e, ApiError::OutcomeUnknown(_)),
        c if KNOWN_CODES.contains(&c) => e.code() == c,
        c => matches!(&e, ApiError::Internal(m) if m.contains(c)),
    };
    if !code_ok {
        return Err(format!("error code {:?} became {e:?}", p.code));
    }
    same(
        ApiError::from(pb::ApiErrorPb::from(&e)),
        e,
        "api error back",
    )
}

fn check_join(r: pb::JoinRequest) -> Result<(), String> {
    let invalid = r.node_id.is_empty() || r.grpc_addr.is_empty();
    match JoinRequest::try_from(r.clone()) {
        Ok(j) if !invalid => same(pb::JoinRequest::from(&j), r, "join request back"),
        Err(_) if invalid => Ok(()),
        other => Err(format!("join request {r:?} converted to {other:?}")),
    }
}

fn check_join_reply(r: pb::JoinReply) -> Result<(), String> {
    same(
        pb::JoinReply::from(JoinOutcome::from(r.clone())),
        r,
        "join reply back",
    )
}

fn check_write_result(r: pb::WriteResultPb) -> Result<(), String> {
    let back = WriteResult::try_from(r.clone()).map(|w| pb::WriteResultPb::from(&w));
    same(back, Ok(r), "write result back")
}

/// Decodes `buf` with prost as type `T` within the allocation bound.
fn decode<T: prost::Message + Default>(buf: &[u8], stats: &mut Stats) -> Result<Option<T>, String> {
    let res = bounded(
        "prost decode",
        buf.len(),
        ALLOC_PER_BYTE,
        ALLOC_SLACK,
        || T::decode(buf),
    )?;
    match res {
        Ok(v) => Ok(Some(v)),
        Err(_) => {
            stats.note("prost: rejected");
            Ok(None)
        }
    }
}

/// Every property that holds for any bytes: decode as each converted type,
/// convert, compare with the oracles.
pub fn check_bytes(buf: &[u8], stats: &mut Stats) -> Result<(), String> {
    if let Some(env) = decode::<pb::Envelope>(buf, stats)? {
        check_envelope(env, stats)?;
    }
    if let Some(r) = decode::<pb::WriteRequestPb>(buf, stats)? {
        check_write_request(r)?;
    }
    if let Some(e) = decode::<pb::ApiErrorPb>(buf, stats)? {
        check_api_error(e)?;
    }
    if let Some(j) = decode::<pb::JoinRequest>(buf, stats)? {
        check_join(j)?;
    }
    if let Some(r) = decode::<pb::JoinReply>(buf, stats)? {
        check_join_reply(r)?;
    }
    if let Some(r) = decode::<pb::WriteResultPb>(buf, stats)? {
        check_write_result(r)?;
    }
    Ok(())
}

pub fn case(rng: &mut SmallRng, stats: &mut Stats) -> Result<(), String> {
    let mut buf = valid_encoding(rng)?;
    let donor = valid_encoding(rng)?;
    if rng.gen_bool(0.25) {
        stats.note("proto: invalid values");
        let env = invalid_envelope(rng);
        let bytes = env.encode_to_vec();
        let back = pb::Envelope::decode(&bytes[..]).map_err(|e| e.to_string())?;
        same(&back, &env, "protobuf round trip")?;
        return check_envelope(back, stats).map_err(|e| format!("{e}; input {}", hex(&bytes)));
    }
    for _ in 0..rng.gen_range(1..4) {
        let kind = damage(rng, &mut buf, &donor);
        stats.note(format!("proto mutation: {kind}"));
    }
    check_bytes(&buf, stats).map_err(|e| format!("{e}; input {}", hex(&buf)))
}
