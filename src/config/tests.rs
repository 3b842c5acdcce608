//! The phases on TOML strings: values need no file, files are read whatever the values say,
//! and no problem is a follow-on of another.

use super::values;
use super::*;

/// A config whose every value is sound and whose every file is missing.
const MISSING_FILES: &str = r#"
environment = "test"
[listen]
https = "127.0.0.1:0"
[[tls.certificates]]
cert = "/nonexistent/portcullis/localhost.crt"
key = "/nonexistent/portcullis/localhost.key"
[networks]
test = ["127.0.0.0/8"]
[upstreams.app]
environment = "test"
addrs = ["127.0.0.1:9"]
[[routes]]
host = "localhost"
upstream = "app"
[[routes]]
host = "localhost"
path_prefix = "/ops"
upstream = "app"
internal = true
allow = ["carol"]
mfa = true
[gateway]
client_ca = "/nonexistent/portcullis/ca.crt"
[gateway.users.carol]
totp_secret_file = "/nonexistent/portcullis/carol.totp"
"#;

fn raw(toml: &str) -> RawConfig {
    toml::from_str(toml).unwrap()
}

/// Each problem of phases 1 and 2 as `key: reason`.
fn problems(toml: &str) -> Vec<String> {
    match Config::from_raw(raw(toml)) {
        Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
        Err(other) => panic!("not a validation error: {other}"),
        Ok(_) => panic!("accepted:\n{toml}"),
    }
}

/// Each problem of phase 1 alone as `key: reason`.
fn value_problems(toml: &str) -> Vec<String> {
    match values::check(&raw(toml)) {
        Err(problems) => ConfigError::from(problems)
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect(),
        Ok(_) => panic!("values accepted:\n{toml}"),
    }
}

fn keys(problems: &[String]) -> Vec<&str> {
    problems
        .iter()
        .map(|p| p.split_once(": ").map_or(p.as_str(), |(key, _)| key))
        .collect()
}

#[test]
fn values_are_checked_without_reading_a_file() {
    assert!(values::check(&raw(MISSING_FILES)).is_ok());
}

#[test]
fn a_missing_file_is_reported_once_under_its_own_key_and_nowhere_else() {
    let found = problems(MISSING_FILES);
    // Not "no certificate covers localhost", not "internal routes need a [gateway]", not
    // "carol has no totp_secret_file": each of those would be a follow-on of a file problem.
    assert_eq!(
        keys(&found),
        [
            "tls.certificates[0]",
            "gateway.client_ca",
            "gateway.users.carol.totp_secret_file"
        ],
        "{found:#?}"
    );
}

#[test]
fn value_and_file_problems_are_reported_together() {
    let toml = MISSING_FILES.replace(
        "[networks]",
        "[limits]\nidle_timeout = \"soon\"\n[networks]",
    );
    let found = problems(&toml);
    assert!(keys(&found).contains(&"limits.idle_timeout"), "{found:#?}");
    assert!(keys(&found).contains(&"gateway.client_ca"), "{found:#?}");
}

#[test]
fn a_refused_network_leaves_its_environment_declared() {
    let toml = MISSING_FILES.replace(
        "test = [\"127.0.0.0/8\"]",
        "test = [\"0.0.0.0/0\", \"127.0.1.0/24\"]",
    );
    let found = value_problems(&toml);
    // The network is public (it merely also holds link-local), and the environment it was
    // declared in still exists: its upstream at 127.0.0.1 is neither "in no environment" nor
    // "outside" the network that was refused.
    assert_eq!(keys(&found), ["networks.test[0]"], "{found:#?}");
    assert!(
        found[0].contains("not inside a private range"),
        "{found:#?}"
    );
}

#[test]
fn a_grant_is_judged_by_the_config_not_by_whether_the_secret_could_be_read() {
    let toml = MISSING_FILES.replace(
        "totp_secret_file = \"/nonexistent/portcullis/carol.totp\"",
        "groups = [\"ops\"]",
    );
    let found = value_problems(&toml);
    assert_eq!(
        found,
        ["routes[1].mfa: user \"carol\" is allowed here but has no totp_secret_file"]
    );
}

#[test]
fn the_written_key_set_needs_a_directory_of_its_own_and_approvers_must_exist() {
    let beside_ca = MISSING_FILES.replace(
        "[gateway]\n",
        "[gateway]\njwks_file = \"/nonexistent/portcullis/jwks.json\"\napprovers = [\"group:nobody\"]\n",
    );
    let problems = value_problems(&beside_ca);
    assert_eq!(
        keys(&problems),
        ["gateway.jwks_file", "gateway.approvers[0]"],
        "{problems:?}"
    );
    let apart = MISSING_FILES.replace(
        "[gateway]\n",
        "[gateway]\njwks_file = \"/nonexistent/jwks/jwks.json\"\napprovers = [\"carol\"]\n",
    );
    assert!(values::check(&raw(&apart)).is_ok());
    // `portcullis employees` enrols the approvers a list names: it takes the list unchecked.
    assert!(
        Config::enrolment(&raw(
            &beside_ca.replace("jwks_file = \"/nonexistent/portcullis/jwks.json\"\n", "")
        ))
        .is_ok()
    );
}
