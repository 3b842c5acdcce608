//! Relative paths in a config file mean the file's own directory, never the working
//! directory: `check` run from a shell, `run` started by systemd from `/` and a reload must all
//! read the same files. Applied once, right after parsing, so nothing later sees a relative path.

use std::path::{Path, PathBuf};

use super::RawConfig;

impl RawConfig {
    /// Every path the file names, joined onto `base` (the config file's directory) when
    /// relative. Absolute paths are left as written.
    pub fn resolve_paths(&mut self, base: &Path) {
        let mut paths: Vec<&mut PathBuf> = vec![&mut self.log.dir];
        for certificate in &mut self.tls.certificates {
            paths.extend([&mut certificate.cert, &mut certificate.key]);
        }
        if let Some(acme) = &mut self.tls.acme {
            paths.push(&mut acme.cache_dir);
            paths.extend(acme.directory_ca.as_mut());
        }
        if let Some(gateway) = &mut self.gateway {
            paths.push(&mut gateway.client_ca);
            paths.extend(gateway.crls.iter_mut());
            paths.extend(gateway.issued.as_mut());
            paths.extend(gateway.requests.as_mut());
            paths.extend(gateway.jwks_file.as_mut());
            paths.extend(
                gateway
                    .users
                    .values_mut()
                    .filter_map(|u| u.totp_secret_file.as_mut()),
            );
        }
        paths.extend(self.tunnels.iter_mut().filter_map(|t| t.tls_ca.as_mut()));
        if let Some(snapshots) = &mut self.snapshots {
            paths.push(&mut snapshots.dir);
        }
        let shared = &mut self.shared;
        paths.extend(shared.session_key_file.as_mut());
        paths.extend(shared.redis_password_file.as_mut());
        paths.extend(shared.redis_ca_file.as_mut());
        for path in paths {
            if path.is_relative() {
                *path = lexically_normal(&base.join(&*path));
            }
        }
    }
}

/// `a/b/../c` as `a/c`, and no `.`: what an operator reads in `check`, errors and snapshots.
/// Taken by name, not through links, as a path in the config reads.
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    normal.push(component);
                }
            }
            other => normal.push(other),
        }
    }
    normal
}

/// The directory relative paths in the config at `path` are resolved against: the file's own,
/// made absolute against the working directory once, here.
pub fn base_of(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    absolute
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_the_config_files_directory_and_absolute_ones_stay() {
        let text = "environment = \"t\"\n[listen]\nhttps = \"127.0.0.1:0\"\n\
            [[tls.certificates]]\ncert = \"certs/a.pem\"\nkey = \"/etc/keys/a.key\"\n\
            [snapshots]\ndir = \"../snapshots\"\n";
        let mut raw = crate::config::parse(text).unwrap().strict().unwrap();
        raw.resolve_paths(&base_of(Path::new("/etc/portcullis/portcullis.toml")));
        assert_eq!(
            raw.tls.certificates[0].cert,
            Path::new("/etc/portcullis/certs/a.pem")
        );
        assert_eq!(raw.tls.certificates[0].key, Path::new("/etc/keys/a.key"));
        assert_eq!(raw.snapshots.unwrap().dir, Path::new("/etc/snapshots"));
        // A default is a relative path too: the logs are beside the config.
        assert_eq!(raw.log.dir, Path::new("/etc/portcullis/logs"));
    }
}
