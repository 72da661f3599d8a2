//! The header and path rules of a proxied request, kept apart from the pipeline so each can
//! be tested alone: forwarded headers, hop-by-hop stripping, the Host and the re-encoding of
//! the path that goes upstream.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Whether the `Connection` header lists `token`.
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Kong's `X-Forwarded-*` and `X-Real-IP` for the upstream. The client's own
/// `X-Forwarded-For` is extended, every other one is replaced: Sluice is the edge.
pub(crate) fn forwarded_headers(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    local_port: u16,
    host_header: &str,
    raw_path: &str,
    stripped_prefix: Option<&str>,
) {
    let client_ip = peer.ip().to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {client_ip}"),
        None => client_ip.clone(),
    };
    let set = |headers: &mut HeaderMap, name: &HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), value);
        }
    };
    set(headers, &X_FORWARDED_FOR, &forwarded_for);
    set(headers, &X_FORWARDED_PROTO, "http");
    set(headers, &X_FORWARDED_HOST, strip_port(host_header));
    headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(local_port));
    set(headers, &X_FORWARDED_PATH, raw_path);
    set(headers, &X_REAL_IP, &client_ip);
    // Only a prefix Sluice stripped is forwarded; a client's own value is not trusted.
    match stripped_prefix {
        Some(prefix) => set(headers, &X_FORWARDED_PREFIX, prefix),
        None => {
            headers.remove(&X_FORWARDED_PREFIX);
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are not forwarded.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        for name in listed.split(',') {
            let name = name.trim();
            if !name.is_empty() && !name.eq_ignore_ascii_case("close") {
                headers.remove(name);
            }
        }
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The router matches on the percent-decoded path; what goes upstream must be a valid URI
/// again, so bytes outside RFC 3986's path characters are re-escaped (a decoded space becomes
/// `%20`, UTF-8 stays escaped). Existing escapes and the query are kept as they are.
pub(crate) fn encode_path(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path_and_query.len());
    for (i, &b) in bytes.iter().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@/".contains(&b)
            || (b == b'%'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

pub(crate) fn host_with_port(host: &str, port: u16, https: bool) -> String {
    if (https && port == 443) || (!https && port == 80) {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests;
