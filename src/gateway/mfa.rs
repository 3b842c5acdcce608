//! The second factor: a current RFC 6238 code, entered once per session in a small built-in
//! form, then a short-lived signed cookie (HttpOnly, Secure, SameSite=Strict) bound to the
//! employee's certificate. A code is accepted once (RFC 6238 5.2): each user's last accepted
//! time step is remembered and nothing at or before it passes again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use http::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::ClientIdentity;
use crate::body::ResponseBody;
use crate::proxy::Routed;

/// Where the form posts.
pub const MFA_PATH: &str = "/.portcullis/mfa";
/// The session cookie's name.
pub const MFA_COOKIE: &str = "portcullis_mfa";
/// A form body is a code and a path; anything longer is not one.
const MAX_FORM_BYTES: usize = 2048;
const FORM_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Session signing key and replay memory, kept across reloads.
#[derive(Debug)]
pub struct MfaState {
    key: hmac::Key,
    last_step: Mutex<HashMap<String, u64>>,
}

pub(super) enum Outcome {
    /// A valid session cookie: go on.
    Session,
    /// A correct code: redirect back with a new session.
    Passed(Response<ResponseBody>),
    /// A wrong, expired or replayed code.
    Failed(Response<ResponseBody>),
    /// No session yet: the form.
    Form(Response<ResponseBody>),
}

impl MfaState {
    /// A fresh signing key; sessions do not outlive the process.
    pub fn new() -> Result<Self, aws_lc_rs::error::Unspecified> {
        Ok(Self {
            key: hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())?,
            last_step: Mutex::new(HashMap::new()),
        })
    }

    pub(super) async fn check(
        &self,
        routed: &mut Routed,
        client: &ClientIdentity,
        totp: &totp_rs::Totp,
        session: Duration,
    ) -> Outcome {
        let now = unix_now();
        if self.has_session(routed, client, now) {
            strip_session_cookie(routed);
            return Outcome::Session;
        }
        let request = &mut routed.request;
        if request.method() != Method::POST || request.uri().path() != MFA_PATH {
            let back = request.uri().path().to_owned();
            return Outcome::Form(form(StatusCode::UNAUTHORIZED, &back, ""));
        }
        let body = tokio::time::timeout(
            FORM_READ_TIMEOUT,
            Limited::new(request.body_mut(), MAX_FORM_BYTES).collect(),
        )
        .await;
        let fields: HashMap<String, String> = match body {
            Ok(Ok(body)) => form_urlencoded::parse(&body.to_bytes())
                .into_owned()
                .collect(),
            _ => HashMap::new(),
        };
        let back = fields
            .get("return")
            .filter(|p| p.starts_with('/') && !p.starts_with("//") && !p.contains('\\'))
            .cloned()
            .unwrap_or_else(|| "/".to_owned());
        let code = fields.get("code").map(|c| c.trim()).unwrap_or_default();
        match totp
            .check(code, now)
            .filter(|step| self.accept_once(&client.user, *step))
        {
            Some(_) => Outcome::Passed(self.passed(client, now, session, &back)),
            None => Outcome::Failed(form(
                StatusCode::FORBIDDEN,
                &back,
                "That code was not accepted.",
            )),
        }
    }

    fn accept_once(&self, user: &str, step: u64) -> bool {
        let Ok(mut last) = self.last_step.lock() else {
            return false;
        };
        let previous = last.entry(user.to_owned()).or_insert(0);
        if step <= *previous {
            return false;
        }
        *previous = step;
        true
    }

    fn signature(&self, client: &ClientIdentity, expiry: u64) -> hmac::Tag {
        hmac::sign(&self.key, &signed_message(client, expiry))
    }

    fn passed(
        &self,
        client: &ClientIdentity,
        now: u64,
        session: Duration,
        back: &str,
    ) -> Response<ResponseBody> {
        let expiry = now + session.as_secs();
        let tag = self.signature(client, expiry);
        let cookie = format!(
            "{MFA_COOKIE}={expiry}.{}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            hex(tag.as_ref()),
            session.as_secs()
        );
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::SEE_OTHER;
        if let (Ok(cookie), Ok(location)) =
            (HeaderValue::from_str(&cookie), HeaderValue::from_str(back))
        {
            response.headers_mut().insert(SET_COOKIE, cookie);
            response.headers_mut().insert(LOCATION, location);
        }
        response
    }

    fn has_session(&self, routed: &Routed, client: &ClientIdentity, now: u64) -> bool {
        session_cookies(routed).any(|value| {
            let Some((expiry, tag)) = value.split_once('.') else {
                return false;
            };
            let (Ok(expiry), Some(tag)) = (expiry.parse::<u64>(), unhex(tag)) else {
                return false;
            };
            expiry > now && hmac::verify(&self.key, &signed_message(client, expiry), &tag).is_ok()
        })
    }
}

/// A session is this certificate, this user, until this time.
fn signed_message(client: &ClientIdentity, expiry: u64) -> Vec<u8> {
    let mut message = client.fingerprint.to_vec();
    message.extend_from_slice(&expiry.to_be_bytes());
    message.extend_from_slice(client.user.as_bytes());
    message
}

/// The `name=value` pairs of every Cookie header (RFC 6265 5.4).
fn cookie_pairs(headers: &http::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
}

fn session_cookies(routed: &Routed) -> impl Iterator<Item = &str> {
    cookie_pairs(routed.request.headers())
        .filter_map(|pair| pair.strip_prefix(MFA_COOKIE)?.strip_prefix('='))
}

/// Our session cookie is ours: the upstream never sees it.
fn strip_session_cookie(routed: &mut Routed) {
    let ours = format!("{MFA_COOKIE}=");
    let kept: Vec<&str> = cookie_pairs(routed.request.headers())
        .filter(|pair| !pair.starts_with(&ours))
        .collect();
    let value = HeaderValue::from_str(&kept.join("; "));
    let headers = routed.request.headers_mut();
    headers.remove(COOKIE);
    if let Ok(value) = value
        && !value.is_empty()
    {
        headers.insert(COOKIE, value);
    }
}

fn form(status: StatusCode, back: &str, message: &str) -> Response<ResponseBody> {
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Second factor</title>\
         <form method=post action=\"{MFA_PATH}\"><p>{message}</p>\
         <label>Authenticator code <input name=code inputmode=numeric autocomplete=one-time-code autofocus></label>\
         <input type=hidden name=return value=\"{}\"><button>Continue</button></form>\n",
        escape(back)
    );
    let mut response = Response::new(ResponseBody::full(page));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
