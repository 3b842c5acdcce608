//! The second factor's pages: the code form, the redirect once a code passed, the lockout.

use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};

use super::MFA_PATH;
use crate::body::ResponseBody;
use crate::error::status_response;
use crate::routing::Route;

/// The form, for a request to `route` at `back`.
pub(in crate::gateway) fn form(
    status: StatusCode,
    route: &Route,
    back: &str,
    message: &str,
) -> Response<ResponseBody> {
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Second factor</title>\
         <form method=post action=\"{MFA_PATH}\"><p>{message}</p>\
         <label>Authenticator code <input name=code inputmode=numeric autocomplete=one-time-code autofocus></label>\
         <input type=hidden name=route value=\"{}\">\
         <input type=hidden name=return value=\"{}\"><button>Continue</button></form>\n",
        escape(&route.label.name),
        escape(back)
    );
    let mut response = Response::new(ResponseBody::full(page));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// A passed code: the new session, and back to where the employee was going.
pub(in crate::gateway) fn passed(
    cookie: Option<HeaderValue>,
    back: &str,
) -> Response<ResponseBody> {
    let mut response = status_response(StatusCode::SEE_OTHER);
    if let (Some(cookie), Ok(location)) = (cookie, HeaderValue::from_str(back)) {
        response.headers_mut().insert(SET_COOKIE, cookie);
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// A locked-out user: 429 (RFC 6585 4) with the wait in `Retry-After`, and in the body the
/// minute it ends (only a person the gateway identified gets here).
pub(in crate::gateway) fn locked(remaining: Duration) -> Response<ResponseBody> {
    let mut response = status_response(StatusCode::TOO_MANY_REQUESTS);
    let seconds = remaining.as_secs().max(1);
    *response.body_mut() = ResponseBody::full(format!(
        "locked until {} UTC\n",
        minute_after(SystemTime::now() + remaining)
    ));
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// `HH:MM` of the first minute boundary at or after `at`: the lockout is over by then.
fn minute_after(at: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(at + Duration::from_secs(59)).to_string();
    stamp.get(11..16).unwrap_or("--:--").to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockout_names_the_first_minute_it_is_over_by() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        // 1_800_000_000 is 2027-01-15T08:00:00Z.
        assert_eq!(minute_after(at(0)), "08:00");
        assert_eq!(minute_after(at(1)), "08:01");
        assert_eq!(minute_after(at(59)), "08:01");
        assert_eq!(minute_after(at(61)), "08:02");
    }
}
