//! `basic-auth` (Kong 3.x `kong/plugins/basic-auth`): a consumer's username and password in
//! `Proxy-Authorization` or `Authorization`, checked against the SHA-1 hash Kong stores.

use async_trait::async_trait;
use base64::Engine as _;
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use http::{HeaderName, StatusCode};
use serde::Deserialize;
use sluice_model::credentials::hash_password;
use sluice_plugin::identity::{authenticate, BasicCredential, Via};
use sluice_plugin::{
    erase, typed_config, Flow, Plugin, PluginBuildError, PluginFactory, PluginHandler,
    ProxyRequest, RequestCtx,
};

use crate::auth;

const PRIORITY: i64 = 1100;

#[derive(Debug, Deserialize)]
struct Config {
    anonymous: Option<String>,
    hide_credentials: bool,
    realm: String,
}

pub struct Factory;

struct Handler {
    config: Config,
    www_authenticate: String,
}

// === impl Factory ===

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "basic-auth"
    }

    fn build(
        &self,
        plugin: &sluice_model::Plugin,
    ) -> Result<std::sync::Arc<dyn PluginHandler>, PluginBuildError> {
        let config: Config = typed_config(plugin)?;
        let www_authenticate = format!("Basic realm=\"{}\"", config.realm);
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
        "basic-auth"
    }

    fn priority(&self) -> i64 {
        PRIORITY
    }

    async fn access(&self, request: &mut ProxyRequest, ctx: &mut RequestCtx, _: &mut ()) -> Flow {
        if auth::already_authenticated(ctx, &self.config.anonymous) {
            return Flow::Continue;
        }
        // Kong tries Proxy-Authorization first, then Authorization; with hide_credentials it
        // removes each header it looked at.
        let mut verified: Option<BasicCredential> = None;
        for header in [PROXY_AUTHORIZATION, AUTHORIZATION] {
            let Some(value) = request.parts.headers.get(&header) else {
                continue;
            };
            let found = value
                .to_str()
                .ok()
                .and_then(parse)
                .and_then(|(username, password)| check(ctx, &username, &password));
            if self.config.hide_credentials {
                remove(request, &header);
            }
            if found.is_some() {
                verified = found;
                break;
            }
        }
        match verified {
            Some(credential) => {
                let via = Via::Credential(credential.identifier);
                authenticate(request, ctx, credential.consumer, via);
                Flow::Continue
            }
            None => {
                let answer = auth::error(
                    ctx,
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    Some(&self.www_authenticate),
                );
                auth::fail(request, ctx, &self.config.anonymous, answer)
            }
        }
    }
}

fn remove(request: &mut ProxyRequest, header: &HeaderName) {
    request.parts.headers.remove(header);
}

/// `Basic <base64(username:password)>` (Kong: `\s*[Bb]asic\s*(.+)`, then `([^:]+):(.*)`).
/// Anything else, including a value that is not base64, carries no credential.
fn parse(value: &str) -> Option<(String, String)> {
    let value = value.trim_start();
    let scheme = value.get(..5)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded = value[5..].trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    if username.is_empty() {
        return None;
    }
    Some((username.to_owned(), password.to_owned()))
}

/// The credential when `password` hashes to the stored hash (compared in constant time).
fn check(ctx: &RequestCtx, username: &str, password: &str) -> Option<BasicCredential> {
    let credential = ctx.identities.basic(username)?;
    let hashed = hash_password(password, credential.consumer.id);
    let (a, b) = (hashed.as_bytes(), credential.password_hash.as_bytes());
    let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    same.then(|| credential.clone())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn basic_header_forms() {
        // "user:pa:ss" in base64.
        assert_eq!(
            parse("Basic dXNlcjpwYTpzcw=="),
            Some(("user".to_owned(), "pa:ss".to_owned()))
        );
        assert_eq!(
            parse("basic   dXNlcjpwYTpzcw== ").map(|p| p.0),
            Some("user".to_owned())
        );
        assert_eq!(parse("Basic not-base64!"), None);
        assert_eq!(parse("Bearer dXNlcjpwYTpzcw=="), None);
        // ":nouser" — Kong's pattern needs a username.
        assert_eq!(parse("Basic Om5vdXNlcg=="), None);
        assert_eq!(parse("foobar"), None);
    }
}
