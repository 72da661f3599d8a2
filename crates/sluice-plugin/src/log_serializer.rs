//! One request as a log record, in the shape of Kong's `kong.log.serialize()` (Kong 3.x
//! `kong/pdk/log.lua`): the fields log shippers and dashboards built for Kong read
//! (`request.method`, `response.status`, `latencies.*`, `consumer.username`, ...).
//!
//! It is a subset: no request or response headers and no query table (they would cost a copy
//! of every header per request and can carry secrets), and `route`/`service` carry only their
//! ids, not the whole entities. The record is serialized straight from borrowed fields, so a
//! line costs one buffer and no intermediate `serde_json::Value`.

use serde::Serialize;
use uuid::Uuid;

use crate::RequestCtx;

#[derive(Serialize)]
pub struct Record<'a> {
    pub request: RequestPart<'a>,
    /// Path and query as sent upstream (empty when the request never went upstream).
    pub upstream_uri: &'a str,
    pub response: ResponsePart,
    pub latencies: Latencies,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<Consumer<'a>>,
    pub client_ip: String,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub started_at: u64,
}

#[derive(Serialize)]
pub struct RequestPart<'a> {
    pub id: &'a str,
    pub method: &'a str,
    /// The URI as the client sent it (path and query).
    pub uri: &'a str,
}

#[derive(Serialize)]
pub struct ResponsePart {
    pub status: u16,
    /// Body bytes sent to the client.
    pub size: u64,
}

/// Milliseconds, as Kong reports them: `request` from first byte to log, `proxy` waiting for
/// the upstream (-1 when the request never went upstream, as Kong), `kong` the rest.
#[derive(Serialize)]
pub struct Latencies {
    pub kong: u64,
    pub proxy: i64,
    pub request: u64,
}

#[derive(Serialize)]
pub struct Id {
    pub id: Uuid,
}

#[derive(Serialize)]
pub struct Consumer<'a> {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<&'a str>,
}

/// The record of a request that ran the pipeline (it had a route).
pub fn serialize(ctx: &RequestCtx) -> Record<'_> {
    let request_ms = ctx.started.elapsed().as_millis() as u64;
    let proxy = ctx.upstream_latency.map(|d| d.as_millis() as u64);
    Record {
        request: RequestPart {
            id: &ctx.request_id,
            method: ctx.method.as_str(),
            uri: ctx.uri.path_and_query().map_or("/", |p| p.as_str()),
        },
        upstream_uri: ctx.upstream.as_ref().map_or("", |u| &u.path_and_query),
        response: ResponsePart {
            status: ctx.status,
            size: ctx.response_bytes,
        },
        latencies: Latencies {
            kong: request_ms.saturating_sub(proxy.unwrap_or(0)),
            proxy: proxy.map_or(-1, |p| p as i64),
            request: request_ms,
        },
        route: Some(Id { id: ctx.route_id }),
        service: ctx.service_id.map(|id| Id { id }),
        consumer: ctx.consumer.as_ref().map(|authenticated| {
            let consumer = &authenticated.consumer;
            Consumer {
                id: consumer.id,
                username: consumer.username.as_deref(),
                custom_id: consumer.custom_id.as_deref(),
            }
        }),
        client_ip: ctx.client_addr.ip().to_string(),
        started_at: started_at_ms(ctx.started),
    }
}

/// The wall-clock time of `started`, in milliseconds since the Unix epoch.
pub fn started_at_ms(started: std::time::Instant) -> u64 {
    let now = std::time::SystemTime::now();
    now.checked_sub(started.elapsed())
        .unwrap_or(now)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::identity::{Authenticated, ConsumerInfo};

    fn ctx() -> RequestCtx {
        RequestCtx {
            request_id: "req-1".to_owned(),
            route_id: Uuid::nil(),
            service_id: None,
            consumer_id: None,
            consumer: None,
            identities: Default::default(),
            client_addr: SocketAddr::from(([10, 0, 0, 7], 5555)),
            started: Instant::now(),
            method: http::Method::POST,
            uri: http::Uri::from_static("/chat?x=1"),
            upstream: None,
            upstream_latency: None,
            path_suffix: String::new(),
            uri_captures: Vec::new(),
            status: 401,
            response_bytes: 12,
            log: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_request_that_never_went_upstream_has_proxy_latency_minus_one_and_no_consumer() {
        let ctx = ctx();
        let record = serde_json::to_value(serialize(&ctx)).unwrap();
        assert_eq!(record["request"]["method"], "POST");
        assert_eq!(record["request"]["uri"], "/chat?x=1");
        assert_eq!(record["request"]["id"], "req-1");
        assert_eq!(record["response"]["status"], 401);
        assert_eq!(record["response"]["size"], 12);
        assert_eq!(record["latencies"]["proxy"], -1);
        assert_eq!(record["client_ip"], "10.0.0.7");
        assert_eq!(record["upstream_uri"], "");
        assert!(record.get("consumer").is_none());
        assert!(record.get("service").is_none());
    }

    #[test]
    fn the_authenticated_consumer_and_the_upstream_wait_are_in_the_record() {
        let mut ctx = ctx();
        ctx.upstream_latency = Some(Duration::from_millis(0));
        ctx.consumer = Some(Authenticated {
            consumer: Arc::new(ConsumerInfo {
                id: Uuid::from_u128(7),
                username: Some("team-a".to_owned()),
                custom_id: None,
                groups: Vec::new(),
                id_header: http::HeaderValue::from_static("x"),
                username_header: None,
                custom_id_header: None,
                groups_header: None,
            }),
            credential: true,
        });
        let record = serde_json::to_value(serialize(&ctx)).unwrap();
        assert_eq!(record["consumer"]["username"], "team-a");
        assert_eq!(record["consumer"]["id"], Uuid::from_u128(7).to_string());
        assert!(record["consumer"].get("custom_id").is_none());
        assert_eq!(record["latencies"]["proxy"], 0);
    }
}
