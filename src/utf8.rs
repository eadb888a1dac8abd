//! [`Utf8Bytes`]: a message's text as shared bytes.
//!
//! Why: a write's message travels from the HTTP body to the controller (and, on a
//! follower, on to the leader). As a `String` it was copied out of the body by the
//! JSON parser and once more when the node kept a copy of the request in case it
//! had to forward it: two allocations and two copies of every message, 64 KiB
//! each for a 64 KiB message. As a slice of the body's `Bytes` it is neither
//! copied nor allocated (a string with escapes is still unescaped into a buffer of
//! its own), and a clone is a reference count.
//!
//! Invariant: the bytes are valid UTF-8 (every constructor takes a `str` or a
//! `String`), so [`Utf8Bytes::as_str`] needs no check.

use bytes::Bytes;
use std::fmt;
use std::ops::Deref;

/// Valid UTF-8 in a [`Bytes`]: a `str` whose clones share one buffer.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// `s` as a slice of `src` when it lies inside `src` (a string a parser
    /// borrowed from that buffer): no copy. Otherwise a copy of `s`.
    pub fn within(src: &Bytes, s: &str) -> Self {
        let (start, end) = (src.as_ptr() as usize, src.as_ptr() as usize + src.len());
        let p = s.as_ptr() as usize;
        if p >= start && p + s.len() <= end {
            Utf8Bytes(src.slice_ref(s.as_bytes()))
        } else {
            Utf8Bytes::from(s)
        }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes a `str` or a `String` (the invariant
        // above), and `Bytes` never changes its contents.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        Utf8Bytes::from(s.as_str())
    }
}

impl From<Utf8Bytes> for String {
    fn from(s: Utf8Bytes) -> Self {
        s.as_str().to_owned()
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_str_inside_the_buffer_is_a_slice_of_it() {
        let src = Bytes::from_static(b"{\"message\":\"hello\"}");
        let s = std::str::from_utf8(&src[12..17]).unwrap();
        let t = Utf8Bytes::within(&src, s);
        assert_eq!(t, "hello");
        assert_eq!(t.as_bytes().as_ptr(), src[12..].as_ptr(), "not copied");
    }

    #[test]
    fn a_str_outside_the_buffer_is_copied() {
        let src = Bytes::from_static(b"abc");
        let other = String::from("unescaped \"text\"");
        let t = Utf8Bytes::within(&src, &other);
        assert_eq!(t, other.as_str());
        assert_ne!(t.as_bytes().as_ptr(), other.as_ptr());
        // An empty str at the buffer's end is inside it too (no panic).
        let end = std::str::from_utf8(&src[3..]).unwrap();
        assert_eq!(Utf8Bytes::within(&src, end), "");
    }
}
