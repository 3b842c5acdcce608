//! Problems found in a configuration, each under the key that holds the value: every phase of
//! validation pushes into one list, so that all problems of a file are reported together.

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

    pub(super) fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}
