//! Deterministic "token" accounting: words, not BPE tokens, so a test can count them by hand.
//! The rules are documented in the crate docs; keep the two in step.

use serde_json::Value;

/// The generated text unless `x-mock-reply` replaces it.
pub(crate) const DEFAULT_REPLY: &str = "Hello from the Sluice mock provider";

/// What the mock "generates" for one request: the reply's words, maybe cut to a token limit.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    words: Vec<String>,
    /// True when a token limit cut the text short (`finish_reason: "length"`).
    pub(crate) truncated: bool,
}

/// Prompt tokens of a request field: words of every string in it, looking through arrays and
/// through the `content` and `text` fields of objects; a number (a pre-tokenised input) is 1.
pub(crate) fn count_words(value: &Value) -> u64 {
    match value {
        Value::String(text) => words_in(text),
        Value::Number(_) => 1,
        Value::Array(items) => items.iter().map(count_words).sum(),
        Value::Object(fields) => ["content", "text"]
            .iter()
            .filter_map(|key| fields.get(*key))
            .map(count_words)
            .sum(),
        Value::Null | Value::Bool(_) => 0,
    }
}

/// Words of a plain string.
pub(crate) fn words_in(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

// === impl Reply ===

impl Reply {
    /// `base` split into words, cut to `max_tokens` words when that is smaller.
    pub(crate) fn new(base: &str, max_tokens: Option<u64>) -> Self {
        let mut words: Vec<String> = base.split_whitespace().map(str::to_owned).collect();
        let limit = max_tokens.map(|max| usize::try_from(max).unwrap_or(usize::MAX));
        let truncated = match limit {
            Some(limit) if limit < words.len() => {
                words.truncate(limit);
                true
            }
            _ => false,
        };
        Self { words, truncated }
    }

    /// The whole text, words joined by single spaces.
    pub(crate) fn text(&self) -> String {
        self.words.join(" ")
    }

    /// Completion tokens: the number of words.
    pub(crate) fn tokens(&self) -> u64 {
        self.words.len() as u64
    }

    /// One streaming delta per word. Every word after the first carries its leading space, so
    /// the deltas concatenate to exactly [`Reply::text`].
    pub(crate) fn deltas(&self) -> Vec<String> {
        self.words
            .iter()
            .enumerate()
            .map(|(index, word)| {
                if index == 0 {
                    word.clone()
                } else {
                    format!(" {word}")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn counts_message_contents_and_text_parts_only() {
        let messages = json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "name": "ignored words here", "content": [
                {"type": "text", "text": "one two three"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
            ]}
        ]);
        assert_eq!(count_words(&messages), 5);
        assert_eq!(count_words(&json!([[1, 2, 3], [4]])), 4);
        assert_eq!(count_words(&json!("  spaced   out  ")), 2);
    }

    #[test]
    fn reply_is_cut_to_the_limit_and_deltas_rebuild_it() {
        let full = Reply::new(DEFAULT_REPLY, None);
        assert_eq!(full.tokens(), 6);
        assert!(!full.truncated);
        assert_eq!(full.deltas().concat(), DEFAULT_REPLY);

        let cut = Reply::new(DEFAULT_REPLY, Some(2));
        assert_eq!(cut.text(), "Hello from");
        assert!(cut.truncated);

        assert!(!Reply::new(DEFAULT_REPLY, Some(6)).truncated);
    }
}
