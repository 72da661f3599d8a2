//! Request-path normalization before matching, and the upstream path a matched request is
//! proxied to.
//!
//! Both follow Kong: `kong.tools.uri.normalize(uri, true)` for the first, and
//! `get_upstream_uri_v0` (`kong/router/utils.lua`) plus the traditional router's v1 branch for
//! the second (kong-core.md §2 "Upstream path").

use std::borrow::Cow;

/// How the upstream path is built from the service path and the request path (the route's
/// `path_handling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathHandling {
    /// Kong's default, and the only behaviour of the `traditional_compatible` and `expressions`
    /// flavors: those flavors ignore a route's `path_handling = "v1"`.
    #[default]
    V0,
    /// Deprecated; honoured only by Kong's `traditional` flavor. Kept so a caller that emulates
    /// that flavor can ask for it.
    V1,
}

/// RFC 3986 reserved characters. A percent-encoded reserved character is never decoded,
/// because decoding it would change what the path means (`%2F` is not a segment separator).
const RESERVED: &[u8] = b"!*'();:@&=+$,/?%#[]";

/// Normalizes a request path before matching, as Kong does (`normalize(uri, true)`).
///
/// Exactly, in this order:
/// 1. `""` and `"/"` are returned unchanged.
/// 2. Percent-decoding. Every `%XY` triplet (hex digits, either case) is decoded, except a
///    triplet that encodes an RFC 3986 reserved character (``!*'();:@&=+$,/?%#[]``). Such a
///    triplet stays encoded, with its hex digits uppercased (`%2f` becomes `%2F`). Unreserved
///    and all other characters are decoded, so `%61` becomes `a` and `%20` a space. Decoding
///    happens once: `%2561` becomes `%2561`. A malformed triplet (`%zz`, a trailing `%`) is
///    kept as it is. Kong works on bytes; a `&str` cannot hold invalid UTF-8, so if full
///    decoding would produce invalid UTF-8 (a lone `%FF`), the path is decoded again with
///    every triplet for a byte >= 0x80 kept encoded (hex uppercased). Only ASCII is decoded
///    in that case.
/// 3. Dot segments and slash merging run after decoding, so `%2e%2e` counts as `..`. A `.`
///    segment is removed. A `..` segment removes the segment before it, and never climbs
///    above the root. A run of slashes becomes one slash. A trailing `/.` or `/..` leaves a
///    trailing `/`, so `/a/b/..` becomes `/a/`. Segments such as `.hidden`, `..b` and
///    `file.json` are ordinary segments.
///
/// Returns `Cow::Borrowed` when nothing changed, so the common path costs no allocation.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if path.is_empty() || path == "/" {
        return Cow::Borrowed(path);
    }
    let decoded = percent_decode(path);
    if !has_dot_segment_or_double_slash(&decoded) {
        return decoded;
    }
    Cow::Owned(remove_dot_segments(&decoded))
}

/// Builds the upstream path and query for a matched request, as Kong's `get_upstream_uri_v0`
/// (or the traditional router's v1 branch) does.
///
/// * `service_path`: the service's `path`; `None` (or `""`, which Kong's schema rejects) means
///   `/`.
/// * `request_path`: the request path after [`normalize_path`]. It must be the same text the
///   router matched, because `matched_path` is removed from it by length.
/// * `query`: the query string without `?`. `None` means the request had no `?`. `Some("")`
///   means a bare `?`, which Kong keeps.
/// * `matched_path`: [`crate::Match::matched_path`]. It is used only when `strip_path` is on.
///
/// v0 rules (kong-core.md §2). `prefix` is the matched text when strip is on. `post` is the
/// request path minus `prefix` (minus the leading `/` when nothing is stripped), with a
/// leading `./` or `../` dropped. `base` is the service path.
/// * Strip on, `post` not empty: `base` and `post` are joined by exactly one `/`.
/// * Strip on, `post` empty:
///   * if `base` ends in `/`: `/` when base is `/`, else `base` when the request path ends
///     in `/`, else `base` without its trailing `/`;
///   * otherwise: `base`, plus `/` when the request path is longer than 1 and ends in `/`.
/// * Strip off: if `base` ends in `/`, `base` + the request path without its leading `/`.
///   Otherwise `base` when the request path is `/`, else `base` + the request path.
///
/// v1: strip on gives `base + post`, dropping one `/` where two would meet. Strip off gives
/// `base` + the request path without its leading `/`.
///
/// The query string is appended unchanged after `?`.
pub fn upstream_path(
    service_path: Option<&str>,
    request_path: &str,
    query: Option<&str>,
    matched_path: Option<&str>,
    strip_path: bool,
    path_handling: PathHandling,
) -> String {
    let base = match service_path {
        Some(path) if !path.is_empty() => path,
        _ => "/",
    };
    let stripped_prefix = if strip_path { matched_path } else { None };
    // Like Kong, remove the prefix by byte length: a regex match is always a prefix of the
    // path it matched, since regex paths are anchored.
    let raw_postfix = match stripped_prefix {
        Some(prefix) => request_path.get(prefix.len()..).unwrap_or(""),
        None => request_path.get(1..).unwrap_or(""),
    };
    let postfix = sanitize_postfix(raw_postfix);

    let mut upstream = match path_handling {
        PathHandling::V0 => upstream_v0(base, postfix, request_path, strip_path),
        PathHandling::V1 => upstream_v1(base, postfix, request_path, strip_path),
    };
    if let Some(query) = query {
        upstream.push('?');
        upstream.push_str(query);
    }
    upstream
}

/// Kong's `sanitize_uri_postfix`: a postfix that starts with a dot segment must not climb
/// out of the service path.
fn sanitize_postfix(postfix: &str) -> &str {
    if postfix == "." || postfix == ".." {
        return "";
    }
    if let Some(rest) = postfix.strip_prefix("./") {
        return rest;
    }
    if let Some(rest) = postfix.strip_prefix("../") {
        return rest;
    }
    postfix
}

fn upstream_v0(base: &str, postfix: &str, request_path: &str, strip_path: bool) -> String {
    // `base` is never empty here, so trimming one trailing '/' is a valid slice.
    let base_without_slash = base.strip_suffix('/').unwrap_or(base);
    if base.ends_with('/') {
        if !strip_path {
            return concat(base, request_path.get(1..).unwrap_or(""));
        }
        if postfix.is_empty() {
            if base == "/" {
                return "/".to_owned();
            }
            if request_path.ends_with('/') {
                return base.to_owned();
            }
            return base_without_slash.to_owned();
        }
        if postfix.starts_with('/') {
            return concat(base_without_slash, postfix);
        }
        return concat(base, postfix);
    }

    if !strip_path {
        if request_path == "/" {
            return base.to_owned();
        }
        return concat(base, request_path);
    }
    if postfix.is_empty() {
        if request_path.len() > 1 && request_path.ends_with('/') {
            return concat(base, "/");
        }
        return base.to_owned();
    }
    if postfix.starts_with('/') {
        return concat(base, postfix);
    }
    let mut upstream = concat(base, "/");
    upstream.push_str(postfix);
    upstream
}

fn upstream_v1(base: &str, postfix: &str, request_path: &str, strip_path: bool) -> String {
    if !strip_path {
        return concat(base, request_path.get(1..).unwrap_or(""));
    }
    if base.ends_with('/') && postfix.starts_with('/') {
        return concat(base.strip_suffix('/').unwrap_or(base), postfix);
    }
    concat(base, postfix)
}

fn concat(a: &str, b: &str) -> String {
    let mut out = String::with_capacity(a.len() + b.len() + 1);
    out.push_str(a);
    out.push_str(b);
    out
}

/// Step 2 of [`normalize_path`].
fn percent_decode(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let Some(bytes) = decode_triplets(path.as_bytes(), true) else {
        return Cow::Borrowed(path);
    };
    match String::from_utf8(bytes) {
        Ok(decoded) => Cow::Owned(decoded),
        // Decoding only ASCII cannot break UTF-8: the other bytes are copied from a valid
        // `&str` and each decoded byte is a whole ASCII character.
        Err(_) => match decode_triplets(path.as_bytes(), false) {
            Some(bytes) => String::from_utf8(bytes).map_or(Cow::Borrowed(path), Cow::Owned),
            None => Cow::Borrowed(path),
        },
    }
}

/// Decodes the `%XY` triplets of `input`. Returns `None` when the output would equal the
/// input.
fn decode_triplets(input: &[u8], decode_non_ascii: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        let byte = input[i];
        if byte == b'%' && i + 2 < input.len() {
            if let (Some(high), Some(low)) = (hex_value(input[i + 1]), hex_value(input[i + 2])) {
                let decoded = (high << 4) | low;
                let keep_encoded =
                    RESERVED.contains(&decoded) || (decoded >= 0x80 && !decode_non_ascii);
                if keep_encoded {
                    let upper = [
                        input[i + 1].to_ascii_uppercase(),
                        input[i + 2].to_ascii_uppercase(),
                    ];
                    changed |= upper[0] != input[i + 1] || upper[1] != input[i + 2];
                    out.push(b'%');
                    out.extend_from_slice(&upper);
                } else {
                    out.push(decoded);
                    changed = true;
                }
                i += 3;
                continue;
            }
        }
        out.push(byte);
        i += 1;
    }
    changed.then_some(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// True when step 3 of [`normalize_path`] would change `path`. It checks first so that
/// paths with a dot in a file name (`/users.json`) are not copied.
fn has_dot_segment_or_double_slash(path: &str) -> bool {
    path.contains("//")
        || path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// Step 3 of [`normalize_path`]: RFC 3986 `remove_dot_segments`, also merging slashes, in
/// the order of Kong's loop so that the output is the same for any input.
fn remove_dot_segments(path: &str) -> String {
    let mut rest = path;
    // Each output segment keeps its leading '/', so the output is their concatenation.
    let mut output: Vec<&str> = Vec::new();
    while !rest.is_empty() {
        if rest == "/." {
            rest = "/";
        } else if rest == "/.." {
            rest = "/";
            output.pop();
        } else if rest == "." || rest == ".." {
            rest = "";
        } else if let Some(tail) = rest.strip_prefix("../") {
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix("./") {
            rest = tail;
        } else if rest.starts_with("/./") {
            rest = &rest[2..];
        } else if rest.starts_with("/../") {
            rest = &rest[3..];
            output.pop();
        } else if rest.starts_with("//") {
            rest = &rest[1..];
        } else {
            // The segment runs up to the next '/' after its first byte. A '/' is ASCII, so
            // the split point is a char boundary.
            let end = rest.as_bytes()[1..]
                .iter()
                .position(|&byte| byte == b'/')
                .map_or(rest.len(), |position| position + 1);
            output.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    output.concat()
}
