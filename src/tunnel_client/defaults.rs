//! `~/.config/portcullis/connect.toml`: what an employee would otherwise repeat on every
//! `portcullis connect` (or set in `PORTCULLIS_*`): the gateway, its TLS name, their certificate,
//! key and the gateway's CA. A flag or its environment variable wins over the file.
//!
//! ```toml
//! gateway = "gw.example.internal:443"
//! # server_name = "gw.example.internal"
//! cert = "alice.crt"            # relative to this file's directory, or ~/...
//! key = "alice.key"
//! # ca = "corp-ca.pem"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConnectError, ConnectOptions};

/// Where the defaults are, under the user's configuration directory.
const FILE: &str = "portcullis/connect.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    gateway: Option<String>,
    server_name: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
}

/// What `connect` uses: each flag, else its default.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) gateway: String,
    pub(super) server_name: Option<String>,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) ca: Option<PathBuf>,
}

/// `options` completed from the defaults file: `--defaults` (or `PORTCULLIS_CONNECT_DEFAULTS`),
/// which must exist, else `connect.toml` in the user's configuration directory, if there.
pub(super) fn settings(options: &ConnectOptions) -> Result<Settings, ConnectError> {
    let defaults = match &options.defaults {
        Some(path) => read(path)?,
        None => match default_path().filter(|p| p.exists()) {
            Some(path) => read(&path)?,
            None => Defaults::default(),
        },
    };
    let missing = |flag| ConnectError::Missing(flag);
    Ok(Settings {
        gateway: options
            .gateway
            .clone()
            .or(defaults.gateway)
            .ok_or(missing("--gateway"))?,
        server_name: options.server_name.clone().or(defaults.server_name),
        cert: options
            .cert
            .clone()
            .or(defaults.cert)
            .ok_or(missing("--cert"))?,
        key: options
            .key
            .clone()
            .or(defaults.key)
            .ok_or(missing("--key"))?,
        ca: options.ca.clone().or(defaults.ca),
    })
}

/// `$XDG_CONFIG_HOME/portcullis/connect.toml`, else `~/.config/portcullis/connect.toml`.
fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|home| home.join(".config")))?;
    Some(base.join(FILE))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
}

fn read(path: &Path) -> Result<Defaults, ConnectError> {
    let invalid = |reason: String| ConnectError::Defaults {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    let mut defaults: Defaults =
        toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for file in [&mut defaults.cert, &mut defaults.key, &mut defaults.ca]
        .into_iter()
        .flatten()
    {
        *file = beside(dir, file);
    }
    Ok(defaults)
}

/// A path of the file: `~/...` in the home directory, relative ones beside the file.
fn beside(dir: &Path, file: &Path) -> PathBuf {
    if let (Ok(rest), Some(home)) = (file.strip_prefix("~"), home()) {
        return home.join(rest);
    }
    dir.join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_the_file_fills_in_with_its_paths_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("connect.toml");
        std::fs::write(
            &file,
            "gateway = \"gw.corp.test:443\"\ncert = \"alice.crt\"\nkey = \"/keys/alice.key\"\n",
        )
        .unwrap();
        let options = |gateway: Option<&str>| ConnectOptions {
            defaults: Some(file.clone()),
            gateway: gateway.map(str::to_owned),
            server_name: None,
            cert: None,
            key: None,
            ca: None,
            otp: None,
            listen: None,
            target: "db1:22".into(),
        };
        let settings = settings(&options(None)).unwrap();
        assert_eq!(settings.gateway, "gw.corp.test:443");
        assert_eq!(settings.cert, dir.path().join("alice.crt"));
        assert_eq!(settings.key, PathBuf::from("/keys/alice.key"));
        assert_eq!(settings.ca, None);
        let flagged = super::settings(&options(Some("10.0.0.1:443"))).unwrap();
        assert_eq!(flagged.gateway, "10.0.0.1:443");

        std::fs::write(&file, "gateway = \"gw:443\"\ncertificate = \"a.crt\"\n").unwrap();
        let error = super::settings(&options(None)).unwrap_err().to_string();
        assert!(error.contains("certificate"), "{error}");
        std::fs::write(&file, "gateway = \"gw:443\"\n").unwrap();
        let error = super::settings(&options(None)).unwrap_err().to_string();
        assert!(error.contains("--cert"), "{error}");
    }
}
