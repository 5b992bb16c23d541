//! The fake server's gateway: Discord's WebSocket protocol (v10, JSON text
//! frames) on its own loopback port, announced by `GET /gateway`.
//!
//! It speaks what a bot needs: HELLO, IDENTIFY → READY and one GUILD_CREATE
//! per guild, HEARTBEAT → HEARTBEAT_ACK, RESUME (replaying the events the
//! session missed, then RESUMED; an unknown session gets INVALID_SESSION),
//! and dispatches that tests inject (`MESSAGE_CREATE`, `INTERACTION_CREATE`,
//! ...). Tests can close every connection to exercise reconnects, refuse
//! the WebSocket handshake with an HTTP error (as Discord's edge does when it
//! is down or will not serve a client), and close a connection at IDENTIFY
//! with a fatal close code (a refused token, disallowed intents). Every
//! payload a client sends is recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::http::State;
use super::wire::{channel_json, guild_json, member_json, user_json, JOINED_AT};
use super::World;

/// Gateway opcodes.
mod op {
    pub const DISPATCH: u64 = 0;
    pub const HEARTBEAT: u64 = 1;
    pub const IDENTIFY: u64 = 2;
    pub const RESUME: u64 = 6;
    pub const INVALID_SESSION: u64 = 9;
    pub const HELLO: u64 = 10;
    pub const HEARTBEAT_ACK: u64 = 11;
}

/// One session: its events so far (for RESUME) and whether a connection serves it.
#[derive(Default)]
struct Session {
    seq: u64,
    /// (seq, event name, data)
    events: Vec<(u64, String, Value)>,
}

pub(super) struct Gateway {
    pub url: String,
    heartbeat_ms: u64,
    sessions: Mutex<HashMap<String, Session>>,
    /// What clients sent: (session id or "", payload).
    pub received: Mutex<Vec<Value>>,
    /// New events and close requests for live connections.
    events: broadcast::Sender<Signal>,
    /// When set, WebSocket handshakes are answered with this HTTP status and a
    /// Discord-style JSON error with this `message`, not with 101.
    refusal: Mutex<Option<(u16, String)>>,
    /// Handshakes refused so far (counted once the answer was written).
    pub refused: AtomicU64,
    /// When set, an IDENTIFY is answered by closing with this code and reason.
    identify_close: Mutex<Option<(u16, String)>>,
}

#[derive(Clone, Debug)]
enum Signal {
    Event,
    Close(u16),
}

impl Gateway {
    /// Binds the gateway's port; `serve` starts answering.
    pub async fn bind(heartbeat_ms: u64) -> std::io::Result<(Arc<Gateway>, TcpListener)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        // With a path, so that `{url}?v=10` is a valid request target for any client.
        let url = format!("ws://{}/", listener.local_addr()?);
        let (events, _) = broadcast::channel(1024);
        let gw = Arc::new(Gateway {
            url,
            heartbeat_ms,
            sessions: Mutex::default(),
            received: Mutex::default(),
            events,
            refusal: Mutex::default(),
            refused: AtomicU64::new(0),
            identify_close: Mutex::default(),
        });
        Ok((gw, listener))
    }

    pub fn serve(self: &Arc<Self>, listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
        let g = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (g, state, stop) = (g.clone(), state.clone(), shutdown.clone());
                        tokio::spawn(async move {
                            if let Err(e) = g.connection(stream, state, stop).await {
                                tracing::debug!(error = %e, "fake gateway connection ended");
                            }
                        });
                    }
                }
            }
        });
    }

    /// Queues an event for every session (delivered now to connected ones,
    /// on RESUME to the others).
    pub fn dispatch(&self, event: &str, data: Value) {
        for s in self.sessions.lock().unwrap().values_mut() {
            s.seq += 1;
            s.events.push((s.seq, event.to_owned(), data.clone()));
        }
        let _ = self.events.send(Signal::Event);
    }

    /// Closes every open connection with this close code (sessions stay resumable).
    pub fn close_all(&self, code: u16) {
        let _ = self.events.send(Signal::Close(code));
    }

    /// Forgets every session (as Discord does when one expires).
    pub fn forget_sessions(&self) {
        self.sessions.lock().unwrap().clear();
    }

    pub fn sessions(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// From now on, answers handshakes with `status` and `message` (`None`: accepts them again).
    pub fn refuse(&self, refusal: Option<(u16, String)>) {
        *self.refusal.lock().unwrap() = refusal;
    }

    /// From now on, closes connections at IDENTIFY with this code and reason (`None`: accepts them again).
    pub fn close_on_identify(&self, close: Option<(u16, String)>) {
        *self.identify_close.lock().unwrap() = close;
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        state: Arc<State>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let refusal = self.refusal.lock().unwrap().clone();
        if let Some((status, message)) = refusal {
            // The handshake callback's signature is tungstenite's.
            #[allow(clippy::result_large_err)]
            let refuse = move |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
                let body = json!({"message": message, "code": 0}).to_string();
                Err(http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Some(body))
                    .expect("valid response"))
            };
            // Always an error: the one the callback chose, now written to the client.
            let _ = tokio_tungstenite::accept_hdr_async(stream, refuse).await;
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        let mut ws = tokio_tungstenite::accept_async(stream).await?;
        let mut signals = self.events.subscribe();
        ws.send(text(json!({"op": op::HELLO, "d": {"heartbeat_interval": self.heartbeat_ms}}))).await?;
        let mut session: Option<String> = None;
        // Events of the session up to here have been sent.
        let mut sent = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                signal = signals.recv() => match signal {
                    Ok(Signal::Close(code)) => {
                        let frame = CloseFrame { code: CloseCode::from(code), reason: "closed by the test".into() };
                        let _ = ws.send(Message::Close(Some(frame))).await;
                        return Ok(());
                    }
                    Ok(Signal::Event) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(id) = &session {
                            sent = self.send_pending(&mut ws, id, sent).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                frame = ws.next() => {
                    let Some(frame) = frame else { return Ok(()) };
                    let payload: Value = match frame? {
                        Message::Text(t) => serde_json::from_str(&t)?,
                        Message::Binary(b) => serde_json::from_slice(&b)?,
                        Message::Close(_) => return Ok(()),
                        _ => continue,
                    };
                    self.received.lock().unwrap().push(payload.clone());
                    let token = state.world.lock().unwrap().token.clone();
                    match payload["op"].as_u64() {
                        Some(op::HEARTBEAT) => ws.send(text(json!({"op": op::HEARTBEAT_ACK}))).await?,
                        Some(op::IDENTIFY) => {
                            let close = self.identify_close.lock().unwrap().clone();
                            if let Some((code, reason)) = close {
                                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                                ws.send(Message::Close(Some(frame))).await?;
                                return Ok(());
                            }
                            if payload["d"]["token"].as_str().map(|t| t.trim_start_matches("Bot ")) != Some(token.as_str()) {
                                let frame = CloseFrame { code: CloseCode::from(4004), reason: "Authentication failed.".into() };
                                ws.send(Message::Close(Some(frame))).await?;
                                return Ok(());
                            }
                            let id = format!("session-{}", rand::random::<u64>());
                            self.sessions.lock().unwrap().insert(id.clone(), Session::default());
                            let (ready, creates) = {
                                let w = state.world.lock().unwrap();
                                (ready(&w, &id, &self.url), w.guilds.iter().map(|g| guild_create(&w, g)).collect::<Vec<_>>())
                            };
                            {
                                let mut sessions = self.sessions.lock().unwrap();
                                let s = sessions.get_mut(&id).expect("just inserted");
                                s.seq += 1;
                                s.events.push((s.seq, "READY".into(), ready));
                                for g in creates {
                                    s.seq += 1;
                                    s.events.push((s.seq, "GUILD_CREATE".into(), g));
                                }
                            }
                            session = Some(id.clone());
                            sent = self.send_pending(&mut ws, &id, 0).await?;
                        }
                        Some(op::RESUME) => {
                            let d = &payload["d"];
                            let id = d["session_id"].as_str().unwrap_or_default().to_owned();
                            let known = self.sessions.lock().unwrap().contains_key(&id);
                            if !known || d["token"].as_str().map(|t| t.trim_start_matches("Bot ")) != Some(token.as_str()) {
                                ws.send(text(json!({"op": op::INVALID_SESSION, "d": false}))).await?;
                                continue;
                            }
                            let from = d["seq"].as_u64().unwrap_or(0);
                            session = Some(id.clone());
                            sent = self.send_pending(&mut ws, &id, from).await?;
                            ws.send(text(json!({"op": op::DISPATCH, "t": "RESUMED", "s": sent, "d": {}}))).await?;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Sends the session's events after `after`; returns the last seq sent.
    async fn send_pending(
        &self,
        ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
        id: &str,
        after: u64,
    ) -> anyhow::Result<u64> {
        let pending: Vec<(u64, String, Value)> = self
            .sessions
            .lock()
            .unwrap()
            .get(id)
            .map(|s| s.events.iter().filter(|(seq, _, _)| *seq > after).cloned().collect())
            .unwrap_or_default();
        let mut last = after;
        for (seq, event, data) in pending {
            ws.send(text(json!({"op": op::DISPATCH, "t": event, "s": seq, "d": data}))).await?;
            last = seq;
        }
        Ok(last)
    }
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string())
}

pub(super) fn ready(world: &World, session: &str, url: &str) -> Value {
    json!({
        "v": 10,
        "user": user_json(world, world.bot_user),
        "guilds": world.guilds.iter().map(|g| json!({"id": g.id.to_string(), "unavailable": true})).collect::<Vec<_>>(),
        "session_id": session,
        "resume_gateway_url": url,
        "application": {"id": world.application_id.to_string(), "flags": world.app_flags},
        "private_channels": [],
        "relationships": [],
    })
}

pub(super) fn guild_create(world: &World, g: &super::FakeGuild) -> Value {
    let mut v = guild_json(g);
    let bot = world.bot();
    v["channels"] = g.channels.iter().filter(|c| !c.is_thread()).map(|c| channel_json(g, c)).collect();
    v["threads"] =
        g.channels.iter().filter(|c| c.is_thread() && c.archived_at_ms.is_none()).map(|c| channel_json(g, c)).collect();
    v["members"] = member_json(world, g, bot.id).into_iter().collect();
    v["member_count"] = json!(g.members.len());
    v["joined_at"] = json!(JOINED_AT);
    v["large"] = json!(false);
    v["unavailable"] = json!(false);
    v["voice_states"] = json!([]);
    v["presences"] = json!([]);
    v["stage_instances"] = json!([]);
    v["guild_scheduled_events"] = json!([]);
    v
}
