//! decK's environment substitution: `${{ env "DECK_NAME" }}` anywhere in a file.
//!
//! decK renders the whole file as a Go template (delimiters `${{` and `}}`) before it parses
//! the YAML, so substitution works in keys, values and even comments, and a value is pasted
//! in as text. Sluice does the same, for the subset decK files use: `env "NAME"`, optionally
//! piped through `toBool`, `toInt`, `toFloat` or `indent N`, and the `-` trim markers. As in
//! decK, only names starting with `DECK_` may be read, so a file cannot pull arbitrary
//! secrets out of the environment.

/// The prefix decK requires of every variable a file reads.
const PREFIX: &str = "DECK_";
const OPEN: &str = "${{";
const CLOSE: &str = "}}";

/// A template action that could not be evaluated, located at its `${{`.
#[derive(Debug)]
pub(super) struct TemplateError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Pipe,
}

/// Where `env "DECK_NAME"` reads from.
#[derive(Clone, Copy)]
pub enum EnvSource<'a> {
    /// The variables as set.
    Vars(&'a dyn Fn(&str) -> Option<String>),
    /// decK's mock (`deck file render` without `--populate-env-vars`): a variable reads as
    /// its own name, `toBool` as `false`, `toInt` and `toFloat` as `42`.
    Mock,
}

/// Replaces every action in `text`. Every failing action is reported, not only the first.
pub(super) fn substitute(text: &str, env: EnvSource<'_>) -> (String, Vec<TemplateError>) {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    let mut trim_next = false;
    while let Some(start) = rest.find(OPEN) {
        let before = &rest[..start];
        out.push_str(if trim_next {
            before.trim_start()
        } else {
            before
        });
        trim_next = false;
        let at = offset + start;
        let after_open = &rest[start + OPEN.len()..];
        let Some(end) = after_open.find(CLOSE) else {
            errors.push(error_at(
                text,
                at,
                "unclosed action: missing '}}'".to_owned(),
            ));
            out.push_str(&rest[start..]);
            return (out, errors);
        };
        let mut action = &after_open[..end];
        // `${{- ...` trims the whitespace before the action, `... -}}` the whitespace after.
        if let Some(inner) = action
            .strip_prefix('-')
            .filter(|inner| inner.starts_with(char::is_whitespace))
        {
            let kept = out.trim_end().len();
            out.truncate(kept);
            action = inner;
        }
        if let Some(inner) = action
            .strip_suffix('-')
            .filter(|inner| inner.ends_with(char::is_whitespace))
        {
            trim_next = true;
            action = inner;
        }
        match evaluate(action, env) {
            Ok(value) => out.push_str(&value),
            Err(message) => errors.push(error_at(text, at, message)),
        }
        let consumed = start + OPEN.len() + end + CLOSE.len();
        rest = &rest[consumed..];
        offset += consumed;
    }
    out.push_str(if trim_next { rest.trim_start() } else { rest });
    (out, errors)
}

fn error_at(text: &str, at: usize, message: String) -> TemplateError {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    TemplateError {
        line,
        column,
        message,
    }
}

/// Evaluates one action: `env "NAME"` and then each piped function, left to right.
fn evaluate(action: &str, env: EnvSource<'_>) -> Result<String, String> {
    let unsupported = || {
        format!(
            "unsupported template action '{}': Sluice supports env \"DECK_NAME\", optionally piped to toBool, toInt, toFloat or indent N",
            action.trim()
        )
    };
    let tokens = tokenize(action)?;
    let mut stages = tokens.split(|token| *token == Token::Pipe);
    let mut value = match stages.next().unwrap_or_default() {
        [Token::Word(function), Token::Str(name)] if function.as_str() == "env" => {
            lookup(name, env)?
        }
        _ => return Err(unsupported()),
    };
    let mocked = matches!(env, EnvSource::Mock);
    for stage in stages {
        value = match stage {
            [Token::Word(function)] if mocked && function.as_str() == "toBool" => {
                "false".to_owned()
            }
            [Token::Word(function)]
                if mocked && matches!(function.as_str(), "toInt" | "toFloat") =>
            {
                "42".to_owned()
            }
            [Token::Word(function)] if function.as_str() == "toBool" => to_bool(&value)?,
            [Token::Word(function)] if function.as_str() == "toInt" => value
                .parse::<i64>()
                .map(|number| number.to_string())
                .map_err(|_| format!("strconv.Atoi: parsing {value:?}: invalid syntax"))?,
            [Token::Word(function)] if function.as_str() == "toFloat" => value
                .parse::<f64>()
                .map(|number| number.to_string())
                .map_err(|_| format!("strconv.ParseFloat: parsing {value:?}: invalid syntax"))?,
            [Token::Word(function), Token::Word(spaces)] if function.as_str() == "indent" => {
                let spaces: usize = spaces.parse().map_err(|_| unsupported())?;
                value.replace('\n', &format!("\n{}", " ".repeat(spaces)))
            }
            _ => return Err(unsupported()),
        };
    }
    Ok(value)
}

fn lookup(name: &str, env: EnvSource<'_>) -> Result<String, String> {
    if !name.starts_with(PREFIX) {
        return Err(format!(
            "environment variables in the state file must be prefixed with '{PREFIX}', found: '{name}'"
        ));
    }
    let vars = match env {
        EnvSource::Vars(vars) => vars,
        EnvSource::Mock => return Ok(name.to_owned()),
    };
    vars(name)
        .ok_or_else(|| format!("environment variable '{name}' present in state file but not set"))
}

/// Go's `strconv.ParseBool`, which decK's `toBool` uses.
fn to_bool(value: &str) -> Result<String, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok("true".to_owned()),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok("false".to_owned()),
        _ => Err(format!(
            "strconv.ParseBool: parsing {value:?}: invalid syntax"
        )),
    }
}

/// Splits an action into words, quoted strings (`"..."` with escapes, or raw `` `...` ``)
/// and pipes.
fn tokenize(action: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            chars.next();
            tokens.push(Token::Pipe);
        } else if c == '"' || c == '`' {
            chars.next();
            let mut text = String::new();
            let mut closed = false;
            let mut escaping = false;
            for next in chars.by_ref() {
                if escaping {
                    text.push(next);
                    escaping = false;
                } else if next == '\\' && c == '"' {
                    escaping = true;
                } else if next == c {
                    closed = true;
                    break;
                } else {
                    text.push(next);
                }
            }
            if !closed {
                return Err(format!(
                    "unterminated string in template action '{}'",
                    action.trim()
                ));
            }
            tokens.push(Token::Str(text));
        } else {
            let mut word = String::new();
            while let Some(&next) = chars.peek() {
                if next.is_whitespace() || next == '|' || next == '"' || next == '`' {
                    break;
                }
                word.push(next);
                chars.next();
            }
            tokens.push(Token::Word(word));
        }
    }
    Ok(tokens)
}
