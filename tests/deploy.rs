//! What ships for deployment holds up: the systemd unit in `contrib/` is rated "OK" or better
//! by systemd's own exposure analysis, and keeps the settings the deploy guide relies on.

mod support;

use std::process::Command;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/systemd/portcullis.service"
);

/// The highest overall exposure systemd rates "OK" (0 is best, 10 worst).
const MAX_EXPOSURE: f64 = 2.0;

#[test]
fn the_shipped_unit_is_rated_ok_by_systemd_analyze() {
    if !support::require_tool("systemd-analyze") {
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", UNIT])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no rating:\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let exposure: f64 = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|figure| figure.parse().ok())
        .unwrap_or_else(|| panic!("unreadable rating: {line}"));
    assert!(exposure <= MAX_EXPOSURE, "{line}\n{stdout}");
}

#[test]
fn the_shipped_unit_keeps_what_the_deploy_guide_relies_on() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let settings: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for wanted in [
        "User=portcullis",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "SystemCallFilter=@system-service",
        "ReadWritePaths=/var/log/portcullis /var/lib/portcullis",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            settings.contains(&wanted),
            "{wanted} is missing from {UNIT}"
        );
    }
    assert!(
        settings
            .iter()
            .any(|l| l.starts_with("RestrictAddressFamilies=")),
        "RestrictAddressFamilies is missing"
    );
}

#[test]
fn the_crl_timer_runs_refresh_crl_as_often_as_check_assumes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd/");
    let timer = std::fs::read_to_string(format!("{dir}portcullis-crl.timer")).unwrap();
    let period = timer
        .lines()
        .find_map(|l| l.strip_prefix("OnUnitActiveSec="))
        .expect("the timer repeats");
    assert_eq!(
        humantime::parse_duration(period).unwrap(),
        portcullis::config::CRL_TIMER_PERIOD,
        "check's warnings assume another period than the timer's"
    );
    let service = std::fs::read_to_string(format!("{dir}portcullis-crl.service")).unwrap();
    let start = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the service runs something");
    assert!(
        start.contains(" employees refresh-crl ") && start.contains("--ca-key /etc/portcullis-ca/"),
        "{start}"
    );
    assert!(service.contains("ExecStartPost=-/bin/systemctl reload portcullis.service"));
}
