//! Edits of the operator's config that keep its comments and layout: `[gateway]` made by
//! `init`, a revocation list path when there is none, and one `[gateway.users.NAME]` entry per
//! person enrolled.

use std::path::Path;

use toml_edit::{Array, DocumentMut, Item, Table, value};

use super::EmployeesError;

/// The config text, parsed for editing.
pub(super) struct Edit(DocumentMut);

impl Edit {
    pub(super) fn parse(text: &str) -> Result<Self, EmployeesError> {
        text.parse()
            .map(Self)
            .map_err(|e: toml_edit::TomlError| EmployeesError::Edit(e.to_string()))
    }

    /// `[gateway]` with `client_ca`, when the config has none: the first thing `init` needs.
    pub(super) fn ensure_gateway(&mut self, client_ca: &Path) -> Result<(), EmployeesError> {
        if self.0.get("gateway").is_some() {
            return Ok(());
        }
        let mut gateway = Table::new();
        gateway.insert("client_ca", value(path_text(client_ca)?));
        gateway
            .decor_mut()
            .set_prefix("\n# Employees: `portcullis employees` keeps this section.\n");
        self.0.insert("gateway", Item::Table(gateway));
        Ok(())
    }

    /// `gateway.crls = [crl]` when the gateway names no list.
    pub(super) fn ensure_crl(&mut self, crl: &Path) -> Result<(), EmployeesError> {
        let gateway = self.gateway()?;
        let empty = gateway
            .get("crls")
            .and_then(Item::as_array)
            .is_none_or(Array::is_empty);
        if empty {
            let mut crls = Array::new();
            crls.push(path_text(crl)?);
            gateway.insert("crls", value(crls));
        }
        Ok(())
    }

    /// `[gateway.users.NAME]` with its groups and TOTP secret file.
    pub(super) fn add_user(
        &mut self,
        name: &str,
        groups: &[String],
        totp: &Path,
    ) -> Result<(), EmployeesError> {
        let totp = path_text(totp)?;
        let users = self.gateway()?.entry("users").or_insert_with(|| {
            let mut users = Table::new();
            // `[gateway.users.alice]` headers, no empty `[gateway.users]` above them.
            users.set_implicit(true);
            Item::Table(users)
        });
        let mut entry = Table::new();
        entry.insert("groups", value(groups.iter().collect::<Array>()));
        entry.insert("totp_secret_file", value(totp));
        match users {
            Item::Table(users) => {
                users.insert(name, Item::Table(entry));
            }
            Item::Value(toml_edit::Value::InlineTable(users)) => {
                users.insert(
                    name,
                    toml_edit::Value::InlineTable(entry.into_inline_table()),
                );
            }
            _ => return Err(EmployeesError::Edit("gateway.users is not a table".into())),
        }
        Ok(())
    }

    fn gateway(&mut self) -> Result<&mut Table, EmployeesError> {
        self.0
            .get_mut("gateway")
            .and_then(Item::as_table_mut)
            .ok_or_else(|| EmployeesError::Edit("[gateway] is not a table".into()))
    }

    pub(super) fn text(&self) -> String {
        self.0.to_string()
    }
}

/// Paths go into the config as they were given: relative ones are relative to the config's
/// directory, as every path of the config is.
fn path_text(path: &Path) -> Result<String, EmployeesError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| EmployeesError::Edit(format!("{} is not UTF-8", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[gateway]` as the proxy reads it; the rest of these fragments is no config.
    #[derive(serde::Deserialize)]
    struct Only {
        gateway: crate::config::raw::RawGateway,
    }

    fn gateway(text: &str) -> crate::config::raw::RawGateway {
        toml::from_str::<Only>(text).unwrap().gateway
    }

    #[test]
    fn comments_and_layout_survive_and_entries_read_back() {
        let text = "# the edge\n[server]\nworkers = 2 # two cores\n\n[gateway]\nclient_ca = \"ca.pem\" # employees\n\n[gateway.users.bob]\ngroups = [\"ops\"]\n";
        let mut edit = Edit::parse(text).unwrap();
        edit.ensure_gateway(Path::new("other.pem")).unwrap();
        edit.ensure_crl(Path::new("employees.crl")).unwrap();
        edit.add_user(
            "alice",
            &["infra".into(), "ops".into()],
            Path::new("alice.totp"),
        )
        .unwrap();
        let edited = edit.text();
        assert!(edited.starts_with("# the edge\n[server]\nworkers = 2 # two cores\n"));
        assert!(
            edited.contains("client_ca = \"ca.pem\" # employees"),
            "{edited}"
        );
        assert!(edited.contains("[gateway.users.alice]\ngroups = [\"infra\", \"ops\"]\ntotp_secret_file = \"alice.totp\"\n"), "{edited}");
        let gateway = gateway(&edited);
        assert_eq!(
            gateway.crls,
            vec![std::path::PathBuf::from("employees.crl")]
        );
        assert_eq!(gateway.users["alice"].groups, ["infra", "ops"]);
        assert_eq!(gateway.users["bob"].groups, ["ops"]);
    }

    #[test]
    fn init_adds_a_gateway_and_inline_users_take_inline_entries() {
        let mut edit = Edit::parse("[server]\n").unwrap();
        edit.ensure_gateway(Path::new("/etc/p/ca.pem")).unwrap();
        edit.ensure_crl(Path::new("/etc/p/employees.crl")).unwrap();
        let text = edit.text();
        assert!(
            text.contains(
                "[gateway]\nclient_ca = \"/etc/p/ca.pem\"\ncrls = [\"/etc/p/employees.crl\"]\n"
            ),
            "{text}"
        );

        let mut edit =
            Edit::parse("[gateway]\nclient_ca = \"c\"\nusers = { bob = { groups = [] } }\n")
                .unwrap();
        edit.add_user("alice", &[], Path::new("a.totp")).unwrap();
        assert!(gateway(&edit.text()).users.contains_key("alice"));
    }
}
