//! Request bodies as Kong accepts them: JSON, or form-encoded with Kong's key syntax
//! (`config.minute=5`, `paths[]=/a`, repeated keys), typed by the entity's schema.
//!
//! Public for the fuzz targets (`crates/sluice-fuzz`): this is the parser every client of
//! the Admin API reaches first.

use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The parsed body and whether it came from a form (so its leaves still need typing).
pub struct Input {
    pub object: Map<String, Value>,
    pub from_form: bool,
}

pub fn parse(headers: &HeaderMap, bytes: &[u8]) -> Result<Input, ApiError> {
    if headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ApiError::BadRequest(
            "Multiple Content-Type headers not allowed".to_owned(),
        ));
    }
    let raw_content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let content_type = raw_content_type.to_ascii_lowercase();
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let blank = bytes.iter().all(u8::is_ascii_whitespace);
    if blank && (mime == "application/json" || mime.ends_with("+json")) {
        // Kong: a JSON request must carry a JSON object; nothing at all is not one.
        return Err(ApiError::BadRequest("Cannot parse JSON body".to_owned()));
    }
    if blank {
        return Ok(Input {
            object: Map::new(),
            from_form: false,
        });
    }
    if mime == "application/json" || mime.ends_with("+json") || mime.is_empty() {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(object)) => Ok(Input {
                object,
                from_form: false,
            }),
            Ok(_) => Err(ApiError::BadRequest(
                "the JSON body must be an object".to_owned(),
            )),
            Err(_) if mime.is_empty() => Err(ApiError::UnsupportedMediaType(
                "missing Content-Type: send application/json, application/x-www-form-urlencoded or multipart/form-data"
                    .to_owned(),
            )),
            Err(_) => Err(ApiError::BadRequest("Cannot parse JSON body".to_owned())),
        };
    }
    if mime == "application/x-www-form-urlencoded" {
        return Ok(Input {
            object: parse_form(bytes)?,
            from_form: true,
        });
    }
    if mime == "multipart/form-data" {
        return Ok(Input {
            object: parse_multipart(raw_content_type, bytes)?,
            from_form: true,
        });
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "Content-Type '{mime}' is not supported: send application/json, application/x-www-form-urlencoded or multipart/form-data"
    )))
}

/// Most arguments a form body may have: nginx's `lua_max_post_args` default, past which Kong
/// answers `Too many arguments`.
pub const MAX_FORM_ARGS: usize = 1000;

/// Deepest dotted form key (`config.a.b...`). Kong's deepest plugin configs nest a handful of
/// levels; a bound keeps a hostile key from building a value too deep to handle.
pub const MAX_FORM_DEPTH: usize = 32;

/// `a.b=1&c[]=x&c[]=y&d=1&d=2` → `{"a":{"b":"1"},"c":["x","y"],"d":["1","2"]}`.
fn parse_form(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    form_pairs(form_urlencoded::parse(bytes))
}

/// A multipart body's parts, each a key (its `name`) and a text value (a file part's
/// content), read with Kong's form key syntax.
fn parse_multipart(content_type: &str, bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    use futures_util::FutureExt;
    let bad =
        |error: multer::Error| ApiError::BadRequest(format!("invalid multipart body: {error}"));
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let body = bytes.to_vec();
    let stream = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(body))
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let read = async {
        let mut pairs = Vec::new();
        while let Some(field) = multipart.next_field().await? {
            if pairs.len() == MAX_FORM_ARGS {
                // One past the limit is enough to refuse; the rest is not read.
                pairs.push((String::new(), String::new()));
                break;
            }
            let name = field.name().unwrap_or_default().to_owned();
            pairs.push((name, field.text().await?));
        }
        Ok::<_, multer::Error>(pairs)
    };
    // The whole body is in memory, so the parser never waits: one poll finishes it.
    let pairs = read
        .now_or_never()
        .ok_or_else(|| ApiError::BadRequest("invalid multipart body".to_owned()))?
        .map_err(bad)?;
    form_pairs(
        pairs
            .into_iter()
            .map(|(k, v)| (std::borrow::Cow::Owned(k), std::borrow::Cow::Owned(v))),
    )
}

fn form_pairs<'a>(
    pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
) -> Result<Map<String, Value>, ApiError> {
    let mut root = Map::new();
    for (index, (key, value)) in pairs.enumerate() {
        if index == MAX_FORM_ARGS {
            return Err(ApiError::BadRequest("Too many arguments".to_owned()));
        }
        if key.split('.').nth(MAX_FORM_DEPTH).is_some() {
            let shown: String = key.chars().take(64).collect();
            return Err(ApiError::BadRequest(format!(
                "invalid form key '{shown}...': nested deeper than {MAX_FORM_DEPTH} levels"
            )));
        }
        let mut path: Vec<String> = Vec::new();
        let mut is_array = false;
        for segment in key.split('.') {
            // `paths[]` and `paths[1]` both mean "an element of paths".
            if let Some(open) = segment.find('[') {
                if !segment.ends_with(']') {
                    return Err(ApiError::BadRequest(format!("invalid form key '{key}'")));
                }
                path.push(segment[..open].to_owned());
                is_array = true;
            } else {
                path.push(segment.to_owned());
                is_array = false;
            }
        }
        if path.iter().any(String::is_empty) {
            return Err(ApiError::BadRequest(format!("invalid form key '{key}'")));
        }
        insert(
            &mut root,
            &path,
            Value::String(value.into_owned()),
            is_array,
        )
        .map_err(|()| ApiError::BadRequest(format!("conflicting form key '{key}'")))?;
    }
    Ok(root)
}

fn insert(
    node: &mut Map<String, Value>,
    path: &[String],
    value: Value,
    is_array: bool,
) -> Result<(), ()> {
    let (first, rest) = path.split_first().ok_or(())?;
    if rest.is_empty() {
        match node.get_mut(first) {
            None if is_array => {
                node.insert(first.clone(), Value::Array(vec![value]));
            }
            None => {
                node.insert(first.clone(), value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(existing @ Value::String(_)) => {
                let previous = existing.take();
                *existing = Value::Array(vec![previous, value]);
            }
            Some(_) => return Err(()),
        }
        return Ok(());
    }
    let child = node
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    match child {
        Value::Object(child) => insert(child, rest, value, is_array),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_keys_follow_kong() {
        let got = parse_form(
            b"name=x&config.minute=5&paths[]=/a&paths[]=/b&tags=t1&tags=t2&headers.x-a=1",
        )
        .unwrap();
        assert_eq!(
            Value::Object(got),
            json!({
                "name": "x",
                "config": {"minute": "5"},
                "paths": ["/a", "/b"],
                "tags": ["t1", "t2"],
                "headers": {"x-a": "1"}
            })
        );
    }

    #[test]
    fn multipart_bodies_read_as_forms() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbilling\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"tags[]\"\r\n\r\na\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"tags[]\"\r\n\r\nb\r\n--XyZ--\r\n";
        let got = parse_multipart("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"name": "billing", "tags": ["a", "b"]})
        );
        assert!(parse_multipart("multipart/form-data", body.as_bytes()).is_err());
    }

    #[test]
    fn conflicting_form_keys_are_refused() {
        assert!(parse_form(b"a=1&a.b=2").is_err());
    }

    #[test]
    fn form_bodies_are_bounded_in_arguments_and_depth() {
        let at_limit: Vec<String> = (0..MAX_FORM_ARGS).map(|i| format!("k{i}=v")).collect();
        assert!(parse_form(at_limit.join("&").as_bytes()).is_ok());
        let over: Vec<String> = (0..=MAX_FORM_ARGS).map(|i| format!("k{i}=v")).collect();
        let error = parse_form(over.join("&").as_bytes()).unwrap_err();
        assert_eq!(error.to_string(), "Too many arguments");

        let deep = |levels: usize| format!("config{}=1", ".a".repeat(levels - 1));
        assert!(parse_form(deep(MAX_FORM_DEPTH).as_bytes()).is_ok());
        assert!(parse_form(deep(MAX_FORM_DEPTH + 1).as_bytes()).is_err());
        // The attack: ~4 KB, 1,500 levels. Refused before anything is built.
        assert!(parse_form(deep(1_500).as_bytes()).is_err());
    }
}
