//! `key-auth` (Kong 3.x `kong/plugins/key-auth`): a consumer's API key in a header, the query
//! string or the body. Looking the key up is one hash-map hit on the compiled config.

use async_trait::async_trait;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use sluice_plugin::identity::{authenticate, Via};
use sluice_plugin::{
    erase, typed_config, Flow, Plugin, PluginBuildError, PluginFactory, PluginHandler,
    ProxyRequest, RequestCtx,
};

use crate::auth;

const PRIORITY: i64 = 1250;

/// Kong's messages (`handler.lua`).
const NO_KEY: &str = "No API key found in request";
const INVALID: &str = "Unauthorized";
const DUPLICATE: &str = "Duplicate API key found";

/// Largest body read to look for a key in it (`key_in_body`).
const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Deserialize)]
struct Config {
    key_names: Vec<String>,
    hide_credentials: bool,
    anonymous: Option<String>,
    key_in_header: bool,
    key_in_query: bool,
    key_in_body: bool,
    run_on_preflight: bool,
    realm: Option<String>,
}

pub struct Factory;

struct Handler {
    config: Config,
    www_authenticate: String,
}

/// Where the key was found.
enum Found {
    Header(String),
    Query(String),
    Body(String),
}

// === impl Factory ===

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "key-auth"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<std::sync::Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        if config.key_names.is_empty() {
            return Err(PluginBuildError::at(
                plugin,
                "key_names",
                "at least one key name is required",
            ));
        }
        let www_authenticate = match &config.realm {
            Some(realm) => format!("Key realm=\"{realm}\""),
            None => "Key".to_owned(),
        };
        Ok(erase(Handler {
            config,
            www_authenticate,
        }))
    }
}

// === impl Handler ===

#[async_trait]
impl Plugin for Handler {
    type State = ();

    fn name(&self) -> &'static str {
        "key-auth"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    async fn access(&self, request: &mut ProxyRequest, ctx: &mut RequestCtx, _: &mut ()) -> Flow {
        if !self.config.run_on_preflight && request.parts.method == Method::OPTIONS {
            return Flow::Continue;
        }
        if auth::already_authenticated(ctx, &self.config.anonymous) {
            return Flow::Continue;
        }
        let failure = match self.find_key(request).await {
            Ok(Some((found, key))) => match ctx.identities.key(&key) {
                Some(credential) => {
                    let (consumer, identifier) =
                        (credential.consumer.clone(), credential.identifier.clone());
                    if self.config.hide_credentials {
                        hide(request, ctx, &found);
                    }
                    authenticate(request, ctx, consumer, Via::Credential(Some(identifier)));
                    return Flow::Continue;
                }
                None => INVALID,
            },
            Ok(None) => NO_KEY,
            Err(message) => message,
        };
        let answer = auth::error(
            ctx,
            StatusCode::UNAUTHORIZED,
            failure,
            Some(&self.www_authenticate),
        );
        auth::fail(request, ctx, &self.config.anonymous, answer)
    }
}

impl Handler {
    /// The first key name that has a value, looked for in the header, then the query, then
    /// the body (Kong's order); a name given twice is Kong's "duplicate" 401.
    async fn find_key(
        &self,
        request: &mut ProxyRequest,
    ) -> Result<Option<(Found, String)>, &'static str> {
        let mut body: Option<Option<Value>> = None;
        for name in &self.config.key_names {
            if self.config.key_in_header {
                let mut values = request.parts.headers.get_all(name.as_str()).iter();
                if let Some(value) = values.next() {
                    if values.next().is_some() {
                        return Err(DUPLICATE);
                    }
                    if let Ok(key) = value.to_str() {
                        if !key.is_empty() {
                            return Ok(Some((Found::Header(name.clone()), key.to_owned())));
                        }
                    }
                }
            }
            if self.config.key_in_query {
                let query = request.parts.uri.query().unwrap_or_default();
                let mut values = form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == name.as_str())
                    .map(|(_, v)| v.into_owned());
                if let Some(key) = values.next() {
                    if values.next().is_some() {
                        return Err(DUPLICATE);
                    }
                    if !key.is_empty() {
                        return Ok(Some((Found::Query(name.clone()), key)));
                    }
                }
            }
            if self.config.key_in_body {
                if body.is_none() {
                    body = Some(read_body(request).await);
                }
                let key = body
                    .as_ref()
                    .and_then(|b| b.as_ref())
                    .and_then(|b| b.get(name.as_str()))
                    .and_then(Value::as_str)
                    .filter(|k| !k.is_empty());
                if let Some(key) = key {
                    return Ok(Some((Found::Body(name.clone()), key.to_owned())));
                }
            }
        }
        Ok(None)
    }
}

/// The body as an object of fields: a JSON object, or a form. Anything else has no key.
async fn read_body(request: &mut ProxyRequest) -> Option<Value> {
    let content_type = request
        .parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = request.buffer(MAX_BODY).await.ok()?;
    if content_type.starts_with("application/json") {
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let fields: serde_json::Map<String, Value> = form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        Some(Value::Object(fields))
    } else {
        None
    }
}

/// `hide_credentials`: the key does not reach the upstream.
fn hide(request: &mut ProxyRequest, ctx: &mut RequestCtx, found: &Found) {
    match found {
        Found::Header(name) => {
            request.parts.headers.remove(name.as_str());
        }
        Found::Query(name) => {
            if let Some(upstream) = ctx.upstream.as_mut() {
                upstream.path_and_query = auth::without_query_arg(&upstream.path_and_query, name);
            }
        }
        Found::Body(name) => {
            let Some(bytes) = (match &request.body {
                sluice_plugin::RequestBody::Buffered(bytes) => Some(bytes.clone()),
                sluice_plugin::RequestBody::Stream(_) => None,
            }) else {
                return;
            };
            let json = serde_json::from_slice::<Value>(&bytes).ok();
            let rewritten = match json {
                Some(Value::Object(mut fields)) => {
                    fields.remove(name.as_str());
                    serde_json::to_vec(&fields).ok()
                }
                _ => {
                    let kept: Vec<(String, String)> = form_urlencoded::parse(&bytes)
                        .filter(|(k, _)| k != name.as_str())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    Some(
                        form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(kept)
                            .finish()
                            .into_bytes(),
                    )
                }
            };
            if let Some(rewritten) = rewritten {
                request.set_body(rewritten.into());
            }
        }
    }
}
