//! Kong's request-transformer values may be templates: `$(headers.host)`,
//! `$(query_params["page"] or "1")`, `$(uri_captures.user)`. Kong evaluates them as sandboxed
//! Lua; Sluice reads the forms Kong documents (a lookup in `headers`, `query_params` or
//! `uri_captures` by `.name`, `["name"]` or `[number]`, with an optional `or "default"`) and
//! refuses any other expression when the config is written, so nothing fails per request.

/// A value as pieces to join.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Lookup {
        source: Source,
        key: String,
        default: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Source {
    Headers,
    QueryParams,
    UriCaptures,
}

/// What a template reads from.
pub(crate) trait Env: Sync {
    fn lookup(&self, source: Source, key: &str) -> Option<String>;
}

const SUPPORTED: &str = "Sluice renders $(headers.<name>), $(query_params.<name>) and \
                         $(uri_captures.<name>) (also [\"<name>\"] or [<n>]), each with an \
                         optional `or \"<default>\"`";

// === impl Template ===

impl Template {
    /// Parses `value`; the error is Kong's "value '...' is not in supported format" message.
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        let unsupported =
            |why: &str| format!("value '{value}' is not in supported format, error:{why}");
        let mut pieces = Vec::new();
        let mut rest = value;
        while let Some(start) = rest.find("$(") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = closing_paren(after).ok_or_else(|| unsupported("unclosed $("))?;
            pieces
                .push(parse_expression(after[..end].trim()).ok_or_else(|| unsupported(SUPPORTED))?);
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    /// Whether the value has no template in it (the common case: rendering is a copy).
    pub(crate) fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Piece::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// The value for one request. A lookup that finds nothing and has no default renders
    /// empty (Kong's Lua prints `nil`).
    pub(crate) fn render(&self, env: &dyn Env) -> String {
        if let Some(text) = self.literal() {
            return text.to_owned();
        }
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Lookup {
                    source,
                    key,
                    default,
                } => {
                    if let Some(found) = env.lookup(*source, key) {
                        out.push_str(&found);
                    } else if let Some(default) = default {
                        out.push_str(default);
                    }
                }
            }
        }
        out
    }
}

/// Where the `)` closing an expression is, skipping parentheses inside quotes.
fn closing_paren(text: &str) -> Option<usize> {
    let mut quote = None;
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') if depth == 0 => return Some(i),
            (None, ')') => depth -= 1,
            _ => {}
        }
    }
    None
}

/// `source.key`, `source["key"]`, `source[1]`, each optionally `or "default"`.
fn parse_expression(expression: &str) -> Option<Piece> {
    let (lookup, default) = match expression.split_once(" or ") {
        Some((lookup, default)) => (lookup.trim(), Some(quoted(default.trim())?)),
        None => (expression, None),
    };
    let (name, key) = match lookup.find(['.', '[']) {
        Some(i) => (&lookup[..i], &lookup[i..]),
        None => return None,
    };
    let source = match name {
        "headers" => Source::Headers,
        "query_params" => Source::QueryParams,
        "uri_captures" => Source::UriCaptures,
        _ => return None,
    };
    let key = if let Some(field) = key.strip_prefix('.') {
        let identifier = !field.is_empty()
            && field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !field.as_bytes()[0].is_ascii_digit();
        identifier.then(|| field.to_owned())?
    } else {
        let inner = key.strip_prefix('[')?.strip_suffix(']')?.trim();
        if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
            inner.to_owned()
        } else {
            quoted(inner)?
        }
    };
    Some(Piece::Lookup {
        source,
        key,
        default,
    })
}

/// A Lua string literal in single or double quotes, without escapes.
fn quoted(text: &str) -> Option<String> {
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .or_else(|| text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')))?;
    (!inner.contains(['"', '\'', '\\'])).then(|| inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Request;

    impl Env for Request {
        fn lookup(&self, source: Source, key: &str) -> Option<String> {
            match (source, key) {
                (Source::Headers, "x-user") => Some("ann".into()),
                (Source::UriCaptures, "1") => Some("42".into()),
                _ => None,
            }
        }
    }

    #[test]
    fn lookups_render_with_defaults_and_text_around_them() {
        let t = Template::parse("id=$(uri_captures[1]);u=$(headers[\"x-user\"])").unwrap();
        assert_eq!(t.render(&Request), "id=42;u=ann");
        let t = Template::parse("$(query_params.page or 'first')").unwrap();
        assert_eq!(t.render(&Request), "first");
        assert_eq!(Template::parse("plain").unwrap().literal(), Some("plain"));
    }

    #[test]
    fn other_lua_is_refused_with_kongs_message() {
        let error = Template::parse("$(os.exit())").unwrap_err();
        assert!(error.starts_with("value '$(os.exit())' is not in supported format, error:"));
        assert!(Template::parse("$(headers.x").is_err());
    }
}
