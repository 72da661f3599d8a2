//! `GET /v1/realtime?model=...` upgraded to a WebSocket: OpenAI's Realtime API, text only.
//!
//! The handshake goes through the same pipeline as every other request (recorded, latency,
//! auth, injected status), so a failing or unauthorised handshake is an HTTP error in the
//! flavor's shape, and a failover test can fail the handshake. After the 101:
//!
//! - the server sends `session.created` first;
//! - `session.update` answers `session.updated`;
//! - `conversation.item.create` (a user message with `input_text` parts) answers
//!   `conversation.item.created` and adds the item to the conversation;
//! - `response.create` answers `response.created`, one text delta per word of the reply
//!   (`response.text.delta` with `OpenAI-Beta: realtime=v1`, else the GA name
//!   `response.output_text.delta`), the matching `.done`, then `response.done` carrying
//!   `usage`: `input_tokens` = words of every user item so far (the model reads the whole
//!   conversation each turn), `output_tokens` = the reply's words;
//! - anything else, or text that is not a JSON object, answers an `error` event
//!   (`invalid_request_error`), and the session goes on, as OpenAI's does.
//!
//! The reply is [`crate::DEFAULT_REPLY`], or the handshake's `x-mock-reply` header.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::server::{new_id, Ctx, Rejection};
use crate::tokens::{count_words, Reply, DEFAULT_REPLY};

/// Which event names the client speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `OpenAI-Beta: realtime=v1`: `response.text.delta`.
    Beta,
    /// The GA API: `response.output_text.delta`.
    Ga,
}

/// One session's conversation.
struct Session {
    dialect: Dialect,
    model: String,
    reply: String,
    input_words: u64,
    responses: u64,
}

/// The handshake: 400 without an upgrade or without `model`, else the 101.
pub(crate) fn answer(ctx: &Ctx<'_>, upgrade: Option<WebSocketUpgrade>, query: &str) -> Response {
    let model = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "model")
        .map(|(_, value)| value.to_owned())
        .filter(|m| !m.is_empty());
    let Some(upgrade) = upgrade else {
        let Rejection(response) = ctx.invalid(
            "The Realtime API is served over WebSocket: send an Upgrade: websocket request.",
            None,
        );
        return *response;
    };
    let Some(model) = model else {
        let Rejection(response) = ctx.missing("model");
        return *response;
    };
    let beta = ctx
        .headers
        .get_all("openai-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "realtime=v1"));
    let session = Session {
        dialect: if beta { Dialect::Beta } else { Dialect::Ga },
        model,
        reply: ctx
            .knobs
            .reply
            .clone()
            .unwrap_or_else(|| DEFAULT_REPLY.to_owned()),
        input_words: 0,
        responses: 0,
    };
    upgrade
        .on_upgrade(move |socket| run(socket, session))
        .into_response()
}

async fn run(mut socket: WebSocket, mut session: Session) {
    let created = json!({
        "type": "session.created",
        "event_id": new_id("event_"),
        "session": session.object(),
    });
    if send(&mut socket, &created).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => return,
            _ => continue,
        };
        for event in session.events_for(text.as_str()) {
            if send(&mut socket, &event).await.is_err() {
                return;
            }
        }
    }
}

async fn send(socket: &mut WebSocket, event: &Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(event.to_string().into())).await
}

// === impl Session ===

impl Session {
    fn object(&self) -> Value {
        json!({
            "id": new_id("sess_"),
            "object": "realtime.session",
            "model": self.model,
            "modalities": ["text", "audio"],
            "voice": "alloy",
            "turn_detection": null,
        })
    }

    /// The server events one client event causes.
    fn events_for(&mut self, text: &str) -> Vec<Value> {
        let Ok(Value::Object(event)) = serde_json::from_str::<Value>(text) else {
            return vec![error(
                "invalid_json",
                "The event is not a JSON object.",
                None,
            )];
        };
        let client_id = event.get("event_id").and_then(Value::as_str);
        match event.get("type").and_then(Value::as_str) {
            Some("session.update") => vec![json!({
                "type": "session.updated",
                "event_id": new_id("event_"),
                "session": self.object(),
            })],
            Some("conversation.item.create") => {
                let item = event.get("item").cloned().unwrap_or(Value::Null);
                self.input_words += count_words(&item);
                let mut item = item;
                if let Some(fields) = item.as_object_mut() {
                    fields
                        .entry("id")
                        .or_insert_with(|| Value::from(new_id("item_")));
                    fields.insert("status".into(), Value::from("completed"));
                }
                vec![json!({
                    "type": "conversation.item.created",
                    "event_id": new_id("event_"),
                    "previous_item_id": null,
                    "item": item,
                })]
            }
            Some("response.create") => self.respond(),
            Some(other) => vec![error(
                "invalid_value",
                &format!("Invalid value: '{other}'. Supported values are: 'session.update', 'conversation.item.create', and 'response.create'."),
                client_id,
            )],
            None => vec![error(
                "missing_required_parameter",
                "Missing required parameter: 'type'.",
                client_id,
            )],
        }
    }

    /// One response: created, the text deltas, done, and `response.done` with usage.
    fn respond(&mut self) -> Vec<Value> {
        self.responses += 1;
        let reply = Reply::new(&self.reply, None);
        let response_id = new_id("resp_");
        let item_id = new_id("item_");
        let (delta, done) = match self.dialect {
            Dialect::Beta => ("response.text.delta", "response.text.done"),
            Dialect::Ga => ("response.output_text.delta", "response.output_text.done"),
        };
        let mut events = vec![json!({
            "type": "response.created",
            "event_id": new_id("event_"),
            "response": {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": [], "usage": null},
        })];
        for text in reply.deltas() {
            events.push(json!({
                "type": delta,
                "event_id": new_id("event_"),
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": text,
            }));
        }
        events.push(json!({
            "type": done,
            "event_id": new_id("event_"),
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "text": reply.text(),
        }));
        let output = reply.tokens();
        events.push(json!({
            "type": "response.done",
            "event_id": new_id("event_"),
            "response": {
                "id": response_id,
                "object": "realtime.response",
                "status": "completed",
                "output": [{
                    "id": item_id,
                    "object": "realtime.item",
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "text", "text": reply.text()}],
                }],
                "usage": {
                    "total_tokens": self.input_words + output,
                    "input_tokens": self.input_words,
                    "output_tokens": output,
                    "input_token_details": {"text_tokens": self.input_words, "audio_tokens": 0, "cached_tokens": 0},
                    "output_token_details": {"text_tokens": output, "audio_tokens": 0},
                },
            },
        }));
        events
    }
}

/// OpenAI's realtime `error` event.
fn error(code: &str, message: &str, client_event_id: Option<&str>) -> Value {
    json!({
        "type": "error",
        "event_id": new_id("event_"),
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": null,
            "event_id": client_event_id,
        },
    })
}
