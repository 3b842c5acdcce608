//! The verbs, each in an order that loses nothing: everything is checked (the config as it
//! will be, the CA key, the register) before anything is written; the register is written
//! before the revocation list made from it, the config last, the audit line after all.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::authority::{self, Authority, Issued};
use super::edit::Edit;
use super::listing;
use super::register::Register;
use super::requests;
use super::session::Session;
use super::{CaArgs, EmployeesError, IssueArgs, Verb, bundle, check_name, write};
use crate::audit::Timestamp;

/// Runs one verb, printing what it did.
pub fn run(verb: Verb) -> Result<(), EmployeesError> {
    match verb {
        Verb::Init { ca } => init(&ca),
        Verb::Add {
            name,
            groups,
            issue,
        } => add(&name, &groups, &issue),
        Verb::Renew { name, issue } => renew(&name, &issue),
        Verb::Revoke { name, serial, ca } => revoke(name.as_deref(), serial.as_deref(), &ca),
        Verb::List { config, json } => list(&config, json),
        Verb::RefreshCrl { ca } => refresh_crl(&ca),
        Verb::Request {
            name,
            route,
            tunnel,
            length,
            reason,
            config,
        } => {
            let asked = match (&route, &tunnel) {
                (Some(route), _) => requests::Asked::Route(route),
                (None, Some(tunnel)) => requests::Asked::Tunnel(tunnel),
                (None, None) => return Err(EmployeesError::NoTarget),
            };
            requests::request(&config, &name, &asked, length.into(), &reason)
        }
        Verb::Approve { id, by, config } => requests::approve(&config, id, &by),
        Verb::Deny { id, by, config } => requests::deny(&config, id, by.as_deref()),
        Verb::Requests { config, json } => requests::list(&config, json),
    }
}

fn init(ca: &CaArgs) -> Result<(), EmployeesError> {
    let session = Session::open(&ca.config)?;
    let client_ca = session.client_ca();
    for path in [&client_ca, &ca.ca_key] {
        if path.exists() {
            return Err(EmployeesError::Exists(path.clone()));
        }
    }
    let mut edit = Edit::parse(&session.text)?;
    edit.ensure_gateway(&session.as_written(&client_ca))?;
    edit.ensure_crl(&session.as_written(&session.crl()))?;
    let session = session.edited(edit.text())?;
    if let Some(dir) = ca.ca_key.parent().filter(|d| !d.as_os_str().is_empty()) {
        write::private_dir(dir)?;
    }
    session.check_key_out_of_reach(&ca.ca_key)?;
    let mut register = Register::load(&session.register())?;
    let now = SystemTime::now();
    let (cert_pem, key_pem) = authority::create(now)?;
    write::create(&ca.ca_key, key_pem.as_bytes(), 0o600, None)?;
    write::create(&client_ca, cert_pem.as_bytes(), 0o644, None)?;
    let authority = Authority::load(&client_ca, &ca.ca_key)?;
    let crl = publish_crl(&session, &authority, &mut register, now)?;
    session.save_config()?;
    println!("employee CA made:");
    println!("  certificate  {} (gateway.client_ca)", client_ca.display());
    println!(
        "  key          {} (0600: keep it offline or root's only)",
        ca.ca_key.display()
    );
    println!("  revocation   {} (gateway.crls[0])", crl.display());
    println!(
        "Install contrib/systemd/portcullis-crl.timer so the list is signed again before it expires."
    );
    session.audit("init", "-", "-")
}

fn add(name: &str, groups: &[String], issue: &IssueArgs) -> Result<(), EmployeesError> {
    let IssueArgs { ca, out, validity } = issue;
    check_name(name)?;
    groups.iter().try_for_each(|group| check_name(group))?;
    let session = Session::open(&ca.config)?;
    let gateway = session.gateway()?;
    if gateway.users.contains_key(name) {
        return Err(EmployeesError::Enrolled(name.to_owned()));
    }
    let authority = Authority::load(&gateway.client_ca, &ca.ca_key)?;
    let validity = match validity {
        Some(validity) => (*validity).into(),
        None => session.lifetimes()?.certificate,
    };
    let totp_path = session.beside_config(&format!("{name}.totp"));
    if totp_path.exists() {
        return Err(EmployeesError::Exists(totp_path));
    }
    let mut edit = Edit::parse(&session.text)?;
    edit.add_user(name, groups, &session.as_written(&totp_path))?;
    let session = session.edited(edit.text())?;
    let mut register = Register::load(&session.register())?;

    let issued = authority.issue(name, validity, SystemTime::now())?;
    let secret = bundle::totp_secret()?;
    let uri = bundle::otpauth_uri(name, &secret)?;
    let qr = bundle::qr(&uri)?;
    let passphrase = hand_out(name, &issued, &authority, out)?;
    write::create(
        &totp_path,
        secret.as_bytes(),
        0o600,
        session.service_owner(),
    )?;
    register.issued(name, &issued);
    session.save_register(&register)?;
    session.save_config()?;

    let groups = if groups.is_empty() {
        "none".to_owned()
    } else {
        groups.join(", ")
    };
    println!("enrolled {name} (groups: {groups})");
    print_certificate(name, &issued, out, &passphrase);
    println!("totp secret: {}", totp_path.display());
    println!("otpauth: {uri}");
    println!("{qr}");
    println!("Scan the code (or import the otpauth URI) in an authenticator app.");
    println!(
        "Reload the proxy to let {name} in: systemctl reload portcullis, or POST /reload on the admin listener."
    );
    session.audit("add", name, &issued.serial)
}

fn renew(name: &str, issue: &IssueArgs) -> Result<(), EmployeesError> {
    let IssueArgs { ca, out, validity } = issue;
    let session = Session::open(&ca.config)?;
    let gateway = session.gateway()?;
    if !gateway.users.contains_key(name) {
        return Err(EmployeesError::Unknown(name.to_owned()));
    }
    let authority = Authority::load(&gateway.client_ca, &ca.ca_key)?;
    let validity = match validity {
        Some(validity) => (*validity).into(),
        None => session.lifetimes()?.certificate,
    };
    let mut register = Register::load(&session.register())?;
    let now = SystemTime::now();
    let issued = authority.issue(name, validity, now)?;
    let passphrase = hand_out(name, &issued, &authority, out)?;
    let earlier: Vec<String> = register
        .valid(name, now)
        .map(|e| e.serial.clone())
        .collect();
    register.issued(name, &issued);
    session.save_register(&register)?;
    println!("renewed {name}");
    print_certificate(name, &issued, out, &passphrase);
    for serial in earlier {
        println!(
            "the earlier certificate {serial} stays valid until it expires: `portcullis employees revoke --serial {serial}` ends it now"
        );
    }
    session.audit("renew", name, &issued.serial)
}

fn revoke(name: Option<&str>, serial: Option<&str>, ca: &CaArgs) -> Result<(), EmployeesError> {
    let session = with_crl(Session::open(&ca.config)?)?;
    let gateway = session.gateway()?;
    let authority = Authority::load(&gateway.client_ca, &ca.ca_key)?;
    let mut register = Register::load(&session.register())?;
    let now = SystemTime::now();
    let (user, serials) = match (name, serial) {
        (Some(name), _) => {
            if !gateway.users.contains_key(name) && register.of(name).next().is_none() {
                return Err(EmployeesError::Unknown(name.to_owned()));
            }
            let serials = register.revoke_user(name, now);
            if serials.is_empty() {
                return Err(EmployeesError::NothingToRevoke(name.to_owned()));
            }
            (name.to_owned(), serials)
        }
        (None, Some(serial)) => {
            let (user, serial) = register.revoke_serial(serial, now)?;
            (user, vec![serial])
        }
        (None, None) => return Err(EmployeesError::Unknown(String::new())),
    };
    let crl = publish_crl(&session, &authority, &mut register, now)?;
    session.save_config()?;
    println!("revoked {user}: {}", serials.join(", "));
    println!("revocation list: {}", crl.display());
    println!(
        "Reload the proxy to refuse them and cut their open connections and tunnels: systemctl reload portcullis, or POST /reload."
    );
    session.audit("revoke", &user, &serials.join(","))
}

fn refresh_crl(ca: &CaArgs) -> Result<(), EmployeesError> {
    let session = with_crl(Session::open(&ca.config)?)?;
    let authority = Authority::load(&session.gateway()?.client_ca, &ca.ca_key)?;
    let mut register = Register::load(&session.register())?;
    let now = SystemTime::now();
    let crl = publish_crl(&session, &authority, &mut register, now)?;
    session.save_config()?;
    let next = now + session.lifetimes()?.crl;
    println!(
        "revocation list {} signed (number {}), next update {}",
        crl.display(),
        register.crl_number,
        Timestamp(next)
    );
    session.audit("refresh_crl", "-", "-")
}

fn list(config: &Path, json: bool) -> Result<(), EmployeesError> {
    let session = Session::open(config)?;
    let register = Register::load(&session.register())?;
    let now = SystemTime::now();
    let log = &session.enrolment.log;
    let records = match &log.dir {
        Some(dir) => {
            let kept = Duration::from_secs(u64::from(log.retention_days + 1) * 86_400);
            crate::report::read_audit(dir, kept, now).1
        }
        None => Vec::new(),
    };
    let people = listing::people(session.gateway()?, &register, &records, now);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&people).unwrap_or_default()
        );
    } else {
        print!("{}", listing::text(&people));
    }
    // Reading who holds what is reviewed too, but a reader who may not write the trail
    // still gets the list.
    if let Err(e) = session.audit("list", "-", "-") {
        eprintln!("warning: {e}");
    }
    Ok(())
}

/// The session with a revocation list in `[gateway] crls`, added to the config (not yet
/// written) when it names none.
fn with_crl(session: Session) -> Result<Session, EmployeesError> {
    if session.gateway()?.crls.is_empty() {
        let mut edit = Edit::parse(&session.text)?;
        edit.ensure_crl(&session.as_written(&session.crl()))?;
        return session.edited(edit.text());
    }
    Ok(session)
}

/// Signs the revocation list the register calls for and writes both, the register first: a
/// revocation it holds is never left out of a later list.
fn publish_crl(
    session: &Session,
    authority: &Authority,
    register: &mut Register,
    now: SystemTime,
) -> Result<PathBuf, EmployeesError> {
    let validity = session.lifetimes()?.crl;
    let number = register.next_crl_number();
    let pem = authority.crl(&register.revoked(now), number, now, validity)?;
    session.save_register(register)?;
    let crl = session.crl();
    write::replace(&crl, pem.as_bytes(), 0o644, None)?;
    Ok(crl)
}

/// Writes `out/NAME.crt`, `.key` and `.p12`; the bundle's one-time passphrase.
fn hand_out(
    name: &str,
    issued: &Issued,
    authority: &Authority,
    out: &Path,
) -> Result<String, EmployeesError> {
    let passphrase = bundle::passphrase()?;
    let p12 = bundle::pkcs12(name, issued, authority.cert_der(), &passphrase)?;
    write::private_dir(out)?;
    let file = |extension: &str| out.join(format!("{name}.{extension}"));
    write::replace(&file("crt"), issued.cert_pem.as_bytes(), 0o644, None)?;
    write::replace(&file("key"), issued.key_pem.as_bytes(), 0o600, None)?;
    write::replace(&file("p12"), &p12, 0o600, None)?;
    Ok(passphrase)
}

fn print_certificate(name: &str, issued: &Issued, out: &Path, passphrase: &str) {
    let file = |extension: &str| {
        out.join(format!("{name}.{extension}"))
            .display()
            .to_string()
    };
    println!("certificate: {}", file("crt"));
    println!("serial: {}", issued.serial);
    println!("valid until: {}", Timestamp(issued.not_after));
    println!("key: {}", file("key"));
    println!("pkcs12: {}", file("p12"));
    println!("pkcs12 passphrase: {passphrase}");
    println!("(the passphrase is shown this once: give it to {name} apart from the bundle)");
}
