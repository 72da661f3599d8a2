//! Kong's ai-proxy route types, and what each one means to the gateway: the OpenAI path it
//! maps to, the kind of body it carries, whether it streams, what its prompt field is and
//! which key a successful JSON answer must have. Everything that differs by route type is
//! answered here, so the request flow matches on the enum instead of on strings.

use serde::Deserialize;

/// A route type of `config.route_type` (the schema's enum, Kong's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum RouteType {
    #[serde(rename = "llm/v1/chat")]
    Chat,
    #[serde(rename = "llm/v1/completions")]
    Completions,
    #[serde(rename = "llm/v1/embeddings")]
    Embeddings,
    #[serde(rename = "llm/v1/files")]
    Files,
    #[serde(rename = "llm/v1/batches")]
    Batches,
    #[serde(rename = "llm/v1/assistants")]
    Assistants,
    #[serde(rename = "llm/v1/responses")]
    Responses,
    #[serde(rename = "audio/v1/audio/speech")]
    AudioSpeech,
    #[serde(rename = "audio/v1/audio/transcriptions")]
    AudioTranscriptions,
    #[serde(rename = "audio/v1/audio/translations")]
    AudioTranslations,
    #[serde(rename = "image/v1/images/generations")]
    ImageGenerations,
    #[serde(rename = "image/v1/images/edits")]
    ImageEdits,
    #[serde(rename = "video/v1/videos/generations")]
    VideoGenerations,
    #[serde(rename = "realtime/v1/realtime")]
    Realtime,
    /// Passes the request path through (Kong's deprecated `preserve`).
    #[serde(rename = "preserve")]
    Preserve,
}

/// What a route type's request body is to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON the gateway reads, checks and rewrites (on POST).
    Json,
    /// Passed through untouched (multipart uploads, file and batch management, anything the
    /// gateway does not need to read).
    PassThrough,
}

/// The field of a JSON request that carries the prompt, which Kong checks is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// A non-empty `messages` array (chat).
    Messages,
    /// A string `prompt` (completions, image and video generation).
    Text,
    /// A non-null `input` (embeddings, responses, speech).
    Input,
}

// === impl RouteType ===

impl RouteType {
    pub const ALL: [RouteType; 15] = [
        RouteType::Chat,
        RouteType::Completions,
        RouteType::Embeddings,
        RouteType::Files,
        RouteType::Batches,
        RouteType::Assistants,
        RouteType::Responses,
        RouteType::AudioSpeech,
        RouteType::AudioTranscriptions,
        RouteType::AudioTranslations,
        RouteType::ImageGenerations,
        RouteType::ImageEdits,
        RouteType::VideoGenerations,
        RouteType::Realtime,
        RouteType::Preserve,
    ];

    /// Kong's name, as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteType::Chat => "llm/v1/chat",
            RouteType::Completions => "llm/v1/completions",
            RouteType::Embeddings => "llm/v1/embeddings",
            RouteType::Files => "llm/v1/files",
            RouteType::Batches => "llm/v1/batches",
            RouteType::Assistants => "llm/v1/assistants",
            RouteType::Responses => "llm/v1/responses",
            RouteType::AudioSpeech => "audio/v1/audio/speech",
            RouteType::AudioTranscriptions => "audio/v1/audio/transcriptions",
            RouteType::AudioTranslations => "audio/v1/audio/translations",
            RouteType::ImageGenerations => "image/v1/images/generations",
            RouteType::ImageEdits => "image/v1/images/edits",
            RouteType::VideoGenerations => "video/v1/videos/generations",
            RouteType::Realtime => "realtime/v1/realtime",
            RouteType::Preserve => "preserve",
        }
    }

    /// The path on OpenAI's API (shared by OpenAI-compatible providers). `None` for
    /// `preserve`, which keeps the client's path. Realtime is a WebSocket on `/v1/realtime`.
    pub fn openai_path(self) -> Option<&'static str> {
        Some(match self {
            RouteType::Chat => "/v1/chat/completions",
            RouteType::Completions => "/v1/completions",
            RouteType::Embeddings => "/v1/embeddings",
            RouteType::Files => "/v1/files",
            RouteType::Batches => "/v1/batches",
            RouteType::Assistants => "/v1/assistants",
            RouteType::Responses => "/v1/responses",
            RouteType::AudioSpeech => "/v1/audio/speech",
            RouteType::AudioTranscriptions => "/v1/audio/transcriptions",
            RouteType::AudioTranslations => "/v1/audio/translations",
            RouteType::ImageGenerations => "/v1/images/generations",
            RouteType::ImageEdits => "/v1/images/edits",
            RouteType::VideoGenerations => "/v1/videos",
            RouteType::Realtime => "/v1/realtime",
            RouteType::Preserve => return None,
        })
    }

    pub fn body(self) -> BodyKind {
        match self {
            RouteType::Chat
            | RouteType::Completions
            | RouteType::Embeddings
            | RouteType::Responses
            | RouteType::AudioSpeech
            | RouteType::ImageGenerations
            | RouteType::VideoGenerations => BodyKind::Json,
            RouteType::Files
            | RouteType::Batches
            | RouteType::Assistants
            | RouteType::AudioTranscriptions
            | RouteType::AudioTranslations
            | RouteType::ImageEdits
            | RouteType::Realtime
            | RouteType::Preserve => BodyKind::PassThrough,
        }
    }

    /// Whether the gateway reads, checks and rewrites a request with this method as JSON.
    pub fn reads_json(self, method: &http::Method) -> bool {
        self.body() == BodyKind::Json && method == http::Method::POST
    }

    /// The prompt a JSON request must carry (Kong: "request body doesn't contain valid
    /// prompts").
    pub fn prompt(self) -> Option<Prompt> {
        match self {
            RouteType::Chat => Some(Prompt::Messages),
            RouteType::Completions | RouteType::ImageGenerations | RouteType::VideoGenerations => {
                Some(Prompt::Text)
            }
            RouteType::Embeddings | RouteType::Responses | RouteType::AudioSpeech => {
                Some(Prompt::Input)
            }
            _ => None,
        }
    }

    /// Whether a response can be a stream of server-sent events.
    pub fn streams(self) -> bool {
        matches!(
            self,
            RouteType::Chat | RouteType::Completions | RouteType::Responses
        )
    }

    /// Whether a stream reports usage only when asked (`stream_options.include_usage`, which
    /// the gateway then adds); the Responses API always reports it in `response.completed`.
    pub fn usage_needs_asking(self) -> bool {
        matches!(self, RouteType::Chat | RouteType::Completions)
    }

    /// The key a successful JSON answer must have (Kong's shape check); `None` for answers
    /// the gateway does not read.
    pub fn expects(self) -> Option<&'static str> {
        match self {
            RouteType::Chat | RouteType::Completions => Some("choices"),
            RouteType::Embeddings | RouteType::ImageGenerations => Some("data"),
            RouteType::Responses => Some("output"),
            _ => None,
        }
    }

    /// The request field the configured `max_tokens` fills, on the route types that take the
    /// model options (`max_tokens`, `temperature`, `top_p`).
    pub fn max_tokens_field(self) -> Option<&'static str> {
        match self {
            RouteType::Chat | RouteType::Completions => Some("max_tokens"),
            RouteType::Responses => Some("max_output_tokens"),
            _ => None,
        }
    }

    /// The methods this route type's API defines (with `GET <route>/models`, the model list,
    /// also served on every route type that is not `preserve`). Anything else is refused
    /// before the provider's key is put on it. `None`: any method (`preserve`).
    pub fn methods(self) -> Option<&'static [http::Method]> {
        use http::Method;
        const POST: &[Method] = &[Method::POST];
        const MANAGE: &[Method] = &[Method::GET, Method::POST, Method::DELETE];
        Some(match self {
            RouteType::Chat
            | RouteType::Completions
            | RouteType::Embeddings
            | RouteType::AudioSpeech
            | RouteType::AudioTranscriptions
            | RouteType::AudioTranslations
            | RouteType::ImageGenerations
            | RouteType::ImageEdits => POST,
            // Retrieve and delete by id; cancel and uploads are POSTs.
            RouteType::Responses
            | RouteType::VideoGenerations
            | RouteType::Files
            | RouteType::Batches
            | RouteType::Assistants => MANAGE,
            RouteType::Realtime => &[Method::GET],
            RouteType::Preserve => return None,
        })
    }

    /// Sends the Assistants API's beta header when the client did not.
    pub fn needs_assistants_beta(self) -> bool {
        self == RouteType::Assistants
    }
}

impl std::fmt::Display for RouteType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_type_reads_back_from_its_kong_name() {
        for route_type in RouteType::ALL {
            let json = serde_json::Value::from(route_type.as_str());
            let back: RouteType = serde_json::from_value(json).expect("a known route type");
            assert_eq!(back, route_type);
        }
    }

    #[test]
    fn the_schema_enumerates_exactly_these_route_types() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../schemas/plugins/ai-proxy.json"))
                .expect("the ai-proxy schema is JSON");
        let listed: Vec<&str> = schema["properties"]["route_type"]["enum"]
            .as_array()
            .expect("route_type has an enum")
            .iter()
            .map(|v| v.as_str().expect("a string"))
            .collect();
        let ours: Vec<&str> = RouteType::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(listed, ours);
    }

    #[test]
    fn what_each_route_type_means() {
        use RouteType::*;
        // (route type, JSON body, prompt, streams, expected key)
        let table = [
            (Chat, true, Some(Prompt::Messages), true, Some("choices")),
            (Completions, true, Some(Prompt::Text), true, Some("choices")),
            (Embeddings, true, Some(Prompt::Input), false, Some("data")),
            (Responses, true, Some(Prompt::Input), true, Some("output")),
            (AudioSpeech, true, Some(Prompt::Input), false, None),
            (
                ImageGenerations,
                true,
                Some(Prompt::Text),
                false,
                Some("data"),
            ),
            (VideoGenerations, true, Some(Prompt::Text), false, None),
            (Files, false, None, false, None),
            (AudioTranscriptions, false, None, false, None),
            (ImageEdits, false, None, false, None),
            (Preserve, false, None, false, None),
        ];
        for (route_type, json, prompt, streams, expects) in table {
            assert_eq!(route_type.body() == BodyKind::Json, json, "{route_type}");
            assert_eq!(route_type.prompt(), prompt, "{route_type}");
            assert_eq!(route_type.streams(), streams, "{route_type}");
            assert_eq!(route_type.expects(), expects, "{route_type}");
            assert!(!route_type.reads_json(&http::Method::GET), "{route_type}");
            assert_eq!(route_type.reads_json(&http::Method::POST), json);
            let methods = route_type.methods().unwrap_or(&[]);
            assert_eq!(
                methods.contains(&http::Method::POST),
                route_type != Preserve,
                "{route_type}"
            );
        }
        assert!(!Chat.methods().unwrap().contains(&http::Method::DELETE));
        assert!(Files.methods().unwrap().contains(&http::Method::DELETE));
    }
}
