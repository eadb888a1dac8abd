//! What a `Command` log entry carries, and its byte encoding.
//!
//! Why versioned: entries written by older nodes stay in WALs and snapshots are
//! re-applied on restart, so every encoding ever written must keep decoding to
//! the same command. The first byte tells them apart:
//! - `0` / `1`: the original single write (`[has_key u8][klen u32][key][message]`);
//! - `2`: an append of one or more messages, with an optional condition and the
//!   leader's clock;
//! - `3`: a trim; `4`: a cursor set; `5`: a cursor delete;
//! - `6`: one of `3`..=`5` under an idempotency key (`[6][klen u32][key][inner]`).
//!
//! Invariants: `decode(encode(c)) == c`; decoding never panics and answers `None`
//! for anything malformed (such an entry is applied as a no-op on every node).
//! Decoding an append takes slices of the entry's buffer: no message is copied.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const TAG_APPEND: u8 = 2;
const TAG_TRIM: u8 = 3;
const TAG_CURSOR_SET: u8 = 4;
const TAG_CURSOR_DELETE: u8 = 5;
const TAG_KEYED: u8 = 6;

/// Messages appended together: consecutive offsets, all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    pub key: Option<String>,
    /// Lands only if the log's next offset is exactly this when applied.
    pub if_next_offset: Option<u64>,
    /// The proposing leader's wall clock (ms since the epoch); 0 when unknown
    /// (entries from before it was carried). Retention by age reads only this.
    pub ts_ms: u64,
    pub messages: Vec<Bytes>,
}

/// One state machine command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Append(Append),
    /// Remove every message below `before`. A policy trim (`by_policy`) never
    /// passes the lowest cursor; an explicit one may.
    Trim {
        before: u64,
        by_policy: bool,
    },
    /// Set a cursor; refused when it would move back without `force`, or when it
    /// is new and `max_cursors` exist already (the proposer's limit, carried so
    /// every node decides alike).
    SetCursor {
        name: String,
        offset: u64,
        force: bool,
        max_cursors: u64,
    },
    DeleteCursor {
        name: String,
    },
    /// A trim or cursor command under an idempotency key (a follower forwards
    /// one with an internal key and may re-send it across leader changes): once
    /// one under `key` changed the log, another changes nothing.
    Keyed {
        key: String,
        op: Box<Command>,
    },
}

impl Command {
    /// A single unconditional write (the original encoding).
    pub fn single(key: Option<String>, message: Bytes) -> Command {
        Command::Append(Append {
            key,
            if_next_offset: None,
            ts_ms: 0,
            messages: vec![message],
        })
    }

    /// `op` under `key`, if there is one (`op` must be a trim or cursor command).
    pub fn keyed(key: Option<String>, op: Command) -> Command {
        match key {
            Some(key) => Command::Keyed {
                key,
                op: Box::new(op),
            },
            None => op,
        }
    }

    pub fn encode(&self) -> Bytes {
        match self {
            Command::Keyed { key, op } => {
                let inner = op.encode();
                let mut b = BytesMut::with_capacity(5 + key.len() + inner.len());
                b.put_u8(TAG_KEYED);
                b.put_u32_le(key.len() as u32);
                b.put_slice(key.as_bytes());
                b.put_slice(&inner);
                b.freeze()
            }
            Command::Append(a) => encode_append(a),
            Command::Trim { before, by_policy } => {
                let mut b = BytesMut::with_capacity(10);
                b.put_u8(TAG_TRIM);
                b.put_u64_le(*before);
                b.put_u8(u8::from(*by_policy));
                b.freeze()
            }
            Command::SetCursor {
                name,
                offset,
                force,
                max_cursors,
            } => {
                let mut b = BytesMut::with_capacity(18 + name.len());
                b.put_u8(TAG_CURSOR_SET);
                b.put_u64_le(*offset);
                b.put_u8(u8::from(*force));
                b.put_u64_le(*max_cursors);
                b.put_slice(name.as_bytes());
                b.freeze()
            }
            Command::DeleteCursor { name } => {
                let mut b = BytesMut::with_capacity(1 + name.len());
                b.put_u8(TAG_CURSOR_DELETE);
                b.put_slice(name.as_bytes());
                b.freeze()
            }
        }
    }

    /// Decode; `None` for bytes that are not a command (never panics).
    pub fn decode(mut b: Bytes) -> Option<Command> {
        let tag = *b.first()?;
        match tag {
            0 | 1 => decode_legacy(b),
            TAG_APPEND => decode_append(b),
            TAG_TRIM => {
                if b.len() != 10 {
                    return None;
                }
                b.advance(1);
                let before = b.get_u64_le();
                let by_policy = b.get_u8() == 1;
                Some(Command::Trim { before, by_policy })
            }
            TAG_CURSOR_SET => {
                if b.len() < 18 {
                    return None;
                }
                b.advance(1);
                let offset = b.get_u64_le();
                let force = b.get_u8() == 1;
                let max_cursors = b.get_u64_le();
                let name = String::from_utf8(b.to_vec()).ok()?;
                Some(Command::SetCursor {
                    name,
                    offset,
                    force,
                    max_cursors,
                })
            }
            TAG_CURSOR_DELETE => {
                b.advance(1);
                let name = String::from_utf8(b.to_vec()).ok()?;
                Some(Command::DeleteCursor { name })
            }
            TAG_KEYED => decode_keyed(b),
            _ => None,
        }
    }

    /// How many messages the command appends if it lands (0 for others), read
    /// without decoding the messages.
    pub fn message_count(data: &[u8]) -> u64 {
        match data.first() {
            Some(0 | 1) => 1,
            Some(&TAG_APPEND) => append_header(data).map_or(0, |(_, _, _, n, _)| n as u64),
            _ => 0,
        }
    }
}

/// What an append entry may do, read from its header without decoding its
/// messages: `(key, conditional, message count)`; `None` for other commands.
pub fn append_shape(data: &[u8]) -> Option<(Option<&str>, bool, u64)> {
    match *data.first()? {
        tag @ (0 | 1) => {
            let klen = u32::from_le_bytes(data.get(1..5)?.try_into().ok()?) as usize;
            let key = std::str::from_utf8(data.get(5..5usize.checked_add(klen)?)?).ok()?;
            Some(((tag == 1).then_some(key), false, 1))
        }
        TAG_APPEND => {
            let (flags, key_range, _, count, _) = append_header(data)?;
            let key = std::str::from_utf8(data.get(key_range)?).ok()?;
            Some((
                (flags & 1 == 1).then_some(key),
                flags & 2 == 2,
                u64::from(count),
            ))
        }
        _ => None,
    }
}

fn encode_append(a: &Append) -> Bytes {
    let msgs: Vec<&[u8]> = a.messages.iter().map(|m| &m[..]).collect();
    encode_append_parts(a.key.as_deref(), a.if_next_offset, a.ts_ms, &msgs)
}

/// The encoding of an [`Append`] made of borrowed parts (each message is
/// copied once, into the entry).
pub fn encode_append_parts(
    key: Option<&str>,
    if_next_offset: Option<u64>,
    ts_ms: u64,
    messages: &[&[u8]],
) -> Bytes {
    let k = key.unwrap_or("");
    let size: usize = messages.iter().map(|m| m.len() + 4).sum();
    let mut b = BytesMut::with_capacity(30 + k.len() + size);
    b.put_u8(TAG_APPEND);
    let flags = u8::from(key.is_some()) | (u8::from(if_next_offset.is_some()) << 1);
    b.put_u8(flags);
    b.put_u32_le(k.len() as u32);
    b.put_slice(k.as_bytes());
    b.put_u64_le(if_next_offset.unwrap_or(0));
    b.put_u64_le(ts_ms);
    b.put_u32_le(messages.len() as u32);
    for m in messages {
        b.put_u32_le(m.len() as u32);
        b.put_slice(m);
    }
    b.freeze()
}

/// `(flags, key range, if_next, count, position of the first message)`.
fn append_header(d: &[u8]) -> Option<(u8, std::ops::Range<usize>, u64, u32, usize)> {
    let u32_at = |p: usize| Some(u32::from_le_bytes(d.get(p..p + 4)?.try_into().ok()?));
    let u64_at = |p: usize| Some(u64::from_le_bytes(d.get(p..p + 8)?.try_into().ok()?));
    let flags = *d.get(1)?;
    let klen = u32_at(2)? as usize;
    let key = 6..6usize.checked_add(klen)?;
    let if_next = u64_at(key.end)?;
    let count = u32_at(key.end + 16)?;
    Some((flags, key.clone(), if_next, count, key.end + 20))
}

fn decode_append(b: Bytes) -> Option<Command> {
    let (flags, key_range, if_next, count, start) = append_header(&b)?;
    let key = String::from_utf8(b.get(key_range.clone())?.to_vec()).ok()?;
    let ts_ms = u64::from_le_bytes(
        b.get(key_range.end + 8..key_range.end + 16)?
            .try_into()
            .ok()?,
    );
    let mut rest = b.slice(start..);
    // Each message takes at least its 4-byte length: bounds the allocation.
    if (count as usize) > rest.len() / 4 + 1 {
        return None;
    }
    let mut messages = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if rest.len() < 4 {
            return None;
        }
        let len = rest.get_u32_le() as usize;
        if rest.len() < len {
            return None;
        }
        messages.push(rest.split_to(len));
    }
    if !rest.is_empty() {
        return None;
    }
    Some(Command::Append(Append {
        key: (flags & 1 == 1).then_some(key),
        if_next_offset: (flags & 2 == 2).then_some(if_next),
        ts_ms,
        messages,
    }))
}

/// A keyed trim or cursor command; any other inner command is malformed.
fn decode_keyed(mut b: Bytes) -> Option<Command> {
    if b.len() < 5 {
        return None;
    }
    b.advance(1);
    let klen = b.get_u32_le() as usize;
    if b.len() < klen {
        return None;
    }
    let key = String::from_utf8(b.split_to(klen).to_vec()).ok()?;
    let op = match b.first()? {
        &(TAG_TRIM | TAG_CURSOR_SET | TAG_CURSOR_DELETE) => Command::decode(b)?,
        _ => return None,
    };
    Some(Command::keyed(Some(key), op))
}

fn decode_legacy(mut b: Bytes) -> Option<Command> {
    if b.len() < 5 {
        return None;
    }
    let has_key = b.get_u8() == 1;
    let klen = b.get_u32_le() as usize;
    if b.len() < klen {
        return None;
    }
    let key = String::from_utf8(b.split_to(klen).to_vec()).ok()?;
    Some(Command::single(has_key.then_some(key), b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let cmds = [
            Command::Append(Append {
                key: Some("k".into()),
                if_next_offset: Some(7),
                ts_ms: 123,
                messages: vec![Bytes::from("a"), Bytes::new(), Bytes::from("ccc")],
            }),
            Command::Append(Append {
                key: None,
                if_next_offset: None,
                ts_ms: 0,
                messages: vec![Bytes::from("x")],
            }),
            Command::Trim {
                before: 9,
                by_policy: true,
            },
            Command::SetCursor {
                name: "c-1".into(),
                offset: 4,
                force: true,
                max_cursors: 10,
            },
            Command::DeleteCursor { name: "c".into() },
            Command::keyed(
                Some("\0n1/00ff".into()),
                Command::Trim {
                    before: 3,
                    by_policy: false,
                },
            ),
            Command::keyed(
                Some("k".into()),
                Command::SetCursor {
                    name: "c".into(),
                    offset: 1,
                    force: false,
                    max_cursors: 2,
                },
            ),
            Command::keyed(
                Some(String::new()),
                Command::DeleteCursor { name: "".into() },
            ),
        ];
        for c in cmds {
            assert_eq!(Command::decode(c.encode()), Some(c.clone()));
            let n = match &c {
                Command::Append(a) => a.messages.len() as u64,
                _ => 0,
            };
            assert_eq!(Command::message_count(&c.encode()), n);
        }
    }

    #[test]
    fn the_original_encoding_still_decodes() {
        let mut b = BytesMut::new();
        b.put_u8(1);
        b.put_u32_le(1);
        b.put_slice(b"k");
        b.put_slice(b"hello");
        let c = Command::decode(b.freeze()).unwrap();
        assert_eq!(c, Command::single(Some("k".into()), Bytes::from("hello")));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let good = Command::Append(Append {
            key: Some("key".into()),
            if_next_offset: None,
            ts_ms: 1,
            messages: vec![Bytes::from("abc"), Bytes::from("de")],
        })
        .encode();
        for cut in 0..good.len() {
            assert!(Command::decode(good.slice(..cut)).is_none(), "cut at {cut}");
        }
        let mut long = BytesMut::from(&good[..]);
        long.put_u8(0);
        assert!(Command::decode(long.freeze()).is_none());
        assert!(Command::decode(Bytes::from_static(b"\x09abc")).is_none());
        assert!(Command::decode(Bytes::from_static(b"\x03\x01")).is_none());
        assert!(Command::decode(Bytes::from_static(b"\x01\xff\xff\xff\xff")).is_none());
    }

    #[test]
    fn a_keyed_command_holds_exactly_one_trim_or_cursor_command() {
        let keyed = |inner: &Command| {
            let mut b = BytesMut::new();
            b.put_u8(TAG_KEYED);
            b.put_u32_le(1);
            b.put_slice(b"k");
            b.put_slice(&inner.encode());
            b.freeze()
        };
        let append = Command::single(None, Bytes::from("m"));
        assert!(Command::decode(keyed(&append)).is_none());
        let del = Command::DeleteCursor { name: "c".into() };
        let nested = Command::keyed(Some("j".into()), del.clone());
        assert!(Command::decode(keyed(&nested)).is_none());
        let good = keyed(&Command::Trim {
            before: 1,
            by_policy: false,
        });
        for cut in 0..good.len() {
            assert!(Command::decode(good.slice(..cut)).is_none(), "cut at {cut}");
        }
        assert_eq!(
            Command::decode(keyed(&del)),
            Some(Command::keyed(Some("k".into()), del))
        );
    }
}
