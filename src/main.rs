//! The `portcullis` command: parses the CLI and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use portcullis::config::{Config, ConfigError, Privileges};

/// jemalloc, for memory: it keeps an idle connection's buffers in page-aligned size classes, so
/// the pages a connection never wrote are never resident (docs/performance.md, idle memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DEFAULT_CONFIG: &str = portcullis::config::DEFAULT_PATH;

#[derive(Parser)]
#[command(
    version,
    about = "An HTTPS edge reverse proxy that enforces your security policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config and print what it would expose.
    Check {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Review who reached which internal route, from the audit trail.
    AccessReport {
        /// Config file (for the log directory, users and grants).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// How far back, e.g. "30d", "12h".
        #[arg(long, default_value = "30d")]
        since: humantime::Duration,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a snapshot of the proxy's state into [snapshots] dir and prune old ones.
    ///
    /// Restore one with `portcullis restore ARCHIVE --identity FILE`.
    Snapshot {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Bring an instance back from a snapshot: decrypt, judge, list, write, then check.
    ///
    /// portcullis restore /backup/portcullis-20261202T060000Z.tar.gz.age --identity key.txt
    Restore(portcullis::snapshot::RestoreOptions),
    /// Open a tunnel through the gateway and relay stdin/stdout: ssh's ProxyCommand.
    ///
    /// ssh -o ProxyCommand='portcullis connect --gateway gw.example.internal:443 %h:%p' db1
    Connect(portcullis::tunnel_client::ConnectOptions),
    /// Enrol, renew and revoke employees: their certificates, TOTP secrets and config entries.
    #[command(subcommand)]
    Employees(portcullis::employees::Verb),
    /// `check` as root runs this as `[server] user` to try each file the config names.
    #[command(name = portcullis::privilege::JUDGE_VERB, hide = true)]
    JudgeAccess,
    /// Create a local CA and a localhost certificate.
    DevCerts {
        /// Where to write them.
        #[arg(long, default_value = portcullis::dev_certs::DEV_DIR_NAME)]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Run {
        config: DEFAULT_CONFIG.into(),
    });
    let result = match command {
        Command::Run { config } => run(&config),
        Command::Check { config } => check(&config),
        Command::DevCerts { dir } => dev_certs(&dir),
        Command::JudgeAccess => {
            portcullis::privilege::answer_probes(std::io::stdin(), std::io::stdout().lock())
                .map_err(Into::into)
        }
        Command::Connect(options) => connect(options),
        Command::Employees(verb) => portcullis::employees::run(verb).map_err(Into::into),
        Command::Snapshot { config } => snapshot(&config),
        Command::Restore(options) => restore(&options),
        Command::AccessReport {
            config,
            since,
            json,
        } => access_report(&config, since.into(), json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", portcullis::logging::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Loads a config, first generating dev certificates it points at but that are missing.
fn load(path: &Path) -> anyhow::Result<(Config, Privileges)> {
    let parsed = Config::read_raw(path).map_err(|e| invalid(path, e))?;
    let raw = &parsed.raw;
    if let Some(dir) = portcullis::dev_certs::ensure_for_config(raw)? {
        eprintln!("generated development certificates in {}", dir.display());
        let port = raw
            .listen
            .public_https_port
            .map(|port| port.to_string())
            .or_else(|| raw.listen.https.rsplit_once(':').map(|(_, p)| p.to_owned()));
        eprintln!(
            "{}",
            portcullis::dev_certs::trust_hint(&dir, port.as_deref())
        );
    }
    let config = Config::from_parsed(parsed).map_err(|e| invalid(path, e))?;
    let privileges = config.resolve().map_err(|e| invalid(path, e))?;
    Ok((config, privileges))
}

fn invalid(path: &Path, e: ConfigError) -> anyhow::Error {
    anyhow::anyhow!("{} is not a valid config:\n{e}", path.display())
}

fn run(path: &Path) -> anyhow::Result<()> {
    portcullis::logging::init();
    let (config, privileges) = load(path)?;
    // Bound as started (root, or with CAP_NET_BIND_SERVICE), then never again privileged;
    // all before the runtime starts a thread.
    let listeners = portcullis::Listeners::bind(&config)?;
    portcullis::privilege::drop_privileges(&privileges)?;
    portcullis::sandbox::confine(&config.files, path)?;
    // Read again as the process now is, so that a file reload could not read fails now.
    let (config, _) = Config::load(path).map_err(|e| {
        anyhow::anyhow!(
            "{} cannot be read with the privileges left after start-up, so reload would fail too:\n{e}",
            path.display()
        )
    })?;
    // One worker needs no work stealing: a current-thread runtime spares its cross-thread
    // queues and wake-ups, which is what a per-core figure should measure.
    let mut runtime = match config.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let running = portcullis::start_from_file(config, listeners, path.to_owned()).await?;
        // Handlers first: a supervisor that signals as soon as it reads "listening" must not
        // meet the default action.
        let stop = shutdown_signal()?;
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing SIGHUP handler")?;
        tracing::info!(
            https = %running.https_addr,
            http = ?running.http_addr,
            admin = ?running.admin_addr,
            health = ?running.health_addr,
            "listening"
        );
        let running = std::sync::Arc::new(running);
        tokio::spawn(reload_on_sighup(running.clone(), hangup));
        stop.await?;
        tracing::info!("shutting down");
        if !running.shutdown().await {
            tracing::warn!("shutdown grace elapsed with connections still open");
        }
        Ok(())
    })
}

/// SIGHUP re-reads the config file; an invalid one is refused and the running one stays.
async fn reload_on_sighup(
    running: std::sync::Arc<portcullis::Running>,
    mut hangup: tokio::signal::unix::Signal,
) {
    while hangup.recv().await.is_some() {
        let reloading = running.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            reloading.reload_file(portcullis::audit::Trigger::Signal)
        })
        .await;
        // A refusal is logged, with its reasons, by the reload itself.
        if outcome.is_err() {
            tracing::error!("reload failed");
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either signal.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        Ok(())
    })
}

/// Validates without side effects: no file is written, not even missing dev certificates.
fn check(path: &Path) -> anyhow::Result<()> {
    let parsed = Config::read_raw(path).map_err(|e| invalid(path, e))?;
    let missing_dev = portcullis::dev_certs::missing_for_config(&parsed.raw).map(Path::to_owned);
    let config = Config::from_parsed(parsed).map_err(|e| match &missing_dev {
        Some(dir) => invalid(path, e).context(format!(
            "development certificates are missing: `portcullis dev-certs --dir {}` creates them (`run` does on first start)",
            portcullis::dev_certs::from_here(dir).display()
        )),
        None => invalid(path, e),
    })?;
    let privileges = config.resolve().map_err(|e| invalid(path, e))?;
    let judged_as = judge_as_account(path, &config, &privileges)?;
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    if !portcullis::sandbox::available() {
        eprintln!(
            "warning: Landlock is not available on this kernel: `run` cannot restrict file access"
        );
    }
    print!("{}", portcullis::config::describe(&config));
    println!(
        "relative paths are resolved against {} (the config file's directory)",
        portcullis::config::raw::base_of(path).display()
    );
    if let Some(user) = judged_as {
        println!("files judged as {user}, the account `run` switches to");
    }
    Ok(())
}

/// With `[server] user`, the files are judged as that account, as `run` will use them; returns
/// the account's name when it was.
fn judge_as_account(
    path: &Path,
    config: &Config,
    privileges: &Privileges,
) -> anyhow::Result<Option<String>> {
    use portcullis::privilege::Judged;
    let Some(run_as) = &privileges.run_as else {
        return Ok(None);
    };
    match portcullis::privilege::judge_files(run_as, path, &config.files) {
        Judged::As(problems) if problems.is_empty() => Ok(Some(run_as.user.clone())),
        Judged::As(problems) => Err(invalid(path, ConfigError::Invalid(problems))),
        Judged::NotPossible => {
            eprintln!(
                "warning: server.user: files not judged as {:?}: only root or that account can",
                run_as.user
            );
            Ok(None)
        }
    }
}

fn access_report(path: &Path, since: std::time::Duration, json: bool) -> anyhow::Result<()> {
    let (config, _) = load(path)?;
    let dir = config
        .log
        .dir
        .clone()
        .context("no log directory configured")?;
    let (start, records) =
        portcullis::report::read_audit(&dir, since, std::time::SystemTime::now());
    let report = portcullis::report::build(&config, start, &records);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn snapshot(path: &Path) -> anyhow::Result<()> {
    let (config, privileges) = Config::load(path).map_err(|e| invalid(path, e))?;
    let settings = config
        .snapshots
        .as_ref()
        .context("no [snapshots] section in the config")?;
    // As the service's account: files it writes (an audit file, the archive) stay its own.
    portcullis::privilege::drop_privileges(&privileges)?;
    let audit = portcullis::audit::Audit::new(&config.log).context("starting the audit writer")?;
    let sources = portcullis::snapshot::Sources::of(&config, path);
    let outcome = portcullis::snapshot::snapshot_and_prune(
        &sources,
        settings,
        &audit,
        std::time::SystemTime::now(),
    );
    audit.close();
    let taken = outcome?;
    println!(
        "{} ({} files, {} bytes)",
        taken.archive.display(),
        taken.members.len(),
        taken.bytes
    );
    for member in &taken.members {
        println!("  /{member}");
    }
    Ok(())
}

fn restore(options: &portcullis::snapshot::RestoreOptions) -> anyhow::Result<()> {
    use portcullis::snapshot::Restored;
    let (config, files) = match portcullis::snapshot::restore(options)? {
        Restored::Listed => return Ok(()),
        Restored::Written { config, files } => (config, files),
    };
    println!("restored {files} files");
    if let Some(to) = &options.to {
        println!(
            "under {}: its config names paths outside it, so it is not checked there",
            to.display()
        );
        return Ok(());
    }
    // The checks of `check`, as the account that will run: a restore that cannot start says so
    // now, not at the next `systemctl start`.
    check(&config).context("restored, but the config does not pass check")?;
    println!(
        "next: start the service (systemctl start portcullis, or portcullis run -c {})",
        config.display()
    );
    Ok(())
}

fn connect(options: portcullis::tunnel_client::ConnectOptions) -> anyhow::Result<()> {
    if options.otp.is_some() {
        portcullis::tunnel_client::hide_otp_flag();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let relayed = runtime.block_on(async {
        if let Some(addr) = options.listen {
            return portcullis::tunnel_client::listen(&options, addr).await;
        }
        let local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        portcullis::tunnel_client::connect(&options, local).await
    });
    // A read of stdin may still be blocked in its thread: do not wait for it.
    runtime.shutdown_background();
    Ok(relayed?)
}

fn dev_certs(dir: &Path) -> anyhow::Result<()> {
    if portcullis::dev_certs::ensure(dir)? {
        println!(
            "created a development CA and a localhost certificate in {}",
            dir.display()
        );
    } else {
        println!(
            "development certificates already exist in {}",
            dir.display()
        );
    }
    eprintln!("{}", portcullis::dev_certs::trust_hint(dir, None));
    Ok(())
}
