//! The view leader's network shell: it turns requests into [`Command`]s for the state machine,
//! stamps them with the monotonic clock of its [`Env`], runs the expiry timer, and publishes every
//! new view to the long polls (`WatchView`) that servers keep open, which is how a view change
//! reaches them at once. Its HTTP pages (`/metrics`, `/admin/status`) are served by
//! `crate::http` when whoever starts it asks for them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::durable::{self, next_generation, EPOCH_RESERVE};
use super::state::{Command, Outcome, State, StateConfig, TOKEN_COUNTER_BITS};
use super::ViewLeaderOptions;
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::metrics::Metrics;
use crate::net::{Env, Listener};
use crate::rpc::message::{ServiceKind, ViewLeaderReply, ViewLeaderRequest};
use crate::rpc::server::{serve as serve_rpc, Answer, Handler};
use crate::types::View;

/// The highest restart generation fencing tokens have room for.
pub const TOKEN_GENERATION_MAX: u64 = (1 << (64 - TOKEN_COUNTER_BITS)) - 1;

/// The longest a `WatchView` long poll is held open before it is answered with the current view.
pub const WATCH_WAIT_MS_MAX: u64 = 30_000;

/// The running view leader.
pub struct ViewLeader {
    state: Mutex<State>,
    env: Env,
    started: Instant,
    view_tx: watch::Sender<View>,
    shutdown: CancellationToken,
    /// A simulated crash answers nothing but recover, expires nobody and keeps the state.
    faults: Faults,
    pub metrics: Metrics,
    tick_ms: u64,
    /// Where the epoch ceiling is kept and its current value (none without a data directory).
    ceiling: Mutex<Option<Ceiling>>,
}

/// The durable epoch ceiling: no epoch above `epoch` may be used before it is raised on disk.
struct Ceiling {
    dir: std::path::PathBuf,
    epoch: u64,
}

/// What a view leader resumes from: its restart generation and the epochs it used before.
struct Resumed {
    generation: u64,
    epoch_floor: u64,
    ceiling: Option<Ceiling>,
}

impl Resumed {
    /// Raises the generation and reserves epochs in `options.data_dir`, before anything is
    /// served; with no data directory, starts from nothing.
    fn from_disk(options: &ViewLeaderOptions) -> Result<Self> {
        let Some(dir) = &options.data_dir else {
            info!(
                "no data directory: if this view leader restarts, its tokens and epochs start over"
            );
            return Ok(Self {
                generation: 0,
                epoch_floor: 0,
                ceiling: None,
            });
        };
        let generation = next_generation(dir, TOKEN_GENERATION_MAX)?;
        let epoch_floor = durable::epoch_floor(dir)?;
        crate::types::check_epoch(epoch_floor)?;
        let epoch = epoch_floor.saturating_add(EPOCH_RESERVE);
        durable::store_epoch_ceiling(dir, epoch)?;
        Ok(Self {
            generation,
            epoch_floor,
            ceiling: Some(Ceiling {
                dir: dir.clone(),
                epoch,
            }),
        })
    }
}

impl ViewLeader {
    fn new(
        options: &ViewLeaderOptions,
        resumed: Resumed,
        env: Env,
        shutdown: CancellationToken,
    ) -> Self {
        let config = StateConfig {
            lease_ms: options.lease_ms,
            lock_lease_ms: options.lock_lease_ms,
            stall_ms: options.stall_ms(),
        };
        let state = State::restarted(config, resumed.generation, resumed.epoch_floor);
        let (view_tx, _) = watch::channel(state.view());
        Self {
            ceiling: Mutex::new(resumed.ceiling),
            state: Mutex::new(state),
            started: env.now(),
            env,
            view_tx,
            shutdown,
            faults: Faults::default(),
            metrics: Metrics::new(),
            tick_ms: options.tick_ms(),
        }
    }

    /// Whether the view leader is in a simulated crash.
    pub fn is_crashed(&self) -> bool {
        self.faults.is_crashed()
    }

    /// Time since the view leader started.
    pub fn uptime(&self) -> Duration {
        self.env.now().duration_since(self.started)
    }

    fn now_ms(&self) -> u64 {
        self.uptime().as_millis() as u64
    }

    /// Applies a command and publishes the view if it changed.
    fn apply(&self, command: Command) -> Result<ViewLeaderReply> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Internal("view leader state poisoned".into()))?;
        let before = state.epoch();
        let newest_loss = state.losses().last().map(|loss| loss.epoch);
        let reply = state
            .apply(command, self.now_ms())
            .map(|outcome| match outcome {
                Outcome::Heartbeat(reply) => ViewLeaderReply::Heartbeat(reply),
                Outcome::View(view) => ViewLeaderReply::View(view),
                Outcome::Lock(reply) => ViewLeaderReply::Lock(reply),
                Outcome::Left { epoch } => ViewLeaderReply::Left { epoch },
            });
        self.keep_epoch_ceiling(state.epoch())?;
        let view = state.view();
        drop(state);
        if let Some(loss) = view.losses.last().filter(|l| Some(l.epoch) != newest_loss) {
            warn!(
                epoch = loss.epoch,
                lost = ?loss.lost_addrs(),
                "settled without every replica of some keys: their data may be lost"
            );
        }
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

    /// Raises the durable epoch ceiling before `epoch` (just reached) is published or answered.
    /// If it cannot be raised, the view leader stops: serving an epoch a restart could reuse
    /// would break the promise that one epoch names one view.
    fn keep_epoch_ceiling(&self, epoch: u64) -> Result<()> {
        let mut ceiling = self
            .ceiling
            .lock()
            .map_err(|_| Error::Internal("epoch ceiling poisoned".into()))?;
        let Some(ceiling) = ceiling.as_mut().filter(|c| epoch > c.epoch) else {
            return Ok(());
        };
        let raised = epoch.saturating_add(EPOCH_RESERVE);
        if let Err(err) = durable::store_epoch_ceiling(&ceiling.dir, raised) {
            tracing::error!(%err, epoch, "cannot make the epoch durable; stopping");
            self.shutdown.cancel();
            return Err(err);
        }
        ceiling.epoch = raised;
        Ok(())
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

    async fn handle(self: Arc<Self>, request: ViewLeaderRequest) -> Answer<ViewLeaderReply> {
        let ends_crash = matches!(
            request,
            ViewLeaderRequest::Crash | ViewLeaderRequest::Recover
        );
        let op = request.name();
        let work = self
            .metrics
            .observed(op, &*self.env.clock, self.clone().dispatch(request));
        self.faults.handle(ends_crash, work).await
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
                settled_epoch,
                settled_servers,
                former_ids,
            } => self.apply(Command::Heartbeat {
                server_id,
                addr,
                epoch_seen,
                rebalanced_epoch,
                settled_epoch,
                settled_servers,
                former_ids,
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
                self.faults.crash();
                Ok(ViewLeaderReply::Crashed(true))
            }
            ViewLeaderRequest::Recover => {
                // The expiry timer stood still meanwhile; its next sweep sees the gap as our own
                // stall and gives every server a full lease.
                self.faults.recover();
                Ok(ViewLeaderReply::Crashed(false))
            }
        }
    }
}

/// Runs a view leader on `listener` until `shutdown` fires.
pub async fn run(
    listener: Box<dyn Listener>,
    options: ViewLeaderOptions,
    env: Env,
    shutdown: CancellationToken,
) -> Result<()> {
    let leader = start(options, env, shutdown.clone())?;
    serve(leader, listener, shutdown).await
}

/// A view leader, built and ready to [`serve`]: whoever starts it can wire its HTTP pages first.
pub fn start(
    options: ViewLeaderOptions,
    env: Env,
    shutdown: CancellationToken,
) -> Result<Arc<ViewLeader>> {
    options.validate()?;
    let resumed = Resumed::from_disk(&options)?;
    info!(
        generation = resumed.generation,
        epoch = resumed.epoch_floor,
        "view leader starting"
    );
    Ok(Arc::new(ViewLeader::new(&options, resumed, env, shutdown)))
}

/// Serves `leader` on `listener` and runs its expiry timer until `shutdown` fires.
pub async fn serve(
    leader: Arc<ViewLeader>,
    listener: Box<dyn Listener>,
    shutdown: CancellationToken,
) -> Result<()> {
    let ticker = {
        let leader = leader.clone();
        let shutdown = shutdown.clone();
        let tick = Duration::from_millis(leader.tick_ms);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            // After a stall, one sweep (which notices the gap) rather than a burst of them.
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = interval.tick() => {
                        if !leader.is_crashed() {
                            let _ = leader.apply(Command::Expire);
                        }
                    }
                }
            }
        })
    };
    serve_rpc(listener, leader.env.cluster.clone(), leader, shutdown).await;
    let _ = ticker.await;
    Ok(())
}
