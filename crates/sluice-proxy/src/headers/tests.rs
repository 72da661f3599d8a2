//! Table-driven checks of the header and path helpers.

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderValue};

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[test]
fn encode_path_re_escapes_only_what_a_uri_path_cannot_hold() {
    let cases = [
        ("/plain/path", "/plain/path"),
        ("/a b", "/a%20b"),
        ("/caf\u{e9}", "/caf%C3%A9"),
        ("/already%20escaped", "/already%20escaped"),
        ("/bad%zzescape", "/bad%25zzescape"),
        ("/trailing%2", "/trailing%252"),
        ("/sub-delims!$&'()*+,;=:@", "/sub-delims!$&'()*+,;=:@"),
        ("/q?x=a b&y=%zz", "/q?x=a b&y=%zz"), // the query is kept as the client sent it
        ("/\"quote\"<>", "/%22quote%22%3C%3E"),
    ];
    for (input, expected) in cases {
        assert_eq!(encode_path(input), expected, "{input}");
    }
}

#[test]
fn strip_port_and_host_with_port() {
    let cases = [
        ("example.com", "example.com"),
        ("example.com:8000", "example.com"),
        ("[::1]:8000", "[::1]"),
        ("[::1]", "[::1]"),
        ("", ""),
    ];
    for (input, expected) in cases {
        assert_eq!(strip_port(input), expected, "{input}");
    }
    let cases = [
        ("a", 80, false, "a"),
        ("a", 443, true, "a"),
        ("a", 443, false, "a:443"),
        ("a", 80, true, "a:80"),
        ("a", 8080, false, "a:8080"),
    ];
    for (host, port, https, expected) in cases {
        assert_eq!(host_with_port(host, port, https), expected);
    }
}

#[test]
fn connection_tokens_are_matched_case_insensitively_across_values() {
    let map = headers(&[
        ("connection", "keep-alive, Upgrade"),
        ("connection", "x-foo"),
    ]);
    assert!(connection_has(&map, "upgrade"));
    assert!(connection_has(&map, "X-FOO"));
    assert!(!connection_has(&map, "close"));
    assert!(!connection_has(&HeaderMap::new(), "upgrade"));
}

#[test]
fn hop_by_hop_headers_and_the_ones_connection_lists_are_stripped() {
    let mut map = headers(&[
        ("connection", "X-Secret, close"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("trailer", "x"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic x"),
        ("x-kept", "yes"),
    ]);
    strip_hop_by_hop(&mut map);
    let left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, ["x-kept"]);
}

#[test]
fn forwarded_headers_extend_the_client_chain_and_replace_the_rest() {
    let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
    /// (client headers, stripped prefix, expected X-Forwarded-For, expected prefix)
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
    );
    let cases: [Case; 3] = [
        (&[], None, "10.1.2.3", None),
        (
            &[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-prefix", "/spoof"),
            ],
            None,
            "1.1.1.1, 10.1.2.3",
            None,
        ),
        (
            &[("x-real-ip", "6.6.6.6"), ("x-forwarded-proto", "https")],
            Some("/api"),
            "10.1.2.3",
            Some("/api"),
        ),
    ];
    for (client, prefix, expected_for, expected_prefix) in cases {
        let mut map = headers(client);
        forwarded_headers(&mut map, peer, 8000, "gw.example:8000", "/api/x", prefix);
        assert_eq!(map["x-forwarded-for"], expected_for);
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "gw.example");
        assert_eq!(map["x-forwarded-port"], "8000");
        assert_eq!(map["x-forwarded-path"], "/api/x");
        assert_eq!(map["x-real-ip"], "10.1.2.3", "not spoofable");
        assert_eq!(
            map.get("x-forwarded-prefix").map(|v| v.to_str().unwrap()),
            expected_prefix
        );
    }
}
