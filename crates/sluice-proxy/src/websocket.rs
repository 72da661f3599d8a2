//! After a 101: the two upgraded connections, spliced byte for byte, or relayed message by
//! message when a plugin of the request reads the messages (ai-proxy counting a realtime
//! session's tokens from its `response.done` events).
//!
//! The message relay re-frames: each side gets its own WebSocket (client side as the server
//! role, upstream side as the client role, which masks). Pings are answered by each hop
//! itself (tungstenite replies to a ping on its own) and not forwarded, so a pong is never
//! answered twice; text, binary and close are forwarded as they came. A plugin that reads
//! messages must also keep extensions (permessage-deflate) out of the handshake, since the
//! relay forwards frames it can read.

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use sluice_plugin::WsDirection;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

use crate::response_body::Phases;

/// Whether any plugin of the request asked to read its WebSocket messages.
pub(crate) fn wants_messages(phases: &Phases) -> bool {
    phases
        .chain
        .handlers
        .iter()
        .zip(phases.states.iter())
        .any(|(handler, state)| handler.reads_websocket(state))
}

/// Splices the two connections until either side closes; counts the bytes sent to the
/// client as the response's size.
pub(crate) async fn splice(client: Upgraded, upstream: Upgraded, phases: &mut Phases) {
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((_, to_client)) => phases.ctx.response_bytes += to_client,
        Err(error) => {
            let request_id = &phases.ctx.request_id;
            tracing::debug!(%request_id, %error, "upgraded connection ended with an error");
        }
    }
}

/// Relays messages both ways, showing each text message to the plugins that read them,
/// until a side closes or fails.
pub(crate) async fn relay(client: Upgraded, upstream: Upgraded, phases: &mut Phases) {
    let mut client =
        WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
    let mut upstream =
        WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, None).await;
    loop {
        let (direction, received) = tokio::select! {
            message = client.next() => (WsDirection::ClientToUpstream, message),
            message = upstream.next() => (WsDirection::UpstreamToClient, message),
        };
        let message = match received {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                let request_id = &phases.ctx.request_id;
                tracing::debug!(%request_id, %error, ?direction, "websocket relay ended with an error");
                break;
            }
            None => break,
        };
        let closing = matches!(message, Message::Close(_));
        match &message {
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Text(text) => show(phases, direction, text.as_str()),
            Message::Binary(_) | Message::Close(_) => {}
        }
        if direction == WsDirection::UpstreamToClient {
            phases.ctx.response_bytes += message.len() as u64;
        }
        let sent = match direction {
            WsDirection::ClientToUpstream => upstream.send(message).await,
            WsDirection::UpstreamToClient => client.send(message).await,
        };
        if sent.is_err() || closing {
            break;
        }
    }
    // Best effort: whichever side is still open hears that the session is over.
    let _ = client.close(None).await;
    let _ = upstream.close(None).await;
}

fn show(phases: &mut Phases, direction: WsDirection, text: &str) {
    for (handler, state) in phases.chain.handlers.iter().zip(phases.states.iter_mut()) {
        if handler.reads_websocket(state) {
            handler.websocket_message(direction, text, &mut phases.ctx, state);
        }
    }
}
