//! Path masking for the logs: identifying segments become placeholders, the query is dropped,
//! and nothing but printable ASCII survives, so a path can neither carry a user's data into the
//! log nor forge a second line.
//!
//! It fails closed: a segment is written as sent only when it looks like a word a developer
//! chose (short words of letters, a short number affix, common punctuation between them) and
//! does not follow a word that announces a secret or a person (`/reset/...`, `/users/...`).
//! Everything else is a placeholder: `<email>`, `<id>`, `<token>` or `<masked>`.
//!
//! The path masked is the one the request was routed by and forwarded with
//! ([`normalize_path`]): masking the raw target would read `/%75sers/NAME` or `/users/./NAME`
//! as harmless while the upstream got `/users/NAME`. A path that cannot be normalised was
//! refused (`400`) before reaching anything; it is masked as sent, strictly: every segment after
//! the first one that is not kept as written is masked too.

use super::vocabulary::{EXTENSIONS, LONGEST_SENSITIVE, SENSITIVE_WORDS};
use crate::path::normalize_path;

/// Longest masked path kept; the rest is cut, a suffix marking the cut.
const MAX_LOGGED_PATH: usize = 256;
/// Longer segments are taken as tokens whatever they look like.
const MAX_SEGMENT: usize = 64;
/// Longer words too: the longest words of URLs ("authentication") stay below it.
const MAX_WORD: usize = 16;
/// A word may carry this many digits at one end (`v1`, `h2`, `2fa`, `x86`), no more.
const MAX_DIGIT_AFFIX: usize = 2;
/// More consonants in a row than English spells, from this word length on, mean a random
/// string (`xkcdqrtplm`); short words are exempt (`html`, `css`).
const MAX_CONSONANT_RUN: usize = 4;
const PRONOUNCEABLE_FROM: usize = 6;

/// Masks a request target (`/path?query`).
///
/// ```
/// use portcullis::access_log::mask_path;
///
/// assert_eq!(mask_path("/users/42/orders?email=a@b.c"), "/users/<id>/orders");
/// assert_eq!(mask_path("/reset/Abcdefghij"), "/reset/<masked>");
/// assert_eq!(mask_path("/u/alice(at)example.com"), "/u/<email>");
/// ```
pub fn mask_path(target: &str) -> String {
    let mut out = Vec::new();
    write_masked_path(target, &mut out);
    // Only placeholders and segments of ASCII letters, digits and separators are written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`mask_path`], appended to `out`: the access log writes it straight into its line. What it
/// writes is printable ASCII without `"` or `\`, so it needs no JSON escaping.
pub(crate) fn write_masked_path(target: &str, out: &mut Vec<u8>) {
    let path = split_ascii(target, b'?').next().unwrap_or(target);
    match normalize_path(path) {
        Ok(routed) => write_segments(&routed, out, false),
        Err(_) => write_segments(path, out, true),
    }
}

/// Masks `path` segment by segment into `out`; `strict` masks every segment after the first
/// one not kept as written.
fn write_segments(path: &str, out: &mut Vec<u8>, strict: bool) {
    // Room for placeholders longer than their segment (`/1` -> `/<id>`).
    out.reserve(MAX_LOGGED_PATH.min(path.len() + 16));
    let start = out.len();
    let mut after_sensitive = false;
    for (i, segment) in split_ascii(path, b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        let masked = match placeholder(segment) {
            Some(placeholder) => placeholder,
            None if after_sensitive && !segment.is_empty() => "<masked>",
            None => segment,
        };
        let sensitive = words(segment).any(is_sensitive);
        after_sensitive = if strict {
            after_sensitive || sensitive || masked != segment
        } else {
            sensitive
        };
        out.extend_from_slice(masked.as_bytes());
        if out.len() - start > MAX_LOGGED_PATH {
            out.truncate(start + MAX_LOGGED_PATH);
            out.extend_from_slice(b"...");
            break;
        }
    }
}

/// `str::split` at an ASCII byte, without the general searcher `str::split` sets up for a
/// `char` (costly on strings as short as a path's segments). An ASCII byte never falls inside a
/// character, so every slice is on a character boundary.
fn split_ascii(text: &str, delimiter: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.bytes().position(|b| b == delimiter) {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// The placeholder of a segment that does not look chosen by a developer.
fn placeholder(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        return None;
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || is_separator(b))
    {
        // `@`, percent escapes (non-ASCII names, encoded data), quotes, controls: nothing to
        // read that is safe to keep.
        return Some(if is_address(segment) {
            "<email>"
        } else {
            "<masked>"
        });
    }
    if is_uuid(segment) || has_digit_run(segment, 4) {
        return Some("<id>");
    }
    if segment.len() > MAX_SEGMENT || !words(segment).all(is_plain_word) {
        return Some("<token>");
    }
    if spells_an_address(words(segment)) {
        return Some("<email>");
    }
    // `/~alice/`: a home directory; `first.last`: a name.
    if segment.starts_with('~') || is_dotted_name(segment) {
        return Some("<masked>");
    }
    None
}

/// `first.last` or `first.middle.last`: two or three words of letters joined by dots, the last
/// not a file extension.
fn is_dotted_name(segment: &str) -> bool {
    let mut parts = 0;
    let mut last: &[u8] = &[];
    for part in segment.as_bytes().split(|&b| b == b'.') {
        if part.is_empty() || !part.iter().all(u8::is_ascii_alphabetic) {
            return false;
        }
        parts += 1;
        last = part;
    }
    (2..=3).contains(&parts) && !EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(last))
}

/// Punctuation a kept segment may have between its words.
fn is_separator(b: u8) -> bool {
    matches!(
        b,
        b'-' | b'.'
            | b'_'
            | b'~'
            | b'+'
            | b','
            | b';'
            | b'='
            | b':'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
    )
}

/// The words of a segment, as bytes: separators are ASCII, so splitting bytes at them never
/// cuts a character, and byte slices spare a UTF-8 decode per character.
fn words(segment: &str) -> impl Iterator<Item = &[u8]> {
    segment
        .as_bytes()
        .split(|&b| is_separator(b))
        .filter(|w| !w.is_empty())
}

fn is_sensitive(word: &[u8]) -> bool {
    let mut lower = [0; LONGEST_SENSITIVE];
    let Some(lower) = lower.get_mut(..word.len()) else {
        return false;
    };
    lower.copy_from_slice(word);
    lower.make_ascii_lowercase();
    SENSITIVE_WORDS.contains(&&*lower)
}

/// `alice(at)example.com`, `alice_at_example_dot_com`: the word `at` with a name before it and
/// a domain after it.
fn spells_an_address<'a>(mut words: impl Iterator<Item = &'a [u8]>) -> bool {
    words.next().is_some() && words.any(|w| w.eq_ignore_ascii_case(b"at")) && words.next().is_some()
}

/// An address hidden in escapes or symbols: `@`, `%40` (once or twice encoded), a full-width
/// `@`, `[at]` and its bracket variants.
fn is_address(segment: &str) -> bool {
    let decoded = percent_decode(&percent_decode(segment)).to_ascii_lowercase();
    ["@", "\u{ff20}", "[at]", "{at}", "<at>", "(at)"]
        .iter()
        .any(|at| decoded.contains(at))
        || spells_an_address(words(&decoded))
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A word of a kept segment: short; letters in one case or capitalised (at most two humps:
/// `getUser`); digits only as a short affix; pronounceable when long enough to be a word.
fn is_plain_word(word: &[u8]) -> bool {
    if word.len() > MAX_WORD {
        return false;
    }
    let start = word
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(word.len());
    let end = word
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(start, |last| last + 1);
    let letters = &word[start..end];
    let digits = word.len() - letters.len();
    if letters.is_empty() {
        return true;
    }
    if digits > MAX_DIGIT_AFFIX || letters.iter().any(u8::is_ascii_digit) {
        return false;
    }
    let all_upper = letters.iter().all(u8::is_ascii_uppercase);
    let humps = letters
        .iter()
        .skip(1)
        .filter(|b| b.is_ascii_uppercase())
        .count();
    if !all_upper && humps > 2 {
        return false;
    }
    letters.len() < PRONOUNCEABLE_FROM || is_pronounceable(letters)
}

fn is_pronounceable(letters: &[u8]) -> bool {
    let mut run = 0;
    let mut vowels = 0;
    for b in letters.iter().map(u8::to_ascii_lowercase) {
        if b"aeiouy".contains(&b) {
            vowels += 1;
            run = 0;
        } else {
            run += 1;
            if run > MAX_CONSONANT_RUN {
                return false;
            }
        }
    }
    vowels > 0
}

fn has_digit_run(segment: &str, length: usize) -> bool {
    segment
        .as_bytes()
        .split(|b| !b.is_ascii_digit())
        .any(|run| run.len() >= length)
        || segment.bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(segment: &str) -> bool {
    segment.len() == 36
        && segment.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifying_segments_are_masked() {
        for (path, want) in [
            ("/users/42/orders?email=a@b.c", "/users/<id>/orders"),
            ("/x/alice@example.com/y", "/x/<email>/y"),
            ("/x/alice%40example.com", "/x/<email>"),
            ("/x/alice%2540example.com", "/x/<email>"),
            ("/x/alice(at)example.com", "/x/<email>"),
            ("/x/alice%28at%29example.com", "/x/<email>"),
            ("/x/alice[at]example.com", "/x/<email>"),
            ("/x/alice-at-example-dot-com", "/x/<email>"),
            ("/x/alice%EF%BC%A0example.com", "/x/<email>"),
            ("/o/123e4567-e89b-12d3-a456-426614174000", "/o/<id>"),
            ("/x/3f9a1c7b2e8d4f6a9b0c", "/x/<token>"),
            ("/inv/INV-2024-000981", "/inv/<id>"),
            ("/x/Abcdefghijklmnopqrstuvwxyz", "/x/<token>"),
            ("/x/aBcDeFgH", "/x/<token>"),
            ("/x/kqzjxwmfpbtr", "/x/<token>"),
            ("/x/a1b2c3", "/x/<token>"),
            ("/x/J%C3%BCrgen", "/x/<masked>"),
            ("/reset/Abcdefghij", "/reset/<masked>"),
            (
                "/password-reset/hello/next",
                "/password-reset/<masked>/next",
            ),
            ("/invite/welcome", "/invite/<masked>"),
            ("/confirm/42", "/confirm/<id>"),
            ("/u/alice", "/u/<masked>"),
            ("/Users/alice/settings", "/Users/<masked>/settings"),
            ("/token", "/token"),
            // Masked as routed: each of these reaches the upstream as `/users/zoltan`.
            ("/%75sers/zoltan", "/users/<masked>"),
            ("/user%73/zoltan", "/users/<masked>"),
            ("/users/./zoltan", "/users/<masked>"),
            ("/users//zoltan", "/users/<masked>"),
            ("/users/x/../zoltan", "/users/<masked>"),
            ("/%7Ezoltan/", "/<masked>/"),
            ("/~zoltan/index.html", "/<masked>/index.html"),
            ("/employee/zoltan", "/employee/<masked>"),
            ("/customers/zoltan/orders", "/customers/<masked>/orders"),
            ("/author/zoltan", "/author/<masked>"),
            ("/owner/zoltan", "/owner/<masked>"),
            ("/uid/zoltan", "/uid/<masked>"),
            ("/usr/zoltan", "/usr/<masked>"),
            ("/x/zoltan.kovacs", "/x/<masked>"),
            ("/x/Zoltan.K.Kovacs/y", "/x/<masked>/y"),
            // Refused before routing, so masked strictly as sent.
            ("/users/%2F/zoltan", "/users/<masked>/<masked>"),
            ("/a/%zz/./zoltan", "/a/<masked>/<masked>/<masked>"),
        ] {
            assert_eq!(mask_path(path), want, "{path}");
        }
    }

    #[test]
    fn words_a_developer_chose_are_kept() {
        for path in [
            "/",
            "/static/app.min.css",
            "/api/v1/orders/",
            "/api/v12/getUser",
            "/.well-known/security.txt",
            "/assets/jquery-3.6.0.min.js",
            "/docs/authentication",
            "/api/user_settings",
            "/2fa/setup",
            "/HTML/README",
            "/a/b/",
            "/security.txt",
            "/docs/README.md",
            "/img/logo.svg",
        ] {
            assert_eq!(mask_path(path), path);
        }
    }

    #[test]
    fn ascii_split_splits_as_str_split_does() {
        for text in ["", "/", "//", "/a", "a/", "/a//b/", "é/ü€/", "/x%2F/😀"] {
            let ours: Vec<&str> = split_ascii(text, b'/').collect();
            let std: Vec<&str> = text.split('/').collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }

    #[test]
    fn nothing_can_forge_a_line_or_a_quote() {
        let masked = mask_path("/a\n{\"x\":1}\r\u{7f}/b\\c");
        assert!(
            !masked.contains(['\n', '\r', '"', '\\', '\u{7f}']),
            "{masked:?}"
        );
        assert!(mask_path(&"/a".repeat(400)).len() <= MAX_LOGGED_PATH + 3);
    }

    #[test]
    fn a_masked_path_is_appended_and_cut_after_what_was_there() {
        let mut line = b"{\"path\":\"".to_vec();
        write_masked_path(&"/a".repeat(400), &mut line);
        assert_eq!(line.len(), 9 + MAX_LOGGED_PATH + 3);
        assert!(line.starts_with(b"{\"path\":\"/a/a/"));
        assert!(line.ends_with(b"..."));
    }
}
