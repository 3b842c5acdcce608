//! From text to the raw mirror, with every unknown key and every value of the wrong type
//! reported under its key, not only the first. serde stops at its first error; so the syntax is
//! parsed once (its errors carry line and column, and nothing can be said past one), then the
//! table is read into [`RawConfig`] again and again, each time with the key at fault taken out
//! and its problem noted, until it reads. An unknown key gets the nearest valid one as a
//! suggestion, from the names serde says it expected.

use serde_path_to_error::Segment;
use toml::{Table, Value};

use super::problems::Problems;
use super::raw::RawConfig;
use super::{ConfigError, ProblemKind};

/// Problems one file reports from this step at most; past that it is not much of a config.
const MAX_PROBLEMS: usize = 64;

/// A file read into the raw mirror, with the problems of the keys left out to get there: the
/// rest of the file is still validated, so that one run reports every problem.
pub struct Parsed {
    /// The file without the keys at fault.
    pub raw: RawConfig,
    pub(super) problems: Problems,
    /// The tables keys were taken out of (`routes[0]` for `routes[0].upstrem`).
    touched: Vec<String>,
}

impl Parsed {
    /// The raw mirror validated by `validate`, its problems reported after the parse's. Those
    /// under a table a key was left out of are not: a route without its misspelt `upstrem` also
    /// lacks an `upstream`, which is not news; the rest of that table is judged again once the
    /// file is mended.
    pub(super) fn judge<T>(
        self,
        validate: impl FnOnce(RawConfig) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        let Self {
            raw,
            mut problems,
            touched,
        } = self;
        let follows = |key: &str| {
            touched.iter().any(|table| {
                key.strip_prefix(table.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
        };
        match validate(raw) {
            Ok(value) => Ok(problems.or(value)?),
            Err(ConfigError::Invalid(more)) => {
                problems.append(more.into_iter().filter(|p| !follows(&p.key)));
                Err(problems.into())
            }
            Err(other) if problems.is_empty() => Err(other),
            // Only problems come out of a parsed file; should anything else, the parse's stand.
            Err(_) => Err(problems.into()),
        }
    }

    /// The raw mirror only if nothing had to be left out.
    pub fn strict(self) -> Result<RawConfig, ConfigError> {
        Ok(self.problems.or(self.raw)?)
    }
}

/// The file's text as the raw mirror, or every unknown key and wrongly typed value in it.
pub fn parse(text: &str) -> Result<Parsed, ConfigError> {
    let mut table: Table = toml::from_str(text)?;
    let mut problems = Problems::default();
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..MAX_PROBLEMS {
        let error = match serde_path_to_error::deserialize(table.clone()) {
            Ok(raw) => {
                let touched = removed.iter().filter_map(|k| parent(k)).collect();
                return Ok(Parsed {
                    raw,
                    problems,
                    touched,
                });
            }
            Err(error) => error,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let key = error.path().to_string();
        let message = error.inner().message().to_owned();
        if let Some(field) = missing_field(&message)
            && removed.contains(&join(&key, field))
        {
            // A required key we took out for its own problem: reported already.
            break;
        }
        if let Some(field) = missing_field(&message) {
            problems.push(join(&key, field), ProblemKind::Required);
            break;
        }
        problems.push(key.clone(), kind(&message));
        // An array element cannot go without moving the indices of those after it.
        if matches!(segments.last(), Some(Segment::Seq { .. })) || !remove(&mut table, &segments) {
            break;
        }
        removed.push(key);
    }
    Err(problems.into())
}

/// What serde's message says, as a problem: an unknown key or variant with the nearest valid
/// name, or the message itself.
fn kind(message: &str) -> ProblemKind {
    for (prefix, what) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((name, expected)) = rest.split_once('`')
        {
            let expected: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return ProblemKind::Unknown {
                what,
                name: name.to_owned(),
                nearest: nearest(name, &expected).map(str::to_owned),
                expected: expected.iter().map(|e| (*e).to_owned()).collect(),
            };
        }
    }
    ProblemKind::Type(message.to_owned())
}

/// The valid name closest to a misspelt one, if any is close: at most a third of its letters
/// differ (one for short names), or one is the start of the other (`retention` for
/// `retention_days`). Ties go to the most similar by Jaro-Winkler, which favours a shared start.
fn nearest<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    let most = (name.chars().count() / 3).max(1);
    let shorter = |a: &str, b: &str| a.len().min(b.len());
    let close = |candidate: &str, distance: usize| {
        distance <= most
            || (shorter(name, candidate) >= 4
                && (candidate.starts_with(name) || name.starts_with(candidate)))
    };
    valid
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), *candidate))
        .filter(|(distance, candidate)| close(candidate, *distance))
        .min_by(|(d1, c1), (d2, c2)| {
            d1.cmp(d2).then_with(|| {
                strsim::jaro_winkler(name, c2).total_cmp(&strsim::jaro_winkler(name, c1))
            })
        })
        .map(|(_, candidate)| candidate)
}

/// The name in "missing field `name`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The table a key is in, unless it is the file's top level.
fn parent(key: &str) -> Option<String> {
    key.rsplit_once('.').map(|(table, _)| table.to_owned())
}

/// `key.field`, or `field` at the top.
fn join(key: &str, field: &str) -> String {
    if key == "." || key.is_empty() {
        field.to_owned()
    } else {
        format!("{key}.{field}")
    }
}

/// Takes the value at `path` out of `table`; false when there is nothing there to take.
fn remove(table: &mut Table, path: &[Segment]) -> bool {
    match path {
        [Segment::Map { key }] => table.remove(key).is_some(),
        [Segment::Map { key }, rest @ ..] => table
            .get_mut(key)
            .is_some_and(|value| remove_in(value, rest)),
        _ => false,
    }
}

/// [`remove`] below a value: `routes[3].upstrem` is a key of the fourth table of `routes`.
fn remove_in(value: &mut Value, path: &[Segment]) -> bool {
    match (value, path) {
        (Value::Table(table), _) => remove(table, path),
        (Value::Array(items), [Segment::Seq { index }, rest @ ..]) => items
            .get_mut(*index)
            .is_some_and(|item| remove_in(item, rest)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        match parse(text).and_then(Parsed::strict) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(other) => vec![other.to_string()],
        }
    }

    const BASE: &str = "environment = \"dev\"\n[listen]\nhttps = \"127.0.0.1:8443\"\n";

    #[test]
    fn every_unknown_key_is_reported_with_the_nearest_one() {
        let text = format!(
            "{BASE}htps = \"x\"\n[server]\nalow_root = true\n[[routes]]\nhost = \"a\"\n\
             upstream = \"app\"\n[[routes]]\nhost = \"b\"\nupstrem = \"app\"\nzzzz = 1\n"
        );
        // In the order of the keys' sections, each once.
        let lines = lines(&text);
        assert_eq!(
            lines,
            [
                "listen.htps: unknown key \"htps\"; did you mean \"https\"?",
                "routes[1].upstrem: unknown key \"upstrem\"; did you mean \"upstream\"?",
                "routes[1].zzzz: unknown key \"zzzz\"; expected one of: host, path_prefix, \
                 upstream, respond, max_body_bytes, internal, allow, mfa, assertion, limit",
                "server.alow_root: unknown key \"alow_root\"; did you mean \"allow_root\"?",
            ],
        );
    }

    #[test]
    fn a_wrong_type_is_reported_under_its_key_beside_the_others() {
        let text = format!("{BASE}[hsts]\nmax_age = \"300\"\n[log]\nretention = 30\n");
        let lines = lines(&text);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[0].starts_with("hsts.max_age: invalid type"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("log.retention: unknown key"),
            "{lines:#?}"
        );
        assert!(
            lines[1].contains("did you mean \"retention_days\""),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_required_key_of_the_wrong_type_is_one_problem_not_two() {
        let lines = lines("environment = 3\n[listen]\nhttps = \"127.0.0.1:8443\"\n");
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].starts_with("environment: invalid type"),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_missing_key_is_named_whole() {
        let lines = lines("environmnt = \"dev\"\n[listen]\nhttps = \"127.0.0.1:8443\"\n");
        assert_eq!(
            lines,
            [
                "environmnt: unknown key \"environmnt\"; did you mean \"environment\"?",
                "environment: is required",
            ]
        );
    }

    #[test]
    fn a_syntax_error_keeps_its_line_and_column() {
        let lines = lines("environment = \"dev\n");
        assert!(lines[0].contains("line 1"), "{lines:#?}");
    }

    #[test]
    fn nothing_close_suggests_nothing() {
        assert_eq!(nearest("zzzz", &["https", "http"]), None);
        assert_eq!(nearest("htps", &["http", "https"]), Some("https"));
        assert_eq!(
            nearest("retention", &["dir", "retention_days"]),
            Some("retention_days")
        );
        assert_eq!(nearest("ip", &["dir", "stdout"]), None);
    }
}
