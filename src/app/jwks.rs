//! `[gateway] jwks_file`: the keys that verify `Portcullis-Assertion`, written where an upstream
//! without network access to `/.portcullis/jwks.json` can read them. The file holds the same
//! set as the endpoint (the previous, current and next key), so an upstream that reads it at
//! least once a day never meets a token it cannot verify.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::LiveApp;
use crate::gateway::Assertions;
use crate::logging::Throttle;

/// How often the file is compared with the set in service: keys change once a day.
const EVERY: Duration = Duration::from_secs(60);
/// Failed writes are reported at most once an hour.
static FAILURES: Throttle = Throttle::new(Duration::from_secs(3600));

/// Keeps the file of the configuration in service current until `cut`.
pub fn publish(live: LiveApp, assertions: Arc<Assertions>, cut: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let path = {
                let app = live.load();
                app.gateway
                    .as_ref()
                    .and_then(|g| g.settings.jwks_file.clone())
            };
            if let Some(path) = path
                && let Err(error) = write_if_changed(&path, &assertions.jwks(SystemTime::now()))
            {
                FAILURES.warn(|_| {
                    tracing::warn!(file = %path.display(), %error, "the assertion keys could not be written");
                });
            }
            tokio::select! {
                () = cut.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    });
}

/// Replaces `path` with `jwks`, whole (a reader never sees half a set), when it says otherwise.
fn write_if_changed(path: &Path, jwks: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|there| there == jwks) {
        return Ok(());
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, jwks)?;
    std::fs::set_permissions(
        &partial,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    std::fs::rename(&partial, path)
}
