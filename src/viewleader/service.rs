//! The view leader's network shell: it turns requests into [`Command`]s for the state machine,
//! stamps them with a monotonic clock, runs the expiry timer, and publishes every new view to the
//! long polls (`WatchView`) that servers keep open, which is how a view change reaches them at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::state::{Command, Outcome, State, StateConfig};
use super::ViewLeaderOptions;
use crate::error::{Error, Result};
use crate::rpc::message::{ServiceKind, ViewLeaderReply, ViewLeaderRequest};
use crate::rpc::server::{serve, Handler};
use crate::types::View;

/// The longest a `WatchView` long poll is held open before it is answered with the current view.
pub const WATCH_WAIT_MS_MAX: u64 = 30_000;

/// The running view leader.
pub struct ViewLeader {
    state: Mutex<State>,
    started: Instant,
    view_tx: watch::Sender<View>,
    shutdown: CancellationToken,
    /// A simulated crash: answer nothing but recover, expire nobody, keep the state.
    crashed: std::sync::atomic::AtomicBool,
    metrics: crate::metrics::Metrics,
}

impl ViewLeader {
    fn new(options: &ViewLeaderOptions, shutdown: CancellationToken) -> Self {
        let state = State::new(StateConfig {
            lease_ms: options.lease_ms,
            lock_lease_ms: options.lock_lease_ms,
            stall_ms: options.stall_ms(),
        });
        let (view_tx, _) = watch::channel(state.view());
        Self {
            state: Mutex::new(state),
            started: Instant::now(),
            view_tx,
            shutdown,
            crashed: std::sync::atomic::AtomicBool::new(false),
            metrics: crate::metrics::Metrics::new(),
        }
    }

    /// `/metrics` of the view leader: requests by operation, epoch, live servers, crashed.
    fn metrics_text(&self) -> String {
        let view = self.view();
        self.metrics.epoch.set(view.epoch as i64);
        self.metrics.servers.set(view.servers.len() as i64);
        self.metrics.crashed.set(i64::from(!self.is_answering()));
        self.metrics.encode()
    }

    /// `/admin/status` of the view leader.
    fn status_text(&self) -> String {
        let view = self.view();
        let mut out = format!(
            "role: view leader\nepoch: {}\nrebalancing: {}\nsettled epoch: {}\nmembers: {}\n",
            view.epoch,
            view.rebalancing,
            view.settled_epoch,
            view.servers.len()
        );
        for server in &view.servers {
            out.push_str(&format!("  {} {}\n", server.addr, server.id));
        }
        out.push_str(&format!(
            "crashed: {}\nuptime: {} s\n",
            !self.is_answering(),
            self.started.elapsed().as_secs()
        ));
        out
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Applies a command and publishes the view if it changed.
    fn apply(&self, command: Command) -> Result<ViewLeaderReply> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Internal("view leader state poisoned".into()))?;
        let before = state.epoch();
        let reply = state
            .apply(command, self.now_ms())
            .map(|outcome| match outcome {
                Outcome::Heartbeat(reply) => ViewLeaderReply::Heartbeat(reply),
                Outcome::View(view) => ViewLeaderReply::View(view),
                Outcome::Lock(reply) => ViewLeaderReply::Lock(reply),
                Outcome::Left { epoch } => ViewLeaderReply::Left { epoch },
            });
        let view = state.view();
        drop(state);
        if view.epoch != before {
            let servers: Vec<&str> = view.servers.iter().map(|s| s.addr.as_str()).collect();
            info!(epoch = view.epoch, ?servers, "view changed");
        }
        self.view_tx.send_if_modified(|current| {
            if *current != view {
                *current = view;
                true
            } else {
                false
            }
        });
        reply
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view_tx.borrow().clone()
    }

    async fn watch(&self, epoch_known: u64, rebalancing_known: bool, wait_ms: u64) -> View {
        let mut rx = self.view_tx.subscribe();
        let wait = Duration::from_millis(wait_ms.min(WATCH_WAIT_MS_MAX));
        let changed = rx.wait_for(|view| {
            view.epoch > epoch_known
                || (view.epoch == epoch_known && view.rebalancing != rebalancing_known)
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.shutdown.cancelled() => {}
            _ = changed => {}
        }
        self.view()
    }
}

impl Handler for ViewLeader {
    type Request = ViewLeaderRequest;
    type Reply = ViewLeaderReply;
    const SERVICE: ServiceKind = ServiceKind::ViewLeader;

    fn is_answering(&self) -> bool {
        !self.crashed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn accepts(&self, request: &ViewLeaderRequest) -> bool {
        self.is_answering() || self.answers_while_crashed(request)
    }

    fn answers_while_crashed(&self, request: &ViewLeaderRequest) -> bool {
        matches!(
            request,
            ViewLeaderRequest::Recover | ViewLeaderRequest::Crash
        )
    }

    async fn handle(self: Arc<Self>, request: ViewLeaderRequest) -> Result<ViewLeaderReply> {
        let op = request.name();
        let started = Instant::now();
        let reply = self.clone().dispatch(request).await;
        self.metrics.observe(op, started.elapsed(), reply.is_ok());
        reply
    }
}

impl ViewLeader {
    async fn dispatch(self: Arc<Self>, request: ViewLeaderRequest) -> Result<ViewLeaderReply> {
        match request {
            ViewLeaderRequest::Heartbeat {
                server_id,
                addr,
                epoch_seen,
                rebalanced_epoch,
            } => self.apply(Command::Heartbeat {
                server_id,
                addr,
                epoch_seen,
                rebalanced_epoch,
            }),
            ViewLeaderRequest::QueryServers => Ok(ViewLeaderReply::View(self.view())),
            ViewLeaderRequest::LockGet { lock, requester } => {
                self.apply(Command::LockGet { lock, requester })
            }
            ViewLeaderRequest::LockRelease { lock, requester } => {
                self.apply(Command::LockRelease { lock, requester })
            }
            ViewLeaderRequest::WatchView {
                epoch_known,
                rebalancing_known,
                wait_ms,
            } => Ok(ViewLeaderReply::View(
                self.watch(epoch_known, rebalancing_known, wait_ms).await,
            )),
            ViewLeaderRequest::Leave { server_id } => self.apply(Command::Leave { server_id }),
            ViewLeaderRequest::Crash => {
                self.crashed
                    .store(true, std::sync::atomic::Ordering::Release);
                tracing::info!("simulated crash: answering nothing but recover until then");
                Ok(ViewLeaderReply::Crashed(true))
            }
            ViewLeaderRequest::Recover => {
                // The expiry timer stood still meanwhile; its next sweep sees the gap as our own
                // stall and gives every server a full lease.
                self.crashed
                    .store(false, std::sync::atomic::Ordering::Release);
                info!("recovered from a simulated crash");
                Ok(ViewLeaderReply::Crashed(false))
            }
        }
    }
}

/// Runs a view leader on `listener` until `shutdown` fires.
pub async fn run(
    listener: TcpListener,
    options: ViewLeaderOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    run_with_http(listener, None, options, shutdown).await
}

/// [`run`], also serving `/metrics` and `/admin/status` over HTTP on `http` when given.
pub async fn run_with_http(
    listener: TcpListener,
    http: Option<TcpListener>,
    options: ViewLeaderOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    options.validate()?;
    let leader = Arc::new(ViewLeader::new(&options, shutdown.clone()));
    let gateway = http.map(|http_listener| {
        let leader = leader.clone();
        let router = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get({
                    let leader = leader.clone();
                    move || async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            leader.metrics_text(),
                        )
                    }
                }),
            )
            .route(
                "/admin/status",
                axum::routing::get(move || async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; charset=utf-8",
                        )],
                        leader.status_text(),
                    )
                }),
            );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(http_listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(err) = served.await {
                tracing::warn!(%err, "view leader HTTP server failed");
            }
        })
    });
    let ticker = {
        let leader = leader.clone();
        let shutdown = shutdown.clone();
        let tick = Duration::from_millis(options.tick_ms());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            // After a stall, one sweep (which notices the gap) rather than a burst of them.
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = interval.tick() => {
                        if leader.is_answering() {
                            let _ = leader.apply(Command::Expire);
                        }
                    }
                }
            }
        })
    };
    serve(listener, leader, shutdown).await;
    let _ = ticker.await;
    if let Some(gateway) = gateway {
        let _ = gateway.await;
    }
    Ok(())
}
