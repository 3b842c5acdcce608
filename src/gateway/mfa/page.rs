//! The second factor's pages: the code form, the redirect once a code passed, the lockout.

use std::time::Duration;

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

/// A locked-out user: 429 (RFC 6585 4) with the wait in `Retry-After`.
pub(in crate::gateway) fn locked(remaining: Duration) -> Response<ResponseBody> {
    let mut response = status_response(StatusCode::TOO_MANY_REQUESTS);
    let seconds = remaining.as_secs().max(1);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
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
