//! What Kong's auth plugins share: their error answers, the anonymous consumer, and taking a
//! credential out of the request before it goes upstream.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use serde_json::json;
use sluice_plugin::identity::{authenticate, ConsumerInfo, Via};
use sluice_plugin::{json_response, Flow, ProxyRequest, RequestCtx};

/// Kong's error body (`{"message", "request_id"}`) with `WWW-Authenticate` when given.
pub(crate) fn error(
    ctx: &RequestCtx,
    status: StatusCode,
    message: &str,
    www_authenticate: Option<&str>,
) -> Flow {
    let mut response = json_response(
        status.as_u16(),
        &json!({ "message": message, "request_id": ctx.request_id }),
    );
    if let Some(value) = www_authenticate.and_then(|v| HeaderValue::from_str(v).ok()) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    Flow::Respond(response)
}

/// Kong's "logical OR" of auth plugins: with `anonymous` set, a request another auth plugin
/// already authenticated with a credential is left alone.
pub(crate) fn already_authenticated(ctx: &RequestCtx, anonymous: &Option<String>) -> bool {
    anonymous.is_some() && ctx.consumer.as_ref().is_some_and(|c| c.credential)
}

/// A failed authentication: the plugin's own answer, or, with `anonymous` set, the request
/// continues as that consumer. An `anonymous` that names no consumer is Kong's 500.
pub(crate) fn fail(
    request: &mut ProxyRequest,
    ctx: &mut RequestCtx,
    anonymous: &Option<String>,
    failure: Flow,
) -> Flow {
    let Some(anonymous) = anonymous else {
        return failure;
    };
    let consumer: Option<Arc<ConsumerInfo>> = ctx.identities.consumer(anonymous).cloned();
    match consumer {
        Some(consumer) => {
            authenticate(request, ctx, consumer, Via::Anonymous);
            Flow::Continue
        }
        None => {
            // Kong's answer: the config is wrong, not the client.
            error(
                ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("anonymous consumer {anonymous} is configured but doesn't exist"),
                None,
            )
        }
    }
}

/// The query string of `path_and_query` without the arguments named `name` (compared after
/// percent-decoding); the others are kept byte for byte.
pub(crate) fn without_query_arg(path_and_query: &str, name: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            decoded != name
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_args_are_removed_by_decoded_name_and_the_rest_kept_verbatim() {
        assert_eq!(
            without_query_arg("/a?apikey=k&b=%20x", "apikey"),
            "/a?b=%20x"
        );
        assert_eq!(without_query_arg("/a?api%6Bey=k", "apikey"), "/a");
        assert_eq!(
            without_query_arg("/a?x=1&apikey=k&apikey=j", "apikey"),
            "/a?x=1"
        );
        assert_eq!(without_query_arg("/a", "apikey"), "/a");
    }
}
