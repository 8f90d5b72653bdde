//! Connection admission: which connections a listener keeps when too many arrive.
//!
//! Each accept loop (the RPC port, the HTTP gateway) owns one [`Admission`] table with a global
//! cap and a cap per remote address (the host part of the peer string a
//! [`Listener`](super::Listener) returns: IPv4, IPv6 or a name). A newcomer never waits for a
//! slot: when a cap is reached, the oldest *idle* connection (of the newcomer's address for the
//! per-address cap, of anyone for the global cap) is shed by firing its cancellation token, and
//! the newcomer takes its place. Only when every candidate has a request in flight is the
//! newcomer refused, and the caller closes it at once. So a flood of idle sockets costs the
//! flooder its own oldest sockets first, and cannot lock out a member that comes back.
//!
//! A connection is idle while it has no request in flight; it records when it was last active.
//! Shedding picks by [`Class`] first and age second: connections that have not finished their
//! hello go first, then other idle connections, and connections marked as cluster members
//! ([`Ticket::mark_member`]) last.
//!
//! The table holds no sockets and does no I/O: the connection's task watches its token and
//! closes itself. Time is tokio's clock, so the unit tests run under paused time.
//!
//! # Deliberately left out
//! * Rate limits (connections per second per address): a flooder that reconnects as fast as it
//!   is shed keeps costing accepts and hellos; caps bound what it holds, not what it spends.
//! * Grouping IPv6 peers by prefix (/64): each address is its own, so a flooder holding a whole
//!   prefix spreads across it like one with many IPv4 addresses (see docs/security.md).
//! * Timeouts: each connection's task enforces its own idle and handshake timeouts, reading
//!   [`Ticket::idle_since`].

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How far shedding prefers one connection over another: lower classes are shed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Class {
    /// Has not finished its hello (RPC) or sent its first request head (HTTP).
    Hello = 0,
    /// Past the hello: a client, or a member that has not been recognised as one.
    Caller = 1,
    /// An authenticated member of the cluster: shed only when nothing else is idle.
    Member = 2,
}

impl Class {
    fn from_u8(class: u8) -> Self {
        match class {
            0 => Class::Hello,
            1 => Class::Caller,
            _ => Class::Member,
        }
    }
}

/// The caps of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Connections held at once (shed ones not counted).
    pub connections_max: usize,
    /// Connections held at once from one remote address.
    pub per_address_max: usize,
    /// Shed connections still closing, on top of `connections_max`: a bound on the sockets held
    /// while shed tasks wind down, reached only if they stop making progress.
    pub closing_max: usize,
    /// A connection still in its hello after this long is shed before any other; a younger one
    /// counts as a caller just admitted (shed after every older idle connection), so that a
    /// flood of connections that finish their hello at once cannot shed every newcomer while it
    /// is still saying hello.
    pub hello_grace: Duration,
}

/// Which cap refused a newcomer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every connection of this address has a request in flight.
    PerAddress { host: String, cap: usize },
    /// Every connection has a request in flight.
    Global { cap: usize },
    /// Too many shed connections are still closing.
    Closing { cap: usize },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::PerAddress { host, cap } => write!(
                f,
                "all {cap} connections from {host} are busy with requests; try again later"
            ),
            Refused::Global { cap } => write!(
                f,
                "all {cap} connection slots are busy with requests; try again later"
            ),
            Refused::Closing { cap } => write!(
                f,
                "{cap} shed connections are still closing; try again later"
            ),
        }
    }
}

/// What the table says about itself (for logs and the flood test's figures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections admitted and not shed.
    pub held: usize,
    /// Shed connections whose task has not ended yet.
    pub closing: usize,
    /// Connections shed since the table was made.
    pub shed_total: u64,
    /// Newcomers refused since the table was made.
    pub refused_total: u64,
}

/// One connection's state, shared by its [`Ticket`] (updated without the table's lock on the
/// hot path) and the table (read under the lock when choosing whom to shed).
struct Entry {
    host: Arc<str>,
    class: AtomicU8,
    /// Requests in flight.
    in_flight: AtomicU64,
    /// Nanoseconds from the table's epoch to the last activity.
    last_active_ns: AtomicU64,
    shed: AtomicBool,
    token: CancellationToken,
}

struct Table {
    next_id: u64,
    entries: HashMap<u64, Arc<Entry>>,
    shed_total: u64,
    refused_total: u64,
}

/// The admission table of one listener. Cheap to clone; every clone is the same table.
#[derive(Clone)]
pub struct Admission {
    caps: Caps,
    epoch: Instant,
    table: Arc<Mutex<Table>>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Admission {{ {:?}, {:?} }}", self.caps, self.stats())
    }
}

impl Admission {
    pub fn new(caps: Caps) -> Self {
        Self {
            caps,
            epoch: Instant::now(),
            table: Arc::new(Mutex::new(Table {
                next_id: 0,
                entries: HashMap::new(),
                shed_total: 0,
                refused_total: 0,
            })),
        }
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Admits a connection from `peer` (as `Listener::accept` names it), whose task stops when
    /// `token` fires; sheds an idle connection if a cap is reached. `Err`: close the newcomer.
    pub fn admit(&self, peer: &str, token: CancellationToken) -> Result<Ticket, Refused> {
        let host: Arc<str> = Arc::from(host_of(peer));
        let mut table = self.lock();
        let closing = table.entries.values().filter(|e| is_shed(e)).count();
        if closing >= self.caps.closing_max {
            table.refused_total += 1;
            return Err(Refused::Closing {
                cap: self.caps.closing_max,
            });
        }
        let from_host = table
            .entries
            .values()
            .filter(|e| !is_shed(e) && e.host == host)
            .count();
        if from_host >= self.caps.per_address_max
            && !table.shed_one(Some(&host), self.hello_grace_ns())
        {
            table.refused_total += 1;
            return Err(Refused::PerAddress {
                host: host.to_string(),
                cap: self.caps.per_address_max,
            });
        }
        let held = table.entries.values().filter(|e| !is_shed(e)).count();
        if held >= self.caps.connections_max && !table.shed_one(None, self.hello_grace_ns()) {
            table.refused_total += 1;
            return Err(Refused::Global {
                cap: self.caps.connections_max,
            });
        }
        let entry = Arc::new(Entry {
            host,
            class: AtomicU8::new(Class::Hello as u8),
            in_flight: AtomicU64::new(0),
            last_active_ns: AtomicU64::new(self.elapsed_ns()),
            shed: AtomicBool::new(false),
            token: token.clone(),
        });
        let id = table.next_id;
        table.next_id += 1;
        table.entries.insert(id, entry.clone());
        Ok(Ticket {
            admission: self.clone(),
            id,
            entry,
        })
    }

    pub fn stats(&self) -> Stats {
        let table = self.lock();
        let closing = table.entries.values().filter(|e| is_shed(e)).count();
        Stats {
            held: table.entries.len() - closing,
            closing,
            shed_total: table.shed_total,
            refused_total: table.refused_total,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding the lock; if something did, the table is still whole.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The time before which a connection still in its hello has overstayed: (now - grace)
    /// in the table's nanoseconds.
    fn hello_grace_ns(&self) -> u64 {
        let grace = u64::try_from(self.caps.hello_grace.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_ns().saturating_sub(grace)
    }

    fn elapsed_ns(&self) -> u64 {
        elapsed_ns_since(self.epoch)
    }

    fn instant_of(&self, ns: u64) -> Instant {
        self.epoch + std::time::Duration::from_nanos(ns)
    }
}

fn elapsed_ns_since(epoch: Instant) -> u64 {
    let ns = Instant::now().saturating_duration_since(epoch).as_nanos();
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn is_shed(entry: &Entry) -> bool {
    entry.shed.load(Ordering::Acquire)
}

impl Table {
    /// Sheds the idle connection to go first (of `host`, or of anyone): lowest class, then
    /// oldest activity, then oldest admission; a connection admitted after `overstayed_ns`
    /// and still in its hello counts as a caller. `false` if none is idle.
    fn shed_one(&mut self, host: Option<&Arc<str>>, overstayed_ns: u64) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| !is_shed(e) && e.in_flight.load(Ordering::Acquire) == 0)
            .filter(|(_, e)| host.is_none_or(|h| e.host == *h))
            .min_by_key(|(id, e)| {
                let last_active = e.last_active_ns.load(Ordering::Acquire);
                let mut class = e.class.load(Ordering::Acquire);
                if class == Class::Hello as u8 && last_active > overstayed_ns {
                    class = Class::Caller as u8;
                }
                (class, last_active, **id)
            })
            .map(|(_, e)| e.clone());
        let Some(victim) = victim else {
            return false;
        };
        victim.shed.store(true, Ordering::Release);
        victim.token.cancel();
        self.shed_total += 1;
        tracing::debug!(host = %victim.host, "shed an idle connection to admit a new one");
        true
    }
}

/// One admitted connection's place in the table; dropping it frees the place.
pub struct Ticket {
    admission: Admission,
    id: u64,
    entry: Arc<Entry>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Ticket {{ host: {}, class: {:?}, shed: {} }}",
            self.entry.host,
            self.class(),
            self.was_shed()
        )
    }
}

impl Ticket {
    /// Fires when the connection is shed (or when the token it was admitted with fires).
    pub fn token(&self) -> &CancellationToken {
        &self.entry.token
    }

    /// The host part of the peer's address: what the per-address cap counts.
    pub fn host(&self) -> &str {
        &self.entry.host
    }

    pub fn class(&self) -> Class {
        Class::from_u8(self.entry.class.load(Ordering::Acquire))
    }

    /// The hello is done: the connection is shed after those still in theirs. A member stays
    /// a member.
    pub fn hello_done(&self) {
        let _ = self.entry.class.compare_exchange(
            Class::Hello as u8,
            Class::Caller as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.touch();
    }

    /// The peer authenticated as a member of the cluster: shed last.
    pub fn mark_member(&self) {
        self.entry
            .class
            .store(Class::Member as u8, Ordering::Release);
        self.touch();
    }

    /// Whether the table shed this connection to make room for another.
    pub fn was_shed(&self) -> bool {
        is_shed(&self.entry)
    }

    /// A request starts; the connection is busy (never shed, never idle) until the guard drops.
    pub fn start_request(&self) -> InFlight {
        self.entry.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            epoch: self.admission.epoch,
            entry: self.entry.clone(),
        }
    }

    /// Records activity that is not a request (a later hello, say).
    pub fn touch(&self) {
        self.entry
            .last_active_ns
            .store(self.admission.elapsed_ns(), Ordering::Release);
    }

    /// How long the connection has been idle; `None` while a request is in flight.
    pub fn idle_for(&self) -> Option<Duration> {
        let since = self.idle_since()?;
        Some(Instant::now().saturating_duration_since(since))
    }

    /// Since when the connection has been idle; `None` while a request is in flight.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.entry.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ns = self.entry.last_active_ns.load(Ordering::Acquire);
        Some(self.admission.instant_of(ns))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.lock().entries.remove(&self.id);
    }
}

/// A request in flight on a connection; see [`Ticket::start_request`].
/// Holds the connection's own entry, not the table: a request touches nothing other
/// connections share.
pub struct InFlight {
    epoch: Instant,
    entry: Arc<Entry>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.entry
            .last_active_ns
            .store(elapsed_ns_since(self.epoch), Ordering::Release);
        self.entry.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The host part of a peer address: `1.2.3.4:5` → `1.2.3.4`, `[::1]:5` → `::1`, `name:5` →
/// `name`; an IPv4 address mapped into IPv6 counts as the IPv4 one. Anything else is taken
/// whole.
pub fn host_of(peer: &str) -> String {
    if let Ok(addr) = peer.parse::<SocketAddr>() {
        return canonical(addr.ip());
    }
    if let Ok(ip) = peer.parse::<IpAddr>() {
        return canonical(ip);
    }
    match peer.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => {
            host.to_string()
        }
        _ => peer.to_string(),
    }
}

fn canonical(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        connections_max: 4,
        per_address_max: 2,
        closing_max: 8,
        hello_grace: Duration::ZERO,
    };

    fn admit(admission: &Admission, peer: &str) -> Ticket {
        admission
            .admit(peer, CancellationToken::new())
            .unwrap_or_else(|refused| panic!("{peer} refused: {refused}"))
    }

    async fn later() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    #[test]
    fn the_host_of_a_peer_is_its_address_without_the_port() {
        assert_eq!(host_of("1.2.3.4:5"), "1.2.3.4");
        assert_eq!(host_of("[::1]:5"), "::1");
        assert_eq!(host_of("[::ffff:1.2.3.4]:5"), "1.2.3.4");
        assert_eq!(host_of("node-3:38000"), "node-3");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("1.2.3.4"), "1.2.3.4");
        assert_eq!(host_of("name"), "name");
        assert_eq!(host_of("a:b:c"), "a:b:c");
    }

    #[tokio::test(start_paused = true)]
    async fn the_per_address_cap_sheds_the_oldest_idle_connection_of_that_address() {
        let admission = Admission::new(CAPS);
        let other = admit(&admission, "10.0.0.9:1");
        later().await;
        let first = admit(&admission, "10.0.0.1:1");
        later().await;
        let second = admit(&admission, "10.0.0.1:2");
        later().await;
        let third = admit(&admission, "10.0.0.1:3");
        assert!(first.was_shed() && first.token().is_cancelled());
        assert!(!second.was_shed() && !third.was_shed());
        assert!(
            !other.was_shed(),
            "an older connection of another address was shed"
        );
        let stats = admission.stats();
        assert_eq!((stats.held, stats.closing, stats.shed_total), (3, 1, 1));
        drop(first);
        assert_eq!(admission.stats().closing, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_cap_sheds_the_oldest_idle_connection_of_anyone() {
        let admission = Admission::new(CAPS);
        let mut tickets = Vec::new();
        for n in 1..=4 {
            tickets.push(admit(&admission, &format!("10.0.0.{n}:1")));
            later().await;
        }
        // The oldest has been active since: the next oldest goes.
        drop(tickets[0].start_request());
        let newcomer = admit(&admission, "10.0.0.5:1");
        let shed: Vec<bool> = tickets.iter().map(Ticket::was_shed).collect();
        assert_eq!(shed, [false, true, false, false]);
        assert!(!newcomer.was_shed());
        assert_eq!(admission.stats().held, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_takes_connections_in_their_hello_first_and_members_last() {
        let admission = Admission::new(Caps {
            connections_max: 3,
            per_address_max: 3,
            closing_max: 8,
            hello_grace: Duration::ZERO,
        });
        let member = admit(&admission, "10.0.0.1:1");
        member.mark_member();
        later().await;
        let caller = admit(&admission, "10.0.0.2:1");
        caller.hello_done();
        later().await;
        let greeting = admit(&admission, "10.0.0.3:1");
        assert_eq!(
            (member.class(), caller.class(), greeting.class()),
            (Class::Member, Class::Caller, Class::Hello)
        );

        // The youngest, but still in its hello.
        let a = admit(&admission, "10.0.0.4:1");
        assert!(greeting.was_shed() && !caller.was_shed() && !member.was_shed());
        a.hello_done();
        later().await;
        // Then the oldest idle caller, though the member is older still.
        let b = admit(&admission, "10.0.0.5:1");
        assert!(caller.was_shed() && !member.was_shed());
        b.hello_done();
        later().await;
        // Then callers younger than the member.
        let c = admit(&admission, "10.0.0.6:1");
        assert!(a.was_shed() && !member.was_shed());
        c.hello_done();
        // A member's hello being done does not demote it.
        member.hello_done();
        assert_eq!(member.class(), Class::Member);
        // Only members and busy callers left: the member goes.
        let _b_busy = b.start_request();
        let _c_busy = c.start_request();
        let _d = admit(&admission, "10.0.0.7:1");
        assert!(member.was_shed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_a_request_in_flight_is_never_shed_and_the_newcomer_is_refused() {
        let admission = Admission::new(CAPS);
        let first = admit(&admission, "10.0.0.1:1");
        let second = admit(&admission, "10.0.0.1:2");
        let busy_first = first.start_request();
        let _busy_second = second.start_request();
        let refused = admission
            .admit("10.0.0.1:3", CancellationToken::new())
            .unwrap_err();
        assert!(
            matches!(refused, Refused::PerAddress { cap: 2, .. }),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("10.0.0.1"), "{refused}");
        assert!(!first.was_shed() && !second.was_shed());
        assert_eq!(admission.stats().refused_total, 1);

        // Once the request ends the connection is idle again, and goes.
        drop(busy_first);
        let _third = admit(&admission, "10.0.0.1:3");
        assert!(first.was_shed() && !second.was_shed());

        // Globally: every connection busy, a newcomer from elsewhere is refused.
        let others: Vec<Ticket> = (2..=3)
            .map(|n| admit(&admission, &format!("10.0.0.{n}:1")))
            .collect();
        let _busy: Vec<InFlight> = others.iter().map(Ticket::start_request).collect();
        let _busy_third = _third.start_request();
        let refused = admission
            .admit("10.0.0.9:1", CancellationToken::new())
            .unwrap_err();
        assert_eq!(refused, Refused::Global { cap: 4 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_records_when_it_was_last_active() {
        let admission = Admission::new(CAPS);
        let ticket = admit(&admission, "10.0.0.1:1");
        let admitted = Instant::now();
        assert_eq!(ticket.idle_since(), Some(admitted));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(ticket.idle_for(), Some(Duration::from_secs(5)));
        let busy = ticket.start_request();
        assert_eq!(ticket.idle_since(), None, "busy, not idle");
        assert_eq!(ticket.idle_for(), None);
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(busy);
        assert_eq!(
            ticket.idle_since(),
            Some(admitted + Duration::from_secs(10))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(ticket.idle_for(), Some(Duration::from_secs(1)));
        ticket.touch();
        assert_eq!(
            ticket.idle_since(),
            Some(admitted + Duration::from_secs(11))
        );
        assert_eq!(ticket.idle_for(), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn shed_connections_still_closing_are_bounded() {
        let admission = Admission::new(Caps {
            connections_max: 1,
            per_address_max: 1,
            closing_max: 2,
            hello_grace: Duration::ZERO,
        });
        let mut kept = Vec::new();
        for n in 0..3 {
            kept.push(admit(&admission, &format!("10.0.0.1:{n}")));
        }
        assert_eq!(admission.stats().closing, 2);
        let refused = admission
            .admit("10.0.0.2:1", CancellationToken::new())
            .unwrap_err();
        assert_eq!(refused, Refused::Closing { cap: 2 });
        // One shed task ends: room again.
        kept.remove(0);
        let _next = admit(&admission, "10.0.0.2:1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_ticket_frees_its_place() {
        let admission = Admission::new(CAPS);
        let first = admit(&admission, "10.0.0.1:1");
        let second = admit(&admission, "10.0.0.1:2");
        drop(first);
        let _third = admit(&admission, "10.0.0.1:3");
        assert!(!second.was_shed());
        assert_eq!(admission.stats().shed_total, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_connection_in_its_hello_is_not_shed_before_older_idle_ones() {
        let admission = Admission::new(Caps {
            hello_grace: Duration::from_secs(2),
            ..CAPS
        });
        let mut old = Vec::new();
        for n in 1..=3 {
            let ticket = admit(&admission, &format!("10.0.0.{n}:1"));
            ticket.hello_done();
            old.push(ticket);
            later().await;
        }
        let fresh = admit(&admission, "10.0.0.4:1");
        later().await;
        // A flood connection that finished its hello at once: the oldest idle goes, not the
        // newcomer still saying hello.
        let flood = admit(&admission, "10.0.0.5:1");
        flood.hello_done();
        assert!(old[0].was_shed() && !fresh.was_shed());
        // Past its grace, a connection still in its hello goes before anything else.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _next = admit(&admission, "10.0.0.6:1");
        assert!(fresh.was_shed() && !old[1].was_shed());
    }
}
