//! Problems found in a configuration, each under the key that holds the value. A phase of
//! validation pushes every problem it finds into one list and hands back its typed result only
//! when the list is empty, so that the next phase works on values that passed.

use super::{ConfigError, Problem, ProblemKind};

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

/// A key path as problems name it, built from the TOML's own structure so that no path is
/// spelt by hand: `Key::new("routes").index(3).field("allow")` is `routes[3].allow`.
#[derive(Debug, Clone)]
pub(super) struct Key(String);

impl Key {
    pub(super) fn new(table: &str) -> Self {
        Self(table.to_owned())
    }

    pub(super) fn field(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }

    pub(super) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }
}

impl From<Key> for String {
    fn from(key: Key) -> Self {
        key.0
    }
}

impl Problems {
    pub(super) fn push(&mut self, key: impl Into<String>, kind: impl Into<ProblemKind>) {
        self.0.push(Problem {
            key: key.into(),
            kind: kind.into(),
        });
    }

    /// The problems as warnings: legal values worth a second look.
    pub(super) fn into_warnings(self) -> Vec<Problem> {
        self.0
    }

    /// Nothing found.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Problems a later phase found.
    pub(super) fn append(&mut self, more: impl IntoIterator<Item = Problem>) {
        self.0.extend(more);
    }

    /// Problems found by two phases that take nothing from each other.
    pub(super) fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// What a phase found: `value` when nothing was wrong, every problem otherwise.
    pub(super) fn or<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Problems> for ConfigError {
    fn from(problems: Problems) -> Self {
        ConfigError::Invalid(problems.0)
    }
}
