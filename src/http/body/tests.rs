//! The typed parsers against the `Value` code they replaced (kept here, verbatim
//! in behaviour, as the oracle): the same answer, error text included, for every
//! body in a corpus of good, bad and odd ones.

use super::*;
use serde_json::Value;

const MAX_MESSAGE: usize = 100;
const LIMITS: BatchLimits = BatchLimits {
    max_messages: 3,
    max_bytes: 10,
};

/// The old `w` judgement of a `Value`.
fn oracle_w(v: &Value) -> Result<Option<WriteConcern>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => parse_w_str(s).map(Some),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(|n| Some(WriteConcern::Count(n)))
            .ok_or_else(|| bad_w(&n.to_string())),
        other => Err(bad_w(&other.to_string())),
    }
}

fn oracle_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("request body is not valid JSON: {e}")))
}

/// The old single-write path: parse to a `Value`, then judge it.
fn oracle_write(bytes: &[u8]) -> Result<(String, Option<WriteConcern>), ApiError> {
    let Value::Object(mut obj) = oracle_json(bytes)? else {
        return Err(invalid("request body must be a JSON object".into()));
    };
    let message = match obj.remove("message") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid("message must be a string".into())),
        None => return Err(invalid("message is missing".into())),
    };
    if message.len() > MAX_MESSAGE {
        return Err(ApiError::PayloadTooLarge { limit: MAX_MESSAGE });
    }
    let w = obj.get("w").map(oracle_w).transpose()?.flatten();
    Ok((message, w))
}

/// The old batch path.
fn oracle_batch(bytes: &[u8]) -> Result<(Vec<String>, Option<WriteConcern>), ApiError> {
    let Value::Object(mut obj) = oracle_json(bytes)? else {
        return Err(invalid("request body must be a JSON object".into()));
    };
    let list = match obj.remove("messages") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("messages must be a list of strings".into())),
        None => return Err(invalid("messages is missing".into())),
    };
    if list.is_empty() {
        return Err(invalid("messages must not be empty".into()));
    }
    if list.len() > LIMITS.max_messages {
        return Err(ApiError::BatchTooLarge(format!(
            "a batch holds at most {} messages (write.max_batch_messages), got {}",
            LIMITS.max_messages,
            list.len()
        )));
    }
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for (i, m) in list.into_iter().enumerate() {
        let Value::String(m) = m else {
            return Err(invalid(format!("messages[{i}] must be a string")));
        };
        bytes += m.len();
        out.push(m);
    }
    if bytes > LIMITS.max_bytes {
        return Err(ApiError::BatchTooLarge(format!(
            "a batch holds at most {} bytes of messages (write.max_batch_bytes), got {bytes}",
            LIMITS.max_bytes
        )));
    }
    let w = obj.get("w").map(oracle_w).transpose()?.flatten();
    Ok((out, w))
}

fn typed_write(bytes: &[u8]) -> Result<(String, Option<WriteConcern>), ApiError> {
    WriteBody::parse(bytes)?.into_message(MAX_MESSAGE)
}

fn typed_batch(bytes: &[u8]) -> Result<(Vec<String>, Option<WriteConcern>), ApiError> {
    BatchBody::parse(bytes, LIMITS.max_messages)?.into_batch(LIMITS)
}

/// Bodies for both routes: each is tried as a write and as a batch.
fn corpus() -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = [
        "",
        " ",
        "not json",
        "nul",
        "null",
        "true",
        "5",
        "-1.5e3",
        "\"message\"",
        "[]",
        "[1, 2]",
        "[{\"message\": \"x\"}]",
        "{}",
        "{\"message\": \"x\"",
        "{\"message\": \"x\"} trailing",
        "{\"message\": \"x\"}   \n",
        "{\"message\": \"x\",}",
        "{\"message\" \"x\"}",
        "{message: \"x\"}",
        r#"{"message": "hello"}"#,
        r#"{"message": ""}"#,
        r#"{"message": "caf\u00e9 \"quoted\" \\ \n"}"#,
        r#"{"message": "\ud83d\ude00"}"#,
        r#"{"message": "\ud800"}"#,
        r#"{"message": "\uZZZZ"}"#,
        "{\"message\": \"tab\there\"}",
        r#"{"message": null}"#,
        r#"{"message": 5}"#,
        r#"{"message": 1e400}"#,
        r#"{"message": true}"#,
        r#"{"message": ["a"]}"#,
        r#"{"message": {"a": 1}}"#,
        r#"{"message": 5, "message": "second wins"}"#,
        r#"{"message": "first", "message": 5}"#,
        r#"{"message": "x", "w": null}"#,
        r#"{"message": "x", "w": 0}"#,
        r#"{"message": "x", "w": 2}"#,
        r#"{"message": "x", "w": 18446744073709551615}"#,
        r#"{"message": "x", "w": 18446744073709551616}"#,
        r#"{"message": "x", "w": -1}"#,
        r#"{"message": "x", "w": 1.5}"#,
        r#"{"message": "x", "w": 1.0}"#,
        r#"{"message": "x", "w": 1e3}"#,
        r#"{"message": "x", "w": "most"}"#,
        r#"{"message": "x", "w": " Majority "}"#,
        r#"{"message": "x", "w": "all"}"#,
        r#"{"message": "x", "w": "3"}"#,
        r#"{"message": "x", "w": true}"#,
        r#"{"message": "x", "w": {}}"#,
        r#"{"message": "x", "w": {"b": [1, "two", null], "a": 1.25}}"#,
        r#"{"message": "x", "w": [1, 2]}"#,
        r#"{"w": "nope", "message": 5}"#,
        r#"{"message": "x", "w": 1, "w": "all"}"#,
        r#"{"message": "x", "other": 1e400}"#,
        r#"{"message": "x", "other": "\ud800"}"#,
        r#"{"message": "x", "other": [1, {"deep": [true, null]}], "more": {}}"#,
        r#"{"message": 5, "other": tru}"#,
        r#"{"messages": ["a", "b"]}"#,
        r#"{"messages": ["a", "b"], "w": "majority"}"#,
        r#"{"messages": []}"#,
        r#"{"messages": null}"#,
        r#"{"messages": "a"}"#,
        r#"{"messages": {"a": "b"}}"#,
        r#"{"messages": 7}"#,
        r#"{"messages": ["a", 2, "c"]}"#,
        r#"{"messages": [null]}"#,
        r#"{"messages": ["a", "b", "c", "d"]}"#,
        r#"{"messages": ["a", 2, "c", "d", 5]}"#,
        r#"{"messages": ["12345", "678901"]}"#,
        r#"{"messages": ["1234567890"]}"#,
        r#"{"messages": ["a"], "messages": ["b", "c"]}"#,
        r#"{"messages": ["a", "b"], "w": -2}"#,
        r#"{"messages": ["a", "b"], "w": 1e400}"#,
        r#"{"messages": ["a", "\ud800"]}"#,
        r#"{"message": "x", "messages": ["a"]}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    c.push(format!("{{\"message\": \"{}\"}}", "a".repeat(MAX_MESSAGE)).into_bytes());
    c.push(format!("{{\"message\": \"{}\"}}", "a".repeat(MAX_MESSAGE + 1)).into_bytes());
    c.push(format!("{{\"message\": \"{}\"}}", "\\\"".repeat(MAX_MESSAGE)).into_bytes());
    // Nesting past serde_json's recursion limit, in a skipped field and in `w`.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    c.push(format!("{{\"message\": \"x\", \"other\": {deep}}}").into_bytes());
    c.push(format!("{{\"message\": \"x\", \"w\": {deep}}}").into_bytes());
    c.push(format!("{{\"messages\": {deep}}}").into_bytes());
    // Not UTF-8, inside a kept string and inside a skipped one.
    c.push(b"{\"message\": \"\xff\"}".to_vec());
    c.push(b"{\"message\": \"x\", \"other\": \"\xc3\x28\"}".to_vec());
    c.push(b"{\"messages\": [\"\xff\"]}".to_vec());
    c
}

#[test]
fn a_write_body_gets_the_answer_the_value_code_gave() {
    for body in corpus() {
        assert_eq!(
            typed_write(&body),
            oracle_write(&body),
            "body {:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn a_batch_body_gets_the_answer_the_value_code_gave() {
    for body in corpus() {
        assert_eq!(
            typed_batch(&body),
            oracle_batch(&body),
            "body {:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn good_bodies_give_their_message_and_w() {
    assert_eq!(
        typed_write(br#"{"w": "all", "message": "hi \"there\"", "x": [1]}"#),
        Ok(("hi \"there\"".to_string(), Some(WriteConcern::All)))
    );
    assert_eq!(
        typed_batch(br#"{"messages": ["a", "bc"], "w": 2}"#),
        Ok((vec!["a".into(), "bc".into()], Some(WriteConcern::Count(2))))
    );
    let err = typed_write(br#"{"message": "x", "w": {"a": [1]}}"#).unwrap_err();
    assert_eq!(
        err,
        invalid("w must be an integer, \"majority\" or \"all\", got {\"a\":[1]}".into())
    );
}

#[test]
fn a_long_batch_keeps_no_more_strings_than_the_limit() {
    let list = vec!["\"m\""; 1000].join(",");
    let body = format!("{{\"messages\": [{list}]}}");
    let parsed = BatchBody::parse(body.as_bytes(), 3).unwrap();
    let Some(List::Items(items)) = &parsed.field else {
        panic!("a list: {parsed:?}")
    };
    assert_eq!((items.count, items.strings.len()), (1000, 3));
    assert!(matches!(
        parsed.into_batch(LIMITS),
        Err(ApiError::BatchTooLarge(m)) if m.ends_with("got 1000")
    ));
    // A list of non-strings is counted and stores nothing (it was a `Value` per
    // item before it was judged).
    let body = format!("{{\"messages\": [{}]}}", vec!["1"; 1000].join(","));
    let parsed = BatchBody::parse(body.as_bytes(), 3).unwrap();
    let Some(List::Items(items)) = &parsed.field else {
        panic!("a list: {parsed:?}")
    };
    assert_eq!(
        (items.count, items.strings.len(), items.first_not_string),
        (1000, 0, Some(0))
    );
}
