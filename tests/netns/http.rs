//! A minimal blocking HTTP/1.1 client over `std::net`, one connection per request.
//!
//! Why not reqwest: the history needs to know exactly whether a request could
//! have reached the server. Here a failed connect is [`HttpError::NotSent`]
//! (nothing was written, so nothing can have been appended) and anything that
//! fails after the connection was made is [`HttpError::Unknown`]. No pooling, no
//! hidden retries, and sockets belong to the calling thread's network namespace.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
    pub json: Value,
}

impl Resp {
    /// `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.json
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

#[derive(Clone, Debug)]
pub enum HttpError {
    /// The connection was never made: the request did not reach the server.
    NotSent(String),
    /// Failed after connecting: the server may have acted on the request.
    Unknown(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::NotSent(e) => write!(f, "not sent: {e}"),
            HttpError::Unknown(e) => write!(f, "{e}"),
        }
    }
}

/// Longest a connect may take (a SYN to a partitioned or stopped host gets no answer).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// Sends one request to `addr` and reads the whole answer, within `timeout`.
pub fn request(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    timeout: Duration,
) -> Result<Resp, HttpError> {
    let start = Instant::now();
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| HttpError::NotSent(format!("bad address {addr}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT.min(timeout))
        .map_err(|e| HttpError::NotSent(format!("connect {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let deadline = start + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| HttpError::Unknown(format!("timed out after {timeout:?}")))
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    if let Some(b) = body {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        );
    } else {
        req += "\r\n";
    }
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(|e| HttpError::Unknown(e.to_string()))?;
    stream
        .write_all(req.as_bytes())
        .map_err(|e| HttpError::Unknown(format!("send: {e}")))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(done) = parse(&buf)? {
            return Ok(done);
        }
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|e| HttpError::Unknown(e.to_string()))?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return match parse_eof(&buf)? {
                    Some(r) => Ok(r),
                    None => Err(HttpError::Unknown(format!(
                        "connection closed after {} bytes of the answer",
                        buf.len()
                    ))),
                }
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HttpError::Unknown(format!("timed out after {timeout:?}")))
            }
            Err(e) => return Err(HttpError::Unknown(format!("receive: {e}"))),
        }
    }
}

struct Head {
    status: u16,
    body_start: usize,
    content_length: Option<usize>,
    chunked: bool,
}

fn head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Unknown(format!("bad status line {status_line:?}")))?;
    let mut content_length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            content_length = v.parse().ok();
        } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    Ok(Some(Head {
        status,
        body_start: end + 4,
        content_length,
        chunked,
    }))
}

fn finish(status: u16, body: &[u8]) -> Resp {
    let body = String::from_utf8_lossy(body).into_owned();
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    Resp { status, body, json }
}

/// A complete answer in `buf`, if there is one yet.
fn parse(buf: &[u8]) -> Result<Option<Resp>, HttpError> {
    let Some(h) = head(buf)? else {
        return Ok(None);
    };
    let rest = &buf[h.body_start..];
    if h.chunked {
        return Ok(dechunk(rest).map(|b| finish(h.status, &b)));
    }
    match h.content_length {
        Some(n) if rest.len() >= n => Ok(Some(finish(h.status, &rest[..n]))),
        _ => Ok(None),
    }
}

/// The answer at end of stream (a body without length ends with the connection).
fn parse_eof(buf: &[u8]) -> Result<Option<Resp>, HttpError> {
    let Some(h) = head(buf)? else {
        return Ok(None);
    };
    if h.chunked || h.content_length.is_some() {
        return parse(buf);
    }
    Ok(Some(finish(h.status, &buf[h.body_start..])))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_answers() {
        let r = parse(b"HTTP/1.1 201 Created\r\ncontent-length: 11\r\n\r\n{\"offset\":3}")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, "{\"offset\":3");
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.json["a"], 1);
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab")
            .unwrap()
            .is_none());
    }
}
