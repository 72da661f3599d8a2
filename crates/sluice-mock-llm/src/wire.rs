//! The endpoints: which paths each flavor serves, and the providers' JSON and SSE shapes.
//!
//! Answers are built with `json!` rather than typed structs: the mock never reads them back,
//! and writing the shape out literally makes it easy to check against the provider's docs.
//! Requests are read as loose JSON on purpose, since a mock must accept whatever a gateway
//! forwards.

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::Method;
use serde_json::{json, Map, Value};

use crate::server::{json_ok, new_id, now, Answer, Ctx, Rejection};
use crate::sse;
use crate::tokens::{count_words, words_in};
use crate::{Flavor, IMAGE_OUTPUT_TOKENS};

/// `system_fingerprint` of every chat and completions answer.
const FINGERPRINT: &str = "fp_sluice_mock";

/// Completion tokens of a tool-call reply: the function name and its `{}` arguments.
const TOOL_CALL_TOKENS: u64 = 2;

/// Length of an embedding vector unless the request sets `dimensions`.
const EMBEDDING_DIMENSIONS: usize = 8;

/// `created` of every model in the catalog.
const MODEL_CREATED: u64 = 1_700_000_000;

/// A 1×1 PNG, the `b64_json` of every generated image.
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// Bytes of one fake MPEG audio frame (a 128 kbit/s, 44.1 kHz MP3 frame is 417 bytes).
const MP3_FRAME_BYTES: usize = 417;

const OPENAI_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "tts-1",
    "whisper-1",
    "sora-2",
];

const XAI_MODELS: &[&str] = &[
    "grok-4",
    "grok-4-fast-reasoning",
    "grok-3",
    "grok-3-mini",
    "grok-code-fast-1",
    "grok-2-image",
    "grok-imagine-image",
];

/// The function call a chat answer makes instead of text.
struct ToolCall {
    id: String,
    name: String,
}

/// Dispatches on method and path. Endpoints after the `!openai` arm exist only in the OpenAI
/// flavor; xAI answers them with its 404.
pub(crate) fn route(ctx: &Ctx<'_>) -> Answer {
    let openai = ctx.flavor == Flavor::OpenAi;
    let segments: Vec<&str> = ctx.path.trim_start_matches('/').split('/').collect();
    match (ctx.method, segments.as_slice()) {
        (&Method::POST, ["v1", "chat", "completions"]) => chat(ctx),
        (&Method::POST, ["v1", "completions"]) => completions(ctx),
        (&Method::POST, ["v1", "responses"]) => responses(ctx),
        (&Method::GET, ["v1", "responses", id]) => Ok(stored_response(ctx, id)),
        (&Method::DELETE, ["v1", "responses", id]) => Ok(deleted(id, "response")),
        (&Method::POST, ["v1", "images", "generations"]) => images(ctx, false),
        (&Method::GET, ["v1", "models"]) => Ok(models(ctx)),
        (&Method::GET, ["v1", "models", id]) => model(ctx, id),
        _ if !openai => xai_only(ctx, &segments),
        (&Method::POST, ["v1", "embeddings"]) => embeddings(ctx),
        (&Method::POST, ["v1", "images", "edits"]) => images(ctx, true),
        (&Method::POST, ["v1", "audio", "speech"]) => speech(ctx),
        (&Method::POST, ["v1", "audio", "transcriptions" | "translations"]) => transcription(ctx),
        (&Method::POST, ["v1", "files"]) => upload_file(ctx),
        (&Method::GET, ["v1", "files"]) => Ok(list(ctx.store().files.clone())),
        (&Method::GET, ["v1", "files", id]) => {
            let found = find(&ctx.store().files, id);
            found.map(json_ok).ok_or_else(|| ctx.no_such("File", id))
        }
        (&Method::DELETE, ["v1", "files", id]) => {
            let removed = remove(&mut ctx.store().files, id);
            if removed {
                Ok(deleted(id, "file"))
            } else {
                Err(ctx.no_such("File", id))
            }
        }
        (&Method::POST, ["v1", "batches"]) => create_batch(ctx),
        (&Method::GET, ["v1", "batches"]) => Ok(list(ctx.store().batches.clone())),
        (&Method::GET, ["v1", "batches", id]) => {
            let found = find(&ctx.store().batches, id);
            found.map(json_ok).ok_or_else(|| ctx.no_such("Batch", id))
        }
        (&Method::POST, ["v1", "assistants"]) => create_assistant(ctx),
        (&Method::GET, ["v1", "assistants"]) => {
            require_assistants_beta(ctx)?;
            Ok(list(ctx.store().assistants.clone()))
        }
        (&Method::POST, ["v1", "videos"] | ["v1", "videos", "generations"]) => create_video(ctx),
        (&Method::GET, ["v1", "videos", id]) => {
            Ok(json_ok(video(id, "sora-2", "completed", "4", "720x1280")))
        }
        _ => Err(ctx.not_found()),
    }
}

/// `POST /v1/chat/completions`.
fn chat(ctx: &Ctx<'_>) -> Answer {
    let body = ctx.json()?;
    let messages = body
        .get("messages")
        .filter(|messages| messages.is_array())
        .ok_or_else(|| ctx.missing("messages"))?;
    let model = model_of(&body, ctx.pick("gpt-4o", "grok-4"));
    let id = new_id("chatcmpl-");
    let created = now();
    if ctx.knobs.bad_shape {
        return Ok(bad_shape(&id, "chat.completion", created, &model));
    }

    let prompt_tokens = count_words(messages);
    let tool = tool_call(&body);
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64);
    let reply = ctx.reply(max_tokens);
    let (completion_tokens, finish_reason) = match &tool {
        Some(_) => (TOOL_CALL_TOKENS, "tool_calls"),
        None if reply.truncated => (reply.tokens(), "length"),
        None => (reply.tokens(), "stop"),
    };
    let usage = chat_usage(ctx.flavor, prompt_tokens, completion_tokens);

    if !is_stream(&body) {
        let message = match &tool {
            Some(call) => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": "{}"},
                }],
                "refusal": null,
            }),
            None => json!({"role": "assistant", "content": reply.text(), "refusal": null}),
        };
        return Ok(json_ok(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage,
            "system_fingerprint": FINGERPRINT,
        })));
    }

    let include_usage = include_usage(&body);
    // OpenAI marks every chunk `"usage": null` once usage was asked for; xAI never does.
    let usage_null = include_usage && ctx.flavor == Flavor::OpenAi;
    let chunk = |delta: Value, finish_reason: Option<&str>| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        if usage_null {
            chunk["usage"] = Value::Null;
        }
        sse::data_frame(&chunk)
    };

    let mut frames = Vec::new();
    match &tool {
        Some(call) => {
            frames.push(chunk(
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }],
                }),
                None,
            ));
            frames.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                None,
            ));
        }
        None => {
            frames.push(chunk(json!({"role": "assistant", "content": ""}), None));
            for delta in reply.deltas() {
                frames.push(chunk(json!({"content": delta}), None));
            }
        }
    }
    frames.push(chunk(json!({}), Some(finish_reason)));
    if include_usage {
        frames.push(sse::data_frame(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage,
        })));
    }
    frames.push(Bytes::from_static(sse::DONE));
    Ok(sse::response(frames, ctx.knobs.pacing))
}

/// `POST /v1/completions` (legacy text completions).
fn completions(ctx: &Ctx<'_>) -> Answer {
    let body = ctx.json()?;
    let prompt = body
        .get("prompt")
        .filter(|prompt| prompt.is_string() || prompt.is_array())
        .ok_or_else(|| ctx.missing("prompt"))?;
    let model = model_of(&body, ctx.pick("gpt-3.5-turbo-instruct", "grok-3"));
    let id = new_id("cmpl-");
    let created = now();
    if ctx.knobs.bad_shape {
        return Ok(bad_shape(&id, "text_completion", created, &model));
    }

    let prompt_tokens = count_words(prompt);
    let reply = ctx.reply(body.get("max_tokens").and_then(Value::as_u64));
    let finish_reason = if reply.truncated { "length" } else { "stop" };
    let completion_tokens = reply.tokens();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });

    if !is_stream(&body) {
        return Ok(json_ok(json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{
                "text": reply.text(),
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage,
            "system_fingerprint": FINGERPRINT,
        })));
    }

    let include_usage = include_usage(&body);
    let usage_null = include_usage && ctx.flavor == Flavor::OpenAi;
    let chunk = |text: &str, finish_reason: Option<&str>| {
        let mut chunk = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{
                "text": text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        if usage_null {
            chunk["usage"] = Value::Null;
        }
        sse::data_frame(&chunk)
    };

    let mut frames: Vec<Bytes> = reply
        .deltas()
        .iter()
        .map(|delta| chunk(delta.as_str(), None))
        .collect();
    frames.push(chunk("", Some(finish_reason)));
    if include_usage {
        frames.push(sse::data_frame(&json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage,
        })));
    }
    frames.push(Bytes::from_static(sse::DONE));
    Ok(sse::response(frames, ctx.knobs.pacing))
}

/// `POST /v1/responses`.
fn responses(ctx: &Ctx<'_>) -> Answer {
    let body = ctx.json()?;
    let input = body
        .get("input")
        .filter(|input| input.is_string() || input.is_array())
        .ok_or_else(|| ctx.missing("input"))?;
    let model = model_of(&body, ctx.pick("gpt-4o", "grok-4"));
    let id = new_id("resp_");
    let created = now();
    if ctx.knobs.bad_shape {
        return Ok(bad_shape(&id, "response", created, &model));
    }

    let input_tokens = count_words(input);
    let reply = ctx.reply(body.get("max_output_tokens").and_then(Value::as_u64));
    let text = reply.text();
    let status = if reply.truncated {
        "incomplete"
    } else {
        "completed"
    };
    let usage = responses_usage(input_tokens, reply.tokens());
    let message_id = new_id("msg_");
    let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
    let item = json!({
        "type": "message",
        "id": message_id,
        "status": status,
        "role": "assistant",
        "content": [part],
    });
    let done = response_object(&id, created, &model, status, json!([item]), usage, &body);

    if !is_stream(&body) {
        return Ok(json_ok(done));
    }

    let started = response_object(
        &id,
        created,
        &model,
        "in_progress",
        json!([]),
        Value::Null,
        &body,
    );
    let mut events: Vec<(&str, Value)> = vec![
        ("response.created", json!({"response": started})),
        ("response.in_progress", json!({"response": started})),
        (
            "response.output_item.added",
            json!({
                "output_index": 0,
                "item": {
                    "type": "message",
                    "id": message_id,
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            }),
        ),
        (
            "response.content_part.added",
            json!({
                "item_id": message_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            }),
        ),
    ];
    for delta in reply.deltas() {
        events.push((
            "response.output_text.delta",
            json!({
                "item_id": message_id,
                "output_index": 0,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            }),
        ));
    }
    events.push((
        "response.output_text.done",
        json!({
            "item_id": message_id,
            "output_index": 0,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        }),
    ));
    events.push((
        "response.content_part.done",
        json!({"item_id": message_id, "output_index": 0, "content_index": 0, "part": part}),
    ));
    events.push((
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    ));
    let terminal = if reply.truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.push((terminal, json!({"response": done})));

    let frames = events
        .into_iter()
        .enumerate()
        .map(|(sequence, (kind, fields))| typed_event(kind, sequence, fields))
        .collect();
    Ok(sse::response(frames, ctx.knobs.pacing))
}

/// `GET /v1/responses/{id}`: a completed response with that id (nothing is really stored).
fn stored_response(ctx: &Ctx<'_>, id: &str) -> Response {
    let reply = ctx.reply(None);
    let item = json!({
        "type": "message",
        "id": new_id("msg_"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": reply.text(), "annotations": [], "logprobs": []}],
    });
    json_ok(response_object(
        id,
        now(),
        ctx.pick("gpt-4o", "grok-4"),
        "completed",
        json!([item]),
        responses_usage(0, reply.tokens()),
        &Value::Null,
    ))
}

/// `POST /v1/embeddings`.
fn embeddings(ctx: &Ctx<'_>) -> Answer {
    let body = ctx.json()?;
    let input = body
        .get("input")
        .filter(|input| !input.is_null())
        .ok_or_else(|| ctx.missing("input"))?;
    let model = model_of(&body, "text-embedding-3-small");
    let dimensions = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(EMBEDDING_DIMENSIONS, |dimensions| {
            usize::try_from(dimensions.clamp(1, 4096)).unwrap_or(EMBEDDING_DIMENSIONS)
        });
    let as_base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = embedding_inputs(input)
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let vector = embedding(item, dimensions);
            let encoded = if as_base64 {
                let bytes: Vec<u8> = vector
                    .iter()
                    .flat_map(|value| value.to_le_bytes())
                    .collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": encoded})
        })
        .collect();
    let prompt_tokens = count_words(input);
    Ok(json_ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })))
}

/// `POST /v1/images/generations` (JSON) and `/v1/images/edits` (multipart, or JSON).
///
/// Generations need a `prompt`. Edits need an image (any file part, or an `image`/`images`
/// field) but, more leniently than OpenAI, no prompt: gateway tests forward arbitrary forms.
fn images(ctx: &Ctx<'_>, edit: bool) -> Answer {
    let form = ctx.form()?;
    let prompt = match form.str("prompt") {
        Some(prompt) => prompt.to_owned(),
        None if edit => String::new(),
        None => return Err(ctx.missing("prompt")),
    };
    if edit && form.files.is_empty() && !form.has("image") && !form.has("images") {
        return Err(ctx.missing("image"));
    }
    let default_model = if edit {
        "dall-e-2"
    } else {
        ctx.pick("dall-e-3", "grok-2-image")
    };
    let model = form.str("model").unwrap_or(default_model).to_owned();
    let count = form.u64("n").unwrap_or(1).clamp(1, 10);
    // gpt-image models only answer base64; the others default to URLs.
    let as_base64 = match form.str("response_format") {
        Some(format) => format == "b64_json",
        None => model.starts_with("gpt-image"),
    };
    // xAI and dall-e-3 rewrite the prompt and say how.
    let revised = ctx.flavor == Flavor::Xai || model == "dall-e-3";
    let data: Vec<Value> = (0..count)
        .map(|_| {
            let mut image = Map::new();
            if as_base64 {
                image.insert("b64_json".to_owned(), Value::from(PNG_BASE64));
            } else {
                let url = format!("https://images.mock.invalid/{}.png", new_id("img_"));
                image.insert("url".to_owned(), Value::from(url));
            }
            if revised {
                let revised_prompt = format!("{prompt} (revised by the Sluice mock)");
                image.insert("revised_prompt".to_owned(), Value::from(revised_prompt));
            }
            Value::Object(image)
        })
        .collect();
    let mut answer = json!({"created": now(), "data": data});
    if model.starts_with("gpt-image") {
        let input_tokens = words_in(&prompt);
        let output_tokens = count * IMAGE_OUTPUT_TOKENS;
        answer["usage"] = json!({
            "input_tokens": input_tokens,
            "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0},
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        });
    }
    Ok(json_ok(answer))
}

/// `POST /v1/audio/speech`: one fake MP3 frame per input word.
fn speech(ctx: &Ctx<'_>) -> Answer {
    let body = ctx.json()?;
    let input = body
        .get("input")
        .and_then(Value::as_str)
        .ok_or_else(|| ctx.missing("input"))?;
    let frames = usize::try_from(words_in(input).clamp(1, 10_000)).unwrap_or(1);
    // An empty ID3v2.4 tag, then MPEG-1 Layer III frame headers padded with silence.
    let mut audio = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    for _ in 0..frames {
        let start = audio.len();
        audio.resize(start + MP3_FRAME_BYTES, 0);
        audio[start..start + 4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    }
    Ok(([(CONTENT_TYPE, "audio/mpeg")], audio).into_response())
}

/// `POST /v1/audio/transcriptions` and `/translations` (multipart).
fn transcription(ctx: &Ctx<'_>) -> Answer {
    let form = ctx.form()?;
    if form.files.is_empty() {
        return Err(ctx.missing("file"));
    }
    if !form.has("model") {
        return Err(ctx.missing("model"));
    }
    let text = ctx.reply(None).text();
    match form.str("response_format") {
        Some("text") => Ok((
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response()),
        _ => Ok(json_ok(json!({"text": text}))),
    }
}

/// `POST /v1/files` (multipart: `file` and `purpose`).
fn upload_file(ctx: &Ctx<'_>) -> Answer {
    let form = ctx.form()?;
    let file = form.files.first().ok_or_else(|| ctx.missing("file"))?;
    let purpose = form.str("purpose").ok_or_else(|| ctx.missing("purpose"))?;
    let object = json!({
        "id": new_id("file-"),
        "object": "file",
        "bytes": file.bytes,
        "created_at": now(),
        "filename": file.filename,
        "purpose": purpose,
        "status": "processed",
        "status_details": null,
        "expires_at": null,
    });
    ctx.store().files.push(object.clone());
    Ok(json_ok(object))
}

/// `POST /v1/batches`.
fn create_batch(ctx: &Ctx<'_>) -> Answer {
    let body = ctx.json()?;
    let required = |field: &'static str| {
        body.get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| ctx.missing(field))
    };
    let input_file_id = required("input_file_id")?;
    let endpoint = required("endpoint")?;
    let completion_window = required("completion_window")?;
    let created = now();
    let batch = json!({
        "id": new_id("batch_"),
        "object": "batch",
        "endpoint": endpoint,
        "errors": null,
        "input_file_id": input_file_id,
        "completion_window": completion_window,
        "status": "validating",
        "output_file_id": null,
        "error_file_id": null,
        "created_at": created,
        "in_progress_at": null,
        "expires_at": created + 86_400,
        "finalizing_at": null,
        "completed_at": null,
        "failed_at": null,
        "expired_at": null,
        "cancelling_at": null,
        "cancelled_at": null,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": echo(&body, "metadata"),
    });
    ctx.store().batches.push(batch.clone());
    Ok(json_ok(batch))
}

/// `POST /v1/assistants`.
fn create_assistant(ctx: &Ctx<'_>) -> Answer {
    require_assistants_beta(ctx)?;
    let body = ctx.json()?;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ctx.missing("model"))?;
    let assistant = json!({
        "id": new_id("asst_"),
        "object": "assistant",
        "created_at": now(),
        "name": echo(&body, "name"),
        "description": echo(&body, "description"),
        "model": model,
        "instructions": echo(&body, "instructions"),
        "tools": body.get("tools").cloned().unwrap_or_else(|| json!([])),
        "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "top_p": 1.0,
        "temperature": 1.0,
        "response_format": "auto",
    });
    ctx.store().assistants.push(assistant.clone());
    Ok(json_ok(assistant))
}

/// The Assistants API is beta: OpenAI refuses requests without `OpenAI-Beta: assistants=v2`.
fn require_assistants_beta(ctx: &Ctx<'_>) -> Result<(), Rejection> {
    let has_beta = ctx
        .headers
        .get_all("openai-beta")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.split(',').any(|item| item.trim() == "assistants=v2"));
    if has_beta {
        return Ok(());
    }
    Err(ctx.error(
        http::StatusCode::BAD_REQUEST,
        "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please try \
         again by setting the header 'OpenAI-Beta: assistants=v2'.",
        "invalid_request_error",
        Some("invalid_beta"),
        None,
    ))
}

/// `POST /v1/videos` (and `/v1/videos/generations`): a queued video job.
fn create_video(ctx: &Ctx<'_>) -> Answer {
    let form = ctx.form()?;
    if !form.has("prompt") {
        return Err(ctx.missing("prompt"));
    }
    let model = form.str("model").unwrap_or("sora-2");
    let seconds = form.text("seconds").unwrap_or_else(|| "4".to_owned());
    let size = form.str("size").unwrap_or("720x1280");
    let id = new_id("video_");
    Ok(json_ok(video(&id, model, "queued", &seconds, size)))
}

/// OpenAI's video job object.
fn video(id: &str, model: &str, status: &str, seconds: &str, size: &str) -> Value {
    let completed = status == "completed";
    let progress = if completed { 100 } else { 0 };
    let completed_at = if completed {
        Value::from(now())
    } else {
        Value::Null
    };
    json!({
        "id": id,
        "object": "video",
        "created_at": now(),
        "status": status,
        "model": model,
        "progress": progress,
        "seconds": seconds,
        "size": size,
        "completed_at": completed_at,
        "expires_at": null,
        "remixed_from_video_id": null,
        "error": null,
    })
}

/// `GET /v1/models`.
fn models(ctx: &Ctx<'_>) -> Response {
    let (ids, owner) = catalog(ctx.flavor);
    let data: Vec<Value> = ids.iter().map(|id| model_object(id, owner)).collect();
    json_ok(json!({"object": "list", "data": data}))
}

/// xAI's endpoints beyond the OpenAI-compatible ones (docs.x.ai's REST reference).
fn xai_only(ctx: &Ctx<'_>, segments: &[&str]) -> Answer {
    match (ctx.method, segments) {
        (&Method::POST, ["v1", "messages"]) => anthropic_messages(ctx),
        (&Method::POST, ["v1", "complete"]) => anthropic_complete(ctx),
        (&Method::POST, ["v1", "tokenize-text"]) => tokenize(ctx),
        (&Method::GET, ["v1", "language-models"]) => Ok(json_ok(json!({
            "models": XAI_MODELS.iter().filter(|m| !m.contains("image")).map(|m| language_model(m)).collect::<Vec<_>>(),
        }))),
        (&Method::GET, ["v1", "language-models", id]) if XAI_MODELS.contains(id) => {
            Ok(json_ok(language_model(id)))
        }
        (&Method::GET, ["v1", "image-generation-models"]) => Ok(json_ok(json!({
            "models": XAI_MODELS.iter().filter(|m| m.contains("image")).map(|m| language_model(m)).collect::<Vec<_>>(),
        }))),
        (&Method::GET, ["v1", "image-generation-models", id]) if id.contains("image") => {
            Ok(json_ok(language_model(id)))
        }
        (&Method::GET, ["v1", "api-key"]) => Ok(json_ok(json!({
            "redacted_api_key": "xai-****", "user_id": "mock-user", "name": "mock key",
            "create_time": "2026-01-01T00:00:00Z", "modify_time": "2026-01-01T00:00:00Z",
            "modified_by": "mock-user", "team_id": "mock-team", "acls": ["api-key:endpoint:*"],
            "api_key_id": "mock-key-id", "team_blocked": false, "api_key_blocked": false,
            "api_key_disabled": false,
        }))),
        (&Method::GET, ["v1", "chat", "deferred-completion", id]) => {
            let reply = ctx.reply(None);
            Ok(json_ok(json!({
                "id": id, "object": "chat.completion", "created": now(), "model": "grok-4",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text()},
                    "finish_reason": "stop"}],
                "usage": chat_usage(ctx.flavor, 1, reply.tokens()),
            })))
        }
        _ => Err(ctx.not_found()),
    }
}

/// `POST /v1/messages` in Anthropic's format (xAI serves it for Anthropic SDKs).
fn anthropic_messages(ctx: &Ctx<'_>) -> Answer {
    let body = ctx.json()?;
    let messages = body
        .get("messages")
        .filter(|m| m.is_array())
        .ok_or_else(|| ctx.missing("messages"))?;
    let model = model_of(&body, "grok-4");
    let reply = ctx.reply(body.get("max_tokens").and_then(Value::as_u64));
    Ok(json_ok(json!({
        "id": new_id("msg_"), "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": reply.text()}],
        "stop_reason": if reply.truncated { "max_tokens" } else { "end_turn" },
        "stop_sequence": null,
        "usage": {"input_tokens": count_words(messages), "output_tokens": reply.tokens()},
    })))
}

/// `POST /v1/complete`: Anthropic's legacy text completions.
fn anthropic_complete(ctx: &Ctx<'_>) -> Answer {
    let body = ctx.json()?;
    body.get("prompt")
        .filter(|p| p.is_string())
        .ok_or_else(|| ctx.missing("prompt"))?;
    let reply = ctx.reply(body.get("max_tokens_to_sample").and_then(Value::as_u64));
    Ok(json_ok(json!({
        "type": "completion", "id": new_id("compl_"), "completion": reply.text(),
        "stop_reason": "stop_sequence", "model": model_of(&body, "grok-4"),
    })))
}

/// `POST /v1/tokenize-text`: one token per word.
fn tokenize(ctx: &Ctx<'_>) -> Answer {
    let body = ctx.json()?;
    let text = body
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| ctx.missing("text"))?;
    let tokens: Vec<Value> = text
        .split_whitespace()
        .enumerate()
        .map(|(i, word)| json!({"token_id": i + 1, "string_token": word, "token_bytes": word.as_bytes()}))
        .collect();
    Ok(json_ok(json!({"token_ids": tokens})))
}

fn language_model(id: &str) -> Value {
    json!({"id": id, "fingerprint": "fp_mock", "created": MODEL_CREATED, "object": "model",
        "owned_by": "xai", "version": "1.0", "input_modalities": ["text"],
        "output_modalities": [if id.contains("image") { "image" } else { "text" }],
        "prompt_text_token_price": 0, "completion_text_token_price": 0, "aliases": []})
}

/// `GET /v1/models/{id}`: only models of the catalog exist.
fn model(ctx: &Ctx<'_>, id: &str) -> Answer {
    let (ids, owner) = catalog(ctx.flavor);
    if ids.contains(&id) {
        return Ok(json_ok(model_object(id, owner)));
    }
    Err(ctx.error(
        http::StatusCode::NOT_FOUND,
        &format!("The model `{id}` does not exist or you do not have access to it."),
        "invalid_request_error",
        Some("model_not_found"),
        None,
    ))
}

fn catalog(flavor: Flavor) -> (&'static [&'static str], &'static str) {
    match flavor {
        Flavor::OpenAi => (OPENAI_MODELS, "openai"),
        Flavor::Xai => (XAI_MODELS, "xai"),
    }
}

fn model_object(id: &str, owner: &str) -> Value {
    json!({"id": id, "object": "model", "created": MODEL_CREATED, "owned_by": owner})
}

/// `x-mock-bad-shape`: a 200 with the right `object` but no `choices` / `output`.
fn bad_shape(id: &str, object: &str, created: u64, model: &str) -> Response {
    json_ok(json!({"id": id, "object": object, "created": created, "model": model}))
}

fn deleted(id: &str, object: &str) -> Response {
    json_ok(json!({"id": id, "object": object, "deleted": true}))
}

/// OpenAI's list envelope.
fn list(items: Vec<Value>) -> Response {
    let first_id = items.first().map_or(Value::Null, |item| item["id"].clone());
    let last_id = items.last().map_or(Value::Null, |item| item["id"].clone());
    json_ok(json!({
        "object": "list",
        "data": items,
        "first_id": first_id,
        "last_id": last_id,
        "has_more": false,
    }))
}

fn find(items: &[Value], id: &str) -> Option<Value> {
    items.iter().find(|item| item["id"] == id).cloned()
}

fn remove(items: &mut Vec<Value>, id: &str) -> bool {
    let before = items.len();
    items.retain(|item| item["id"] != id);
    items.len() != before
}

/// The request's `model`, or the endpoint's default when absent or empty.
fn model_of(body: &Value, default: &str) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .filter(|model| !model.is_empty())
        .unwrap_or(default)
        .to_owned()
}

fn is_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn include_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A request field copied into the answer, `null` when absent.
fn echo(body: &Value, key: &str) -> Value {
    body.get(key).cloned().unwrap_or(Value::Null)
}

/// The call a chat request with `tools` gets: the tool named by `tool_choice`, else the first
/// tool. `tool_choice: "none"` means text.
fn tool_call(body: &Value) -> Option<ToolCall> {
    let choice = body.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let first = body.get("tools")?.as_array()?.first()?;
    let name = choice
        .and_then(|choice| choice.pointer("/function/name"))
        .or_else(|| first.pointer("/function/name"))
        // Responses-style flat tools carry the name at the top.
        .or_else(|| first.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("tool");
    Some(ToolCall {
        id: new_id("call_"),
        name: name.to_owned(),
    })
}

fn chat_usage(flavor: Flavor, prompt_tokens: u64, completion_tokens: u64) -> Value {
    let mut usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    });
    if flavor == Flavor::Xai {
        usage["prompt_tokens_details"] = json!({
            "text_tokens": prompt_tokens,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": 0,
        });
        usage["num_sources_used"] = json!(0);
    }
    usage
}

fn responses_usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    })
}

/// The Responses API's `response` object; request settings are echoed back as OpenAI does.
fn response_object(
    id: &str,
    created: u64,
    model: &str,
    status: &str,
    output: Value,
    usage: Value,
    request: &Value,
) -> Value {
    let incomplete_details = if status == "incomplete" {
        json!({"reason": "max_output_tokens"})
    } else {
        Value::Null
    };
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete_details,
        "instructions": echo(request, "instructions"),
        "max_output_tokens": echo(request, "max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": echo(request, "previous_response_id"),
        "store": request.get("store").and_then(Value::as_bool).unwrap_or(true),
        "temperature": request.get("temperature").and_then(Value::as_f64).unwrap_or(1.0),
        "top_p": request.get("top_p").and_then(Value::as_f64).unwrap_or(1.0),
        "tool_choice": "auto",
        "tools": [],
        "truncation": "disabled",
        "usage": usage,
        "metadata": request.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// One Responses SSE event: `type` and `sequence_number` first, then the event's fields.
fn typed_event(kind: &str, sequence: usize, fields: Value) -> Bytes {
    let mut event = Map::new();
    event.insert("type".to_owned(), Value::from(kind));
    event.insert("sequence_number".to_owned(), Value::from(sequence));
    if let Value::Object(fields) = fields {
        event.extend(fields);
    }
    sse::typed_frame(kind, &Value::Object(event))
}

/// The inputs of an embeddings request: one string, one pre-tokenised array, or a list of
/// either.
fn embedding_inputs(input: &Value) -> Vec<&Value> {
    match input {
        Value::Array(items) if !items.iter().all(Value::is_number) => items.iter().collect(),
        _ => vec![input],
    }
}

/// A deterministic vector in [-1, 1): an LCG seeded with the FNV-1a hash of the input.
fn embedding(item: &Value, dimensions: usize) -> Vec<f32> {
    let mut state = item
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (0..dimensions)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // 24 random bits: exactly representable in an f32.
            let unit = (state >> 40) as f32 / (1_u64 << 24) as f32;
            unit * 2.0 - 1.0
        })
        .collect()
}
