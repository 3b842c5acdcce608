//! A real BIND9 `named` on a free loopback port, primary for one zone that takes RFC 2136
//! dynamic updates signed with a TSIG key: the DNS server that DNS-01 (tests/acme_dns.rs)
//! writes its `_acme-challenge` TXT records into, and that Pebble resolves the zone through.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The TSIG key's name, as `tsig-keygen` writes it into the key file.
pub const KEY_NAME: &str = "portcullis-acme";

/// Upper bound for `named` to load its zone and answer for it.
const START: Duration = Duration::from_secs(20);

/// A running `named`, killed when dropped, so that a failed assertion leaves nothing running.
pub struct Bind {
    child: Child,
    pub addr: SocketAddr,
    pub zone: String,
    /// `tsig-keygen`'s output, unchanged: what the proxy's `tsig_key_file` reads.
    pub key_file: PathBuf,
    dir: PathBuf,
}

/// True when `named` and `dig` are installed (see [`super::require_tool`]).
pub fn tool_available() -> bool {
    super::require_tool("named") && super::require_tool("dig")
}

impl Bind {
    /// Writes the key, zone and config into `dir` and starts `named` on them; returns once it
    /// answers for `zone` with authority, panicking with its log when it never does.
    pub fn start(dir: &Path, zone: &str) -> Bind {
        let key_file = dir.join("tsig.key");
        super::write_private(&key_file, keygen());
        std::fs::write(dir.join("zone.db"), zone_file(zone)).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port_udp_too()));
        let conf = dir.join("named.conf");
        std::fs::write(&conf, config(dir, addr.port(), zone)).unwrap();
        let log = std::fs::File::create(dir.join("named.log")).unwrap();
        // -g: the foreground, and every line to stderr, config errors included (the config's
        // `logging` would only start once the config parsed). No -u: as root, named stays
        // root with every capability but binding low ports dropped, and, owning `dir`, can
        // still write there. -n 1: one worker, as tests run many servers side by side.
        let program = program(dir);
        let mut command = Command::new(&program);
        command
            .args(["-g", "-n", "1", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // The copy was just written: a process another test forks meanwhile holds it open for
        // writing until it execs, and exec of a file open for writing fails (ETXTBSY).
        let mut tries = 0;
        let child = loop {
            match command.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                spawned => break spawned.unwrap(),
            }
        };
        let mut bind = Bind {
            child,
            addr,
            zone: zone.to_owned(),
            key_file,
            dir: dir.to_owned(),
        };
        bind.wait_until_authoritative();
        bind
    }

    /// The TXT strings at `name` now, one per record, unquoted (empty when there are none).
    pub fn txt(&self, name: &str) -> Vec<String> {
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(["+short", "+tcp", "TXT", name])
            .output()
            .expect("dig comes with the DNS tests (tool_available)");
        assert!(out.status.success(), "dig failed: {out:?}");
        // A record of several strings prints as `"a" "b"`; a validator reads them joined.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().trim_matches('"').replace("\" \"", ""))
            .collect()
    }

    /// Runs `nsupdate` with the zone's key: `commands` are its `update ...` lines.
    pub fn nsupdate(&self, commands: &str) {
        let script = format!(
            "server 127.0.0.1 {}\nzone {}\n{commands}\nsend\n",
            self.addr.port(),
            self.zone
        );
        let mut child = Command::new("nsupdate")
            .arg("-k")
            .arg(&self.key_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsupdate comes with bind9-dnsutils");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nsupdate failed: {out:?}");
    }

    /// Everything `named` said: startup, each update granted or refused, and why.
    pub fn named_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }

    fn wait_until_authoritative(&mut self) {
        let deadline = Instant::now() + START;
        // The port opens before the zone has loaded; until then named answers SERVFAIL.
        while !soa_answered(self.addr, &self.zone) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("named exited ({status}):\n{}", self.named_log());
            }
            if Instant::now() > deadline {
                panic!("named never answered for its zone:\n{}", self.named_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh HMAC-SHA256 key in BIND's `key "…" { … };` syntax, which named.conf includes and
/// the proxy reads.
fn keygen() -> Vec<u8> {
    let out = Command::new("tsig-keygen")
        .args(["-a", "hmac-sha256", KEY_NAME])
        .output()
        .expect("tsig-keygen comes with named");
    assert!(out.status.success(), "tsig-keygen failed: {out:?}");
    out.stdout
}

/// The zone with every name in it on loopback, so that Pebble, resolving through this server,
/// reaches the proxy for whatever name a test orders.
fn zone_file(zone: &str) -> String {
    format!(
        "$TTL 60\n\
         @ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n\
         @ IN NS ns1.{zone}.\n\
         @ IN A 127.0.0.1\n\
         ns1 IN A 127.0.0.1\n\
         * IN A 127.0.0.1\n"
    )
}

/// Everything named writes (pid, lock, session key, journal, managed keys) kept in `dir`, so
/// that servers side by side never meet; no rndc channel; and the key may change TXT records
/// only, as a key given to an ACME client should.
fn config(dir: &Path, port: u16, zone: &str) -> String {
    let dir = dir.display();
    format!(
        "options {{\n\
         \x20   directory \"{dir}\";\n\
         \x20   listen-on port {port} {{ 127.0.0.1; }};\n\
         \x20   listen-on-v6 {{ none; }};\n\
         \x20   recursion no;\n\
         \x20   dnssec-validation no;\n\
         \x20   pid-file \"{dir}/named.pid\";\n\
         \x20   lock-file \"{dir}/named.lock\";\n\
         \x20   session-keyfile \"{dir}/session.key\";\n\
         }};\n\
         controls {{ }};\n\
         include \"{dir}/tsig.key\";\n\
         zone \"{zone}\" {{\n\
         \x20   type primary;\n\
         \x20   file \"{dir}/zone.db\";\n\
         \x20   update-policy {{ grant {KEY_NAME} zonesub TXT; }};\n\
         }};\n"
    )
}

/// A copy of `named` in `dir`: where AppArmor is on, Debian's profile for /usr/sbin/named
/// keeps it to /etc/bind and /var/lib/bind, so the installed binary could not read `dir`.
fn program(dir: &Path) -> PathBuf {
    let installed = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("named"))
        .find(|p| p.is_file())
        .expect("named is installed (tool_available)");
    let copy = dir.join("named");
    std::fs::copy(installed, &copy).unwrap();
    copy
}

/// [`super::free_port`], also free for UDP: named binds both, and fails on either taken.
fn free_port_udp_too() -> u16 {
    (0..100)
        .map(|_| super::free_port())
        .find(|&port| UdpSocket::bind(("127.0.0.1", port)).is_ok())
        .expect("no loopback port free for both TCP and UDP")
}

/// Whether `addr` answers a SOA query for `zone` over TCP with authority and an answer: the
/// zone has loaded. A bare query, so that waiting needs no `dig`.
fn soa_answered(addr: SocketAddr, zone: &str) -> bool {
    let ask = || -> std::io::Result<[u8; 14]> {
        let mut query = vec![0x50, 0x43, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in zone.trim_end_matches('.').split('.') {
            query.push(label.len() as u8);
            query.extend(label.as_bytes());
        }
        query.extend([0, 0, 6, 0, 1]);
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(&[&(query.len() as u16).to_be_bytes()[..], &query].concat())?;
        // The length prefix, then the header: flags at 4..6, the answer count at 8..10.
        let mut head = [0; 14];
        stream.read_exact(&mut head)?;
        Ok(head)
    };
    ask().is_ok_and(|h| h[4] & 0x04 != 0 && h[5] & 0x0f == 0 && h[8..10] != [0, 0])
}
