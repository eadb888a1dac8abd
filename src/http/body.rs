//! The write path's request bodies, parsed straight from the bytes into what the
//! handlers need (`message`, `messages`, `w`) with no `serde_json::Value` tree in
//! between: one allocation per message string instead of a map, a key string and
//! a value per field.
//!
//! Why this exact shape: the answers to bad bodies are part of the API, and they
//! must stay what they were when the body was first parsed as a `Value` and then
//! judged. So:
//! - Every value is parsed with `deserialize_any`, as `Value` does, so the same
//!   syntax errors come out at the same positions (`IgnoredAny` would skip numbers
//!   and strings without checking their range or escapes).
//! - A field of the wrong type is recorded, not an error at once: a syntax error
//!   later in the body must still win, as it did.
//! - A key given twice: the last one counts, as in a `Value` map.
//! - Unknown fields are ignored.
//!
//! Invariants: the judgements ([`WriteBody::into_message`], [`BatchBody::into_batch`])
//! give exactly the errors, in exactly the order, of the `Value` code they replace;
//! a batch stores no more than `max_messages` strings however long its list.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

use super::extract::{bad_w, invalid, parse_w_str};
use crate::api::{ApiError, WriteConcern};

/// Implements every scalar `visit_*` a JSON deserializer calls, each answering
/// `$v` (an expression that may use no argument).
macro_rules! scalars_are {
    ($v:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
}

/// A parsed body: whether it was an object, its route's field (`message` or
/// `messages`) and its `w`, each as given; judged by the route.
#[derive(Debug)]
pub struct Body<F> {
    not_object: bool,
    field: Option<F>,
    w: Option<WField>,
}

/// `POST /v1/messages`: `{"message": "...", "w": ...}`.
pub type WriteBody = Body<Text>;

/// `POST /v1/messages/batch`: `{"messages": ["...", ...], "w": ...}`.
pub type BatchBody = Body<List>;

/// The limits a batch is judged by.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most messages in one batch (`write.max_batch_messages`).
    pub max_messages: usize,
    /// Most bytes of messages in one batch (`write.max_batch_bytes`).
    pub max_bytes: usize,
}

impl WriteBody {
    /// Parses `bytes`; only invalid JSON is an error here.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        parse_with(
            bytes,
            BodySeed {
                name: "message",
                field: TextSeed,
            },
        )
    }

    /// The message (at most `max_message_bytes`) and the body's `w`, if any.
    pub fn into_message(
        self,
        max_message_bytes: usize,
    ) -> Result<(String, Option<WriteConcern>), ApiError> {
        if self.not_object {
            return Err(not_an_object());
        }
        let message = match self.field {
            Some(Text::Str(s)) => s,
            Some(Text::Other) => return Err(invalid("message must be a string".into())),
            None => return Err(invalid("message is missing".into())),
        };
        if message.len() > max_message_bytes {
            return Err(ApiError::PayloadTooLarge {
                limit: max_message_bytes,
            });
        }
        Ok((message, judge_w(self.w)?))
    }
}

impl BatchBody {
    /// Parses `bytes`, keeping at most `max_messages` strings; only invalid JSON
    /// is an error here.
    pub fn parse(bytes: &[u8], max_messages: usize) -> Result<Self, ApiError> {
        let field = ListSeed { max: max_messages };
        parse_with(
            bytes,
            BodySeed {
                name: "messages",
                field,
            },
        )
    }

    /// A non-empty list of strings within `limits`, and the body's `w`, if any.
    pub fn into_batch(
        self,
        limits: BatchLimits,
    ) -> Result<(Vec<String>, Option<WriteConcern>), ApiError> {
        if self.not_object {
            return Err(not_an_object());
        }
        let list = match self.field {
            Some(List::Items(items)) => items,
            Some(List::Other) => return Err(invalid("messages must be a list of strings".into())),
            None => return Err(invalid("messages is missing".into())),
        };
        if list.count == 0 {
            return Err(invalid("messages must not be empty".into()));
        }
        if list.count > limits.max_messages {
            return Err(ApiError::BatchTooLarge(format!(
                "a batch holds at most {} messages (write.max_batch_messages), got {}",
                limits.max_messages, list.count
            )));
        }
        if let Some(i) = list.first_not_string {
            return Err(invalid(format!("messages[{i}] must be a string")));
        }
        if list.bytes > limits.max_bytes {
            return Err(ApiError::BatchTooLarge(format!(
                "a batch holds at most {} bytes of messages (write.max_batch_bytes), got {}",
                limits.max_bytes, list.bytes
            )));
        }
        Ok((list.strings, judge_w(self.w)?))
    }
}

fn not_an_object() -> ApiError {
    invalid("request body must be a JSON object".into())
}

/// The answer for a body that is not a JSON object.
fn not_object<F>() -> Body<F> {
    Body {
        not_object: true,
        field: None,
        w: None,
    }
}

/// Runs `seed` over the whole body as `serde_json::from_slice` does (trailing
/// characters are an error), with the API's 400 for invalid JSON.
fn parse_with<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Result<S::Value, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    seed.deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| invalid(format!("request body is not valid JSON: {e}")))
}

/// `w` from the body: absent or `null` is none; an integer, `"majority"` or
/// `"all"`; anything else a 400 quoting the value as JSON.
fn judge_w(w: Option<WField>) -> Result<Option<WriteConcern>, ApiError> {
    match w {
        None | Some(WField::Null) => Ok(None),
        Some(WField::Str(s)) => parse_w_str(&s).map(Some),
        Some(WField::Count(n)) => usize::try_from(n)
            .map(|n| Some(WriteConcern::Count(n)))
            .map_err(|_| bad_w(&n.to_string())),
        Some(WField::Bad(text)) => Err(bad_w(&text)),
    }
}

// ----- the fields ---------------------------------------------------------------------

/// A field that should be a string: the string, or that it was something else.
#[derive(Debug)]
pub enum Text {
    Str(String),
    Other,
}

/// The `w` field as given.
#[derive(Debug)]
pub enum WField {
    Null,
    Str(String),
    Count(u64),
    /// Not a valid `w`: its JSON text, for the error.
    Bad(String),
}

/// The `messages` field: the strings (up to the limit), or that it was no list.
#[derive(Debug)]
pub enum List {
    Items(Items),
    Other,
}

/// A list as seen: its first strings, and what the judgement needs of the rest.
#[derive(Debug, Default)]
pub struct Items {
    /// The strings, while every element so far is one and up to the limit.
    strings: Vec<String>,
    /// Elements in the list, strings or not.
    count: usize,
    first_not_string: Option<usize>,
    /// Bytes of the strings in `strings`.
    bytes: usize,
}

/// Which top-level key a map entry is: the route's field, `w`, or another.
enum Key {
    Field,
    W,
    Other,
}

/// Classifies a key against the route's field name, without allocating.
#[derive(Clone, Copy)]
struct KeySeed(&'static str);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        Ok(match s {
            "w" => Key::W,
            _ if s == self.0 => Key::Field,
            _ => Key::Other,
        })
    }
}

/// The top-level body: `name` is the route's field, read with `field`; every
/// other key but `w` is checked and skipped.
struct BodySeed<S> {
    name: &'static str,
    field: S,
}

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for BodySeed<S> {
    type Value = Body<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for BodySeed<S> {
    type Value = Body<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Body {
            not_object: false,
            field: None,
            w: None,
        };
        while let Some(key) = map.next_key_seed(KeySeed(self.name))? {
            match key {
                Key::Field => out.field = Some(map.next_value_seed(self.field)?),
                Key::W => out.w = Some(map.next_value::<WField>()?),
                Key::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| not_object())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(not_object())
    }

    scalars_are!(not_object());
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                Ok(Text::Str(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text, E> {
                Ok(Text::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text, A::Error> {
                drain_seq(seq).map(|()| Text::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text, A::Error> {
                drain_map(map).map(|()| Text::Other)
            }
            scalars_are!(Text::Other);
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for WField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<WField, E> {
                Ok(WField::Null)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<WField, E> {
                Ok(WField::Str(s.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<WField, E> {
                Ok(WField::Count(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WField, E> {
                Ok(WField::Bad(n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<WField, E> {
                // As `Value` prints it (JSON has no NaN or infinity).
                let text = serde_json::Number::from_f64(n)
                    .map_or_else(|| n.to_string(), |n| n.to_string());
                Ok(WField::Bad(text))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<WField, E> {
                Ok(WField::Bad(b.to_string()))
            }
            // A list or an object is quoted whole in the error, as JSON: only on
            // this error path is it built as a `Value`.
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<WField, A::Error> {
                let v = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(WField::Bad(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WField, A::Error> {
                let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(WField::Bad(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a [`Text`] (a seed, so that both routes' fields read alike).
#[derive(Clone, Copy)]
pub struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Text;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Text, D::Error> {
        Text::deserialize(d)
    }
}

/// The `messages` list: strings kept up to `max` (then only counted).
#[derive(Clone, Copy)]
pub struct ListSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = List;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<List, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = List;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
        let mut items = Items {
            strings: Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max)),
            ..Items::default()
        };
        while let Some(t) = seq.next_element::<Text>()? {
            let i = items.count;
            items.count += 1;
            match t {
                Text::Str(s) if items.first_not_string.is_none() && i < self.max => {
                    items.bytes += s.len();
                    items.strings.push(s);
                }
                Text::Str(_) => {}
                Text::Other => {
                    items.first_not_string.get_or_insert(i);
                }
            }
        }
        Ok(List::Items(items))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<List, E> {
        Ok(List::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List, A::Error> {
        drain_map(map).map(|()| List::Other)
    }

    scalars_are!(List::Other);
}

/// Any JSON value, checked as `Value` would check it and dropped.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
                drain_seq(seq).map(|()| Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
                drain_map(map).map(|()| Skip)
            }
            scalars_are!(Skip);
        }
        d.deserialize_any(V)
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_key::<Skip>()?.is_some() {
        map.next_value::<Skip>()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
