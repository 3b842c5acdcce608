//! Test configs changed by key, the way problems name them, instead of by text surgery: the
//! rig's base config as a TOML table, with `set`, `push` and `merge`.

use toml::{Table, Value};

/// A config under construction.
#[derive(Debug, Clone)]
pub struct ConfigToml(Table);

impl ConfigToml {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Self {
        Self(text.parse().expect("test config is TOML"))
    }

    /// Sets the value at a key path such as `upstreams.app.addrs` or `routes[2].allow`,
    /// creating the tables on the way.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        let (parent, last) = path.rsplit_once('.').map_or(("", path), |(p, l)| (p, l));
        let table = table_at(&mut self.0, parent);
        match split_index(last) {
            (name, Some(i)) => array_at(table, name)[i] = value.into(),
            (name, None) => {
                table.insert(name.to_owned(), value.into());
            }
        }
        self
    }

    /// Takes the key at `path` out (a plain key in a table, as `routes[1].upstream`).
    pub fn remove(mut self, path: &str) -> Self {
        let (parent, last) = path.rsplit_once('.').map_or(("", path), |(p, l)| (p, l));
        assert!(
            table_at(&mut self.0, parent).remove(last).is_some(),
            "no {path} to remove"
        );
        self
    }

    /// Appends a table (a `[[routes]]` entry, a peering) to the array at `path`.
    pub fn push(mut self, path: &str, entry: &[(&str, Value)]) -> Self {
        let (parent, last) = path.rsplit_once('.').map_or(("", path), |(p, l)| (p, l));
        let entry: Table = entry
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        array_at(table_at(&mut self.0, parent), last).push(Value::Table(entry));
        self
    }

    /// Merges TOML text in: tables merge, arrays of tables are extended, values replaced.
    pub fn merge(mut self, text: &str) -> Self {
        merge(&mut self.0, Self::parse(text).0);
        self
    }

    /// The config as TOML text.
    pub fn text(&self) -> String {
        toml::to_string(&self.0).expect("a table serialises")
    }
}

/// A list of strings as a TOML array.
pub fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

fn split_index(segment: &str) -> (&str, Option<usize>) {
    match segment.strip_suffix(']').and_then(|s| s.split_once('[')) {
        Some((name, i)) => (name, Some(i.parse().expect("an index"))),
        None => (segment, None),
    }
}

fn table_at<'a>(mut table: &'a mut Table, path: &str) -> &'a mut Table {
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        table = match split_index(segment) {
            (name, Some(i)) => array_at(table, name)[i]
                .as_table_mut()
                .expect("an array of tables"),
            (name, None) => table
                .entry(name)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .expect("a table"),
        };
    }
    table
}

fn array_at<'a>(table: &'a mut Table, name: &str) -> &'a mut Vec<Value> {
    table
        .entry(name)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .expect("an array")
}

fn merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(old)), Value::Table(new)) => merge(old, new),
            (Some(Value::Array(old)), Value::Array(new)) => old.extend(new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
