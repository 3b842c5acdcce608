//! Path masking for the access log: identifying segments become placeholders, the query is
//! dropped, and nothing but printable ASCII survives, so a path can neither carry a user's data
//! into the log nor forge a second line.

/// Longest masked path kept; the rest is cut, a suffix marking the cut.
const MAX_LOGGED_PATH: usize = 256;
/// A segment this long or longer is taken as a token whatever it looks like.
const TOKEN_LENGTH: usize = 32;

/// Masks a request target (`/path?query`): `<email>`, `<id>` (numbers, UUIDs, long digit runs),
/// `<token>` (long random-looking strings).
pub fn mask_path(target: &str) -> String {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let mut out = String::with_capacity(path.len().min(MAX_LOGGED_PATH));
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&mask_segment(segment));
        if out.len() > MAX_LOGGED_PATH {
            out.truncate(MAX_LOGGED_PATH);
            out.push_str("...");
            break;
        }
    }
    out
}

fn mask_segment(segment: &str) -> std::borrow::Cow<'_, str> {
    let lower = segment.to_ascii_lowercase();
    if segment.contains('@') || lower.contains("%40") {
        "<email>".into()
    } else if is_uuid(segment) || has_digit_run(segment, 4) {
        "<id>".into()
    } else if looks_random(segment) {
        "<token>".into()
    } else if segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%+,;=:!$&'()*".contains(&b))
    {
        segment.into()
    } else {
        segment
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' {
                    c
                } else {
                    '?'
                }
            })
            .collect::<String>()
            .into()
    }
}

fn has_digit_run(segment: &str, length: usize) -> bool {
    segment
        .as_bytes()
        .split(|b| !b.is_ascii_digit())
        .any(|run| run.len() >= length)
        || (!segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()))
}

fn is_uuid(segment: &str) -> bool {
    let groups: Vec<&str> = segment.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Long, and mixes letters with digits (or is long hex): keys, session ids, hashes.
fn looks_random(segment: &str) -> bool {
    let has_digit = segment.bytes().any(|b| b.is_ascii_digit());
    let has_alpha = segment.bytes().any(|b| b.is_ascii_alphabetic());
    segment.len() >= TOKEN_LENGTH || (segment.len() >= 16 && has_digit && has_alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifying_segments_are_masked() {
        for (path, want) in [
            ("/users/42/orders?email=a@b.c", "/users/<id>/orders"),
            ("/u/alice@example.com/x", "/u/<email>/x"),
            ("/u/alice%40example.com", "/u/<email>"),
            ("/o/123e4567-e89b-12d3-a456-426614174000", "/o/<id>"),
            ("/reset/3f9a1c7b2e8d4f6a9b0c", "/reset/<token>"),
            ("/inv/INV-2024-000981", "/inv/<id>"),
            ("/static/app.css", "/static/app.css"),
            ("/", "/"),
        ] {
            assert_eq!(mask_path(path), want, "{path}");
        }
    }

    #[test]
    fn nothing_can_forge_a_line_or_a_quote() {
        let masked = mask_path("/a\n{\"x\":1}\r\u{7f}");
        assert!(!masked.contains(['\n', '\r', '"', '\u{7f}']), "{masked:?}");
        assert!(mask_path(&"/a".repeat(400)).len() <= MAX_LOGGED_PATH + 3);
    }
}
