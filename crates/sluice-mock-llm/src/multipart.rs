//! A minimal `multipart/form-data` reader, enough for uploads sent by the OpenAI SDKs (files,
//! image edits, audio). axum's `multipart` feature is off in the workspace, and a mock only
//! needs part names, file names, sizes and small text fields.
//!
//! It is deliberately lenient: no header folding, no `filename*=` encoding, no nested
//! multiparts. A body it cannot read gives `None`, which handlers treat as "no fields".

/// One part of a form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part<'a> {
    pub(crate) name: String,
    /// Present for file parts.
    pub(crate) filename: Option<String>,
    pub(crate) data: &'a [u8],
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .split(';')
        .find_map(|param| {
            let (key, value) = param.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| value.trim().trim_matches('"').to_owned())
        })
        .filter(|boundary| !boundary.is_empty())
}

/// Splits `body` into its parts. `None` when the content type is not multipart or the body
/// is not framed by its boundary.
pub(crate) fn parse<'a>(content_type: &str, body: &'a [u8]) -> Option<Vec<Part<'a>>> {
    let boundary = boundary(content_type)?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut closing = b"\r\n".to_vec();
    closing.extend_from_slice(&delimiter);

    let mut parts = Vec::new();
    let mut cursor = find(body, &delimiter, 0)? + delimiter.len();
    loop {
        if body[cursor..].starts_with(b"--") {
            return Some(parts);
        }
        // The rest of the delimiter line (transport padding, then CRLF).
        let headers_start = find(body, b"\r\n", cursor)? + 2;
        let (headers, data_start) = if body[headers_start..].starts_with(b"\r\n") {
            ("", headers_start + 2)
        } else {
            let headers_end = find(body, b"\r\n\r\n", headers_start)?;
            let headers = std::str::from_utf8(&body[headers_start..headers_end]).ok()?;
            (headers, headers_end + 4)
        };
        let data_end = find(body, &closing, data_start)?;
        if let Some(part) = part(headers, &body[data_start..data_end]) {
            parts.push(part);
        }
        cursor = data_end + closing.len();
    }
}

/// A part from its header block; parts without a `name` are dropped.
fn part<'a>(headers: &str, data: &'a [u8]) -> Option<Part<'a>> {
    let mut name = None;
    let mut filename = None;
    for line in headers.split("\r\n") {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.trim().eq_ignore_ascii_case("content-disposition") {
            for param in value.split(';').skip(1) {
                let Some((param_key, param_value)) = param.split_once('=') else {
                    continue;
                };
                let param_value = param_value.trim().trim_matches('"').to_owned();
                match param_key.trim().to_ascii_lowercase().as_str() {
                    "name" => name = Some(param_value),
                    "filename" => filename = Some(param_value),
                    _ => {}
                }
            }
        }
    }
    Some(Part {
        name: name?,
        filename,
        data,
    })
}

/// Index of the first `needle` in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|index| index + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT_TYPE: &str = "multipart/form-data; boundary=\"XyZ\"";

    #[test]
    fn reads_text_and_file_parts() {
        let body = b"--XyZ\r\n\
Content-Disposition: form-data; name=\"purpose\"\r\n\
\r\n\
batch\r\n\
--XyZ\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
Content-Type: application/jsonl\r\n\
\r\n\
{\"a\":1}\r\n\r\n\
--XyZ--\r\n";
        let parts = parse(CONTENT_TYPE, body).expect("multipart");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "purpose");
        assert_eq!(parts[0].filename, None);
        assert_eq!(parts[0].data, b"batch");
        let file = &parts[1];
        assert_eq!(file.name, "file");
        assert_eq!(file.filename.as_deref(), Some("in.jsonl"));
        // The CRLF before the delimiter belongs to the delimiter, the one before it to the data.
        assert_eq!(file.data, b"{\"a\":1}\r\n");
    }

    #[test]
    fn rejects_what_is_not_multipart() {
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
        assert_eq!(parse(CONTENT_TYPE, b"no delimiter here"), None);
        assert_eq!(parse(CONTENT_TYPE, b"--XyZ\r\nunterminated"), None);
    }
}
