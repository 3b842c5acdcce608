//! Path normalisation, done once before routing so that routing and forwarding see one path.
//!
//! RFC 3986 6.2.2: percent-encoded unreserved characters are decoded and dot segments removed
//! (5.2.4). Empty segments are merged, as nginx's `merge_slashes` does, so `//admin` cannot slip
//! past a `/admin` route. What some backend would read as a separator once decoded (`%2F`, `%5C`,
//! `\`) or as a string end (`%00`) is refused instead of guessed at.

use std::borrow::Cow;

/// Why a request path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form path (`*`, or no leading `/`).
    #[error("request target is not an absolute path")]
    NotAbsolute,
    /// `%2F`, `%5C`, `%00` or a raw backslash.
    #[error("path contains an encoded separator, a backslash or NUL")]
    EncodedSeparator,
    /// `%` not followed by two hex digits.
    #[error("path contains a malformed percent escape")]
    BadEscape,
    /// A raw byte outside printable ASCII: non-ASCII, a control character, DEL or a space
    /// (RFC 3986 3.3 allows them only percent-encoded).
    #[error("path contains a raw byte outside printable ASCII")]
    RawByte,
    /// More `..` segments than there are segments to climb.
    #[error("path climbs above the root")]
    AboveRoot,
}

/// The path namespace the proxy keeps for itself on every host.
pub const RESERVED_PREFIX: &str = "/.portcullis/";

/// True for paths in the reserved namespace. Any spelling an upstream might fold into it counts
/// (`/.PORTCULLIS/mfa`, `/.portcullis;x/mfa`), so none of them can carry a form to an upstream.
pub fn is_reserved(path: &str) -> bool {
    let stem = &RESERVED_PREFIX[..RESERVED_PREFIX.len() - 1];
    path.get(..stem.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(stem))
}

/// Returns the normalised path, borrowed when nothing had to change.
///
/// ```
/// use portcullis::path::{PathError, normalize_path};
///
/// assert_eq!(normalize_path("/a/./b/../%7Ec//d").as_deref(), Ok("/a/~c/d"));
/// assert_eq!(normalize_path("/a/../../etc/passwd"), Err(PathError::AboveRoot));
/// assert_eq!(normalize_path("/a%2Fb"), Err(PathError::EncodedSeparator));
/// ```
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(PathError::RawByte);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<String> = Vec::new();
    let mut ends_in_directory = false;
    for raw in path[1..].split('/') {
        let segment = decode_segment(raw)?;
        ends_in_directory = matches!(segment.as_str(), "" | "." | "..");
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if ends_in_directory || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The path as the most lenient common upstream reads it: fully percent-decoded, lowercase
/// (IIS), `;params` dropped from every segment (Tomcat, Spring: `/..;/` is `/../`), trailing
/// dots, spaces and control characters dropped from segment ends (Windows), then dot segments
/// removed again. Used only to find routes a request could reach on such an upstream; the path
/// forwarded is the normalised one.
///
/// ```
/// use portcullis::path::lenient_path;
///
/// assert_eq!(lenient_path("/ADMIN;jsessionid=1/x.%20").as_deref(), Ok("/admin/x"));
/// assert_eq!(lenient_path("/public/..;/admin").as_deref(), Ok("/admin"));
/// ```
pub fn lenient_path(path: &str) -> Result<String, PathError> {
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for raw in path.split('/').skip(1) {
        let mut segment = percent_decode(raw)?;
        if let Some(params) = segment.iter().position(|&b| b == b';') {
            segment.truncate(params);
        }
        segment.make_ascii_lowercase();
        match segment.as_slice() {
            b"." => continue,
            b".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                continue;
            }
            _ => {}
        }
        while segment
            .last()
            .is_some_and(|&b| b == b'.' || b == b' ' || b.is_ascii_control())
        {
            segment.pop();
        }
        if !segment.is_empty() {
            segments.push(segment);
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if segments.is_empty() || path.ends_with('/') {
        out.push(b'/');
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `raw` decoded, once every escape in it has been checked.
fn percent_decode(raw: &str) -> Result<Vec<u8>, PathError> {
    escaped_bytes(raw)?;
    Ok(percent_encoding::percent_decode_str(raw).collect())
}

/// The bytes `raw`'s percent escapes stand for, in order; a `%` that does not start an escape
/// is refused.
pub fn escaped_bytes(raw: &str) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::new();
    let mut rest = raw.as_bytes();
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        out.push(escaped_byte(rest, at)?);
        rest = &rest[at + 3..];
    }
    Ok(out)
}

/// The byte of the `%XX` escape at `bytes[i]`: `%` and exactly two hex digits.
/// `u8::from_str_radix` would also take `%+f` (a sign), and the crate's decoder keeps a bad
/// escape as it is; both are too lenient to judge a path by.
fn escaped_byte(bytes: &[u8], i: usize) -> Result<u8, PathError> {
    bytes
        .get(i..i + 3)
        .filter(|e| e[0] == b'%' && e[1..].iter().all(u8::is_ascii_hexdigit))
        .and_then(|escape| percent_encoding::percent_decode(escape).next())
        .ok_or(PathError::BadEscape)
}

/// The fast path: nothing to decode, no dot or empty segment, nothing to refuse.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    !bytes.contains(&b'%')
        && !bytes.contains(&b'\\')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::EncodedSeparator),
            b'%' => {
                match escaped_byte(bytes, i)? {
                    b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                        out.push(char::from(b));
                    }
                    b => out.push_str(&format!("%{b:02X}")),
                }
                i += 3;
            }
            _ => {
                let next = bytes[i..]
                    .iter()
                    .position(|&b| b == b'%' || b == b'\\')
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&raw[i..next]);
                i = next;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a/b", "/a/b/", "/a.b/c..d"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_escapes_and_slashes_are_normalised() {
        for (input, want) in [
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("//admin", "/admin"),
            ("/a//b/", "/a/b/"),
            ("/%61dmin", "/admin"),
            ("/a/%2e%2E/x", "/x"),
            ("/a/%2e%2e", "/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/sp%20ace", "/sp%20ace"),
        ] {
            assert_eq!(normalize_path(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn dangerous_paths_are_refused() {
        for (input, why) in [
            ("/..", PathError::AboveRoot),
            ("/a/../../etc/passwd", PathError::AboveRoot),
            ("/%2e%2e/etc", PathError::AboveRoot),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5Cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::EncodedSeparator),
            ("/a%00", PathError::EncodedSeparator),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%+f", PathError::BadEscape),
            ("/a%-1/b", PathError::BadEscape),
            ("*", PathError::NotAbsolute),
            ("/caf\u{e9}", PathError::RawByte),
            ("/a\u{7f}b", PathError::RawByte),
            ("/a b", PathError::RawByte),
        ] {
            assert_eq!(normalize_path(input), Err(why), "{input}");
        }
    }
}
