//! The parts of a provider's answer the gateway reads: the model, the usage, whether the
//! answer has the shape its route type promises, and, per stream event, its type, usage and
//! content delta. Everything else passes through as bytes; nothing here re-serializes.

use serde::de::IgnoredAny;
use serde::Deserialize;

/// Token counts: Chat Completions names (`prompt_tokens`) or Responses API names
/// (`input_tokens`), whichever the answer uses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// A non-streaming JSON answer, read for its shape, model and usage.
#[derive(Debug, Default, Deserialize)]
pub struct Answer {
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub usage: Option<Usage>,
    choices: Option<IgnoredAny>,
    data: Option<IgnoredAny>,
    output: Option<IgnoredAny>,
}

/// One streamed event's JSON payload.
#[derive(Debug, Default, Deserialize)]
pub struct StreamEvent {
    /// The Responses API's event type (`response.completed`); its SSE `event:` name wins.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub usage: Option<Usage>,
    pub choices: Option<Vec<StreamChoice>>,
    /// The Responses API's whole response, in `response.completed`.
    pub response: Option<Answer>,
}

/// One server event of a realtime session, read for its model and usage.
#[derive(Debug, Default, Deserialize)]
pub struct RealtimeEvent {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub session: Option<RealtimeSession>,
    pub response: Option<RealtimeResponse>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RealtimeSession {
    pub model: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RealtimeResponse {
    #[serde(default, deserialize_with = "lenient")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamChoice {
    pub delta: Option<Delta>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta {
    pub content: Option<String>,
}

/// A `usage` that is not an object (`null`, or something unexpected) is no usage, rather
/// than a reason to treat the whole answer as unreadable.
fn lenient<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Usage>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(Usage::deserialize(value).ok())
}

// === impl Usage ===

impl Usage {
    pub fn prompt(&self) -> Option<u64> {
        self.prompt_tokens.or(self.input_tokens)
    }

    pub fn completion(&self) -> Option<u64> {
        self.completion_tokens.or(self.output_tokens)
    }

    pub fn total(&self) -> Option<u64> {
        self.total_tokens
    }
}

// === impl Answer ===

impl Answer {
    /// Whether the answer carries `key` (Kong's shape check: `choices`, `data`, `output`).
    pub fn has(&self, key: &str) -> bool {
        match key {
            "choices" => self.choices.is_some(),
            "data" => self.data.is_some(),
            "output" => self.output.is_some(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_events_read_what_the_gateway_needs() {
        let answer: Answer = serde_json::from_str(
            r#"{"id":"x","model":"gpt-4o","choices":[{"message":{}}],
                "usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
        )
        .unwrap();
        assert!(answer.has("choices") && !answer.has("data"));
        let usage = answer.usage.unwrap();
        assert_eq!(
            (usage.prompt(), usage.completion(), usage.total()),
            (Some(3), Some(5), Some(8))
        );

        let responses: Answer =
            serde_json::from_str(r#"{"output":[],"usage":{"input_tokens":2,"output_tokens":4}}"#)
                .unwrap();
        let usage = responses.usage.unwrap();
        assert_eq!(
            (usage.prompt(), usage.completion(), usage.total()),
            (Some(2), Some(4), None)
        );

        let event: StreamEvent = serde_json::from_str(
            r#"{"model":"m","usage":null,"choices":[{"delta":{"content":"hi"}}]}"#,
        )
        .unwrap();
        assert_eq!(event.usage, None);
        let content = event.choices.unwrap()[0]
            .delta
            .as_ref()
            .unwrap()
            .content
            .clone();
        assert_eq!(content.as_deref(), Some("hi"));

        let odd: StreamEvent = serde_json::from_str(r#"{"usage":"n/a"}"#).unwrap();
        assert_eq!(
            odd.usage, None,
            "an odd usage is no usage, not an unreadable event"
        );
    }
}
