//! The host a request is for, taken the same way on both listeners.
//!
//! RFC 9112 3.2: an HTTP/1.1 request carries exactly one Host; with an absolute-form target the
//! target's authority wins (3.2.2) and is also what we forward, so routing and the upstream can
//! never disagree. RFC 9113 8.3.1: an h2 request names its host in `:authority`, and a `host`
//! header beside it must say the same thing.

use std::net::{IpAddr, Ipv6Addr};

use http::header::HOST;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Uri, Version};

use super::is_dns_name;

/// Why a request's host cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No Host header (h1) and no `:authority` (h2).
    #[error("request has no host")]
    Missing,
    /// More than one Host header.
    #[error("request has more than one Host header")]
    Duplicate,
    /// A Host or authority that is not `name[:port]`.
    #[error("request host is malformed")]
    Malformed,
    /// `:authority` and `host` name different hosts.
    #[error("request :authority and Host disagree")]
    Conflicting,
}

/// The validated host of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHost {
    /// Lowercase, no port, no trailing dot; IPv6 without brackets. What routing and certificate
    /// checks compare against.
    pub name: String,
    /// The authority as the client sent it (name and optional port), forwarded as `Host`.
    pub authority: Authority,
}

impl RequestHost {
    /// The name as it goes into a URL: IPv6 literals get their brackets back.
    pub fn url_host(&self) -> std::borrow::Cow<'_, str> {
        if self.name.contains(':') {
            format!("[{}]", self.name).into()
        } else {
            self.name.as_str().into()
        }
    }
}

/// Extracts and validates the host of a request.
pub fn request_host(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<RequestHost, HostError> {
    let mut host_headers = headers.get_all(HOST).iter();
    let host_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(HostError::Duplicate);
    }
    let authority = match (version, uri.authority(), host_header) {
        (Version::HTTP_2, Some(authority), Some(header)) => {
            let header = parse_authority(header)?;
            if !header.as_str().eq_ignore_ascii_case(authority.as_str()) {
                return Err(HostError::Conflicting);
            }
            authority.clone()
        }
        (_, _, None) if version != Version::HTTP_2 => return Err(HostError::Missing),
        (_, Some(authority), _) => authority.clone(),
        (_, None, Some(header)) => parse_authority(header)?,
        (_, None, None) => return Err(HostError::Missing),
    };
    let (host, port) = split_port(authority.as_str()).ok_or(HostError::Malformed)?;
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok());
    if !port_ok {
        return Err(HostError::Malformed);
    }
    let name = host_name(host)?;
    Ok(RequestHost { name, authority })
}

/// `name[:port]` or `[v6][:port]` split before the port, as `Authority::host` does (without
/// parsing the authority again); `None` for userinfo, which a request's host never carries.
fn split_port(authority: &str) -> Option<(&str, &str)> {
    let bytes = authority.as_bytes();
    if bytes.contains(&b'@') {
        return None;
    }
    let host_end = if bytes.first() == Some(&b'[') {
        bytes.iter().position(|&b| b == b']')? + 1
    } else {
        bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len())
    };
    Some(authority.split_at(host_end))
}

fn parse_authority(value: &HeaderValue) -> Result<Authority, HostError> {
    Authority::try_from(value.as_bytes()).map_err(|_| HostError::Malformed)
}

fn host_name(host: &str) -> Result<String, HostError> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| HostError::Malformed);
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if is_dns_name(&name) || name.parse::<IpAddr>().is_ok() {
        Ok(name)
    } else {
        Err(HostError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(host: &[&str], target: &str) -> Result<RequestHost, HostError> {
        let mut headers = HeaderMap::new();
        for h in host {
            headers.append(HOST, HeaderValue::from_str(h).unwrap());
        }
        request_host(Version::HTTP_11, &target.parse().unwrap(), &headers)
    }

    #[test]
    fn h1_host_rules() {
        let ok = h1(&["Example.COM.:8443"], "/x").unwrap();
        assert_eq!(ok.name, "example.com");
        assert_eq!(ok.authority.as_str(), "Example.COM.:8443");
        assert_eq!(h1(&[], "/"), Err(HostError::Missing));
        assert_eq!(h1(&["a.com", "a.com"], "/"), Err(HostError::Duplicate));
        for bad in [
            "",
            "a b",
            "user@a.com",
            "a.com:port",
            "a.com:",
            "a.com:99999",
            "a..com",
            "[::1",
        ] {
            assert_eq!(h1(&[bad], "/"), Err(HostError::Malformed), "{bad:?}");
        }
        assert_eq!(h1(&["[::1]:8443"], "/").unwrap().name, "::1");
    }

    #[test]
    fn port_is_split_off_where_http_finds_the_host() {
        for text in [
            "a.com",
            "a.com:1",
            "A.COM.:65535",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "[fe80::1%25eth0]:1",
            "a.com:1:2",
        ] {
            let Ok(authority) = Authority::try_from(text) else {
                continue;
            };
            let (host, port) = split_port(text).unwrap();
            assert_eq!(host, authority.host(), "{text:?}");
            assert_eq!(format!("{host}{port}"), text);
        }
        assert_eq!(split_port("u@a.com"), None);
        assert_eq!(split_port("[::1"), None);
    }

    #[test]
    fn absolute_form_target_wins_over_host() {
        let got = h1(&["a.com"], "https://b.com/x").unwrap();
        assert_eq!(got.name, "b.com");
        assert_eq!(got.authority.as_str(), "b.com");
    }

    #[test]
    fn h2_authority_and_host_must_agree() {
        let uri: Uri = "https://a.com/".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            request_host(Version::HTTP_2, &uri, &headers).unwrap().name,
            "a.com"
        );
        headers.insert(HOST, HeaderValue::from_static("A.com"));
        assert!(request_host(Version::HTTP_2, &uri, &headers).is_ok());
        headers.insert(HOST, HeaderValue::from_static("b.com"));
        assert_eq!(
            request_host(Version::HTTP_2, &uri, &headers),
            Err(HostError::Conflicting)
        );
        let no_authority: Uri = "/".parse().unwrap();
        assert_eq!(
            request_host(Version::HTTP_2, &no_authority, &HeaderMap::new()),
            Err(HostError::Missing)
        );
    }
}
