//! The private network of one chaos run: every process of the cluster (the view leader, each
//! storage server) lives in a network namespace of its own, joined by a veth pair to a bridge;
//! the chaos process itself (the client) reaches the same bridge through one more veth pair from
//! the namespace it runs in. Links are cut inside the namespaces, so nothing outside the run is
//! touched and traffic only ever goes to addresses the run created (the namespaces have no route
//! but their own subnet).
//!
//! * The bridge sits in a *hub* namespace of its own, not in the host's: a host firewall that
//!   drops forwarded bridge traffic (Docker's `FORWARD DROP` with `bridge-nf-call-iptables`)
//!   never sees the cluster's packets.
//! * The subnet `10.A.B.0/24` is drawn at random and checked unused, and every name carries the
//!   run's id and the chaos process's pid, so two runs at once do not collide.
//! * A symmetric cut is a `blackhole` route at both ends. A one-way cut ("A cannot call B") drops,
//!   in A's namespace, the packets of every connection A opened to B (conntrack's direction), so
//!   B still calls A. Over TCP a blackhole at one end alone already stops both directions, which
//!   is why the one-way cut works on connections rather than on packets.
//! * [`Drop`] deletes every namespace of the run (a veth dies with its namespace); namespaces left
//!   behind by a run that was killed outright are removed by the next run ([`remove_stale`]).
//!
//! Left out: delay, loss, reordering and bandwidth limits (netem), IPv6, several hosts.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use rand::Rng;

/// Prefix of every namespace a chaos run creates: `rlchaos-PID-RUN-ROLE`.
pub const NETNS_PREFIX: &str = "rlchaos-";
/// Subnets drawn before giving up on finding a free one.
pub const SUBNET_TRIES_MAX: usize = 32;
/// The client's (this process's) address is `.1` of the run's subnet.
pub const CLIENT_HOST: u8 = 1;
/// The view leader's address is `.2`.
pub const VIEWLEADER_HOST: u8 = 2;
/// Storage server slot `i` is at `.(SERVER_HOST_FIRST + i)`.
pub const SERVER_HOST_FIRST: u8 = 10;
/// Most nodes (view leader and servers) one run's subnet holds.
pub const NODES_MAX: usize = 200;

/// One namespace of the run and its address on the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// A cut link: the commands that made it, undone by [`Net::heal_all`].
#[derive(Clone, Debug)]
pub struct Cut {
    /// Namespace and `ip`/`iptables` arguments of each rule, as added.
    rules: Vec<Rule>,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    /// `ip route add blackhole IP/32` in a namespace.
    Blackhole { ns: String, to: Ipv4Addr },
    /// iptables rules in `ns` dropping the connections `ns` opens to `to`.
    NoCalls { ns: String, to: Ipv4Addr },
}

/// The namespaces, bridge and veths of one run.
pub struct Net {
    /// Six hex digits naming this run's objects.
    run: String,
    subnet: [u8; 2],
    hub: String,
    /// Every namespace created so far (the hub first), deleted on drop.
    namespaces: Vec<String>,
    /// Interfaces created in the chaos process's own namespace, deleted on drop.
    host_links: Vec<String>,
    nodes: usize,
    /// Cuts in force, healed by [`Net::heal_all`].
    active: Vec<Cut>,
}

impl Net {
    /// Builds the run's network, or says why it cannot (not root, no `ip netns`, ...).
    pub fn create() -> Result<Net, String> {
        if !is_root() {
            return Err("not running as root (network namespaces need CAP_NET_ADMIN)".into());
        }
        run(&["ip", "netns", "list"]).map_err(|err| format!("`ip netns` is unavailable: {err}"))?;
        remove_stale();
        let mut rng = rand::thread_rng();
        let run_id = format!("{:06x}", rng.gen_range(0..0x100_0000u32));
        let subnet = free_subnet(&mut rng)?;
        let mut net = Net {
            hub: format!("{NETNS_PREFIX}{}-{run_id}-hub", std::process::id()),
            run: run_id,
            subnet,
            namespaces: Vec::new(),
            host_links: Vec::new(),
            nodes: 0,
            active: Vec::new(),
        };
        net.build_hub()?;
        Ok(net)
    }

    fn build_hub(&mut self) -> Result<(), String> {
        let hub = self.hub.clone();
        add_namespace(&hub)?;
        self.namespaces.push(hub.clone());
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        // The client's leg: one end here, where this process runs, the other on the bridge.
        let host_if = format!("rc{}c", self.run);
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "client0", "netns", &hub,
        ])?;
        self.host_links.push(host_if.clone());
        run(&["ip", "-n", &hub, "link", "set", "client0", "master", "br0"])?;
        run(&["ip", "-n", &hub, "link", "set", "client0", "up"])?;
        let client = format!("{}/24", self.ip(CLIENT_HOST));
        run(&["ip", "addr", "add", &client, "dev", &host_if])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        Ok(())
    }

    /// The address `.host` of the run's subnet.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], host)
    }

    /// The chaos process's own address on the bridge.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.ip(CLIENT_HOST)
    }

    /// A new namespace `role` at `.host`, on the bridge.
    pub fn add_node(&mut self, role: &str, host: u8) -> Result<Node, String> {
        if self.nodes >= NODES_MAX {
            return Err(format!("a run holds at most {NODES_MAX} namespaces"));
        }
        let ns = format!("{NETNS_PREFIX}{}-{}-{role}", std::process::id(), self.run);
        add_namespace(&ns)?;
        self.namespaces.push(ns.clone());
        self.nodes += 1;
        let leg = format!("rc{}n{}", self.run, self.nodes);
        run(&[
            "ip", "link", "add", &leg, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        // Moved into the hub at once: from then on it dies with the hub.
        if let Err(err) = run(&["ip", "link", "set", &leg, "netns", &self.hub]) {
            let _ = run(&["ip", "link", "del", &leg]);
            return Err(err);
        }
        run(&["ip", "-n", &self.hub, "link", "set", &leg, "master", "br0"])?;
        run(&["ip", "-n", &self.hub, "link", "set", &leg, "up"])?;
        let ip = self.ip(host);
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(Node { ns, ip })
    }

    /// Cuts `a` and `b` apart both ways.
    pub fn cut_both_ways(
        &mut self,
        a: &Node,
        b_ip: Ipv4Addr,
        b_ns: Option<&str>,
    ) -> Result<(), String> {
        let mut rules = vec![Rule::Blackhole {
            ns: a.ns.clone(),
            to: b_ip,
        }];
        if let Some(b_ns) = b_ns {
            rules.push(Rule::Blackhole {
                ns: b_ns.to_string(),
                to: a.ip,
            });
        }
        self.apply(Cut {
            rules,
            description: format!("{} <-/-> {b_ip}", a.ip),
        })
    }

    /// Cuts `node` off from every address in `peers` (blackholes in its namespace only: over TCP
    /// that stops both directions).
    pub fn isolate(&mut self, node: &Node, peers: &[Ipv4Addr]) -> Result<(), String> {
        let rules = peers
            .iter()
            .map(|to| Rule::Blackhole {
                ns: node.ns.clone(),
                to: *to,
            })
            .collect();
        self.apply(Cut {
            rules,
            description: format!("{} isolated from {} peers", node.ip, peers.len()),
        })
    }

    /// `from` can no longer open connections to `to` (nor use those it had); `to` still reaches
    /// `from`.
    pub fn cut_one_way(&mut self, from: &Node, to: Ipv4Addr) -> Result<(), String> {
        self.apply(Cut {
            rules: vec![Rule::NoCalls {
                ns: from.ns.clone(),
                to,
            }],
            description: format!("{} -/-> {to}", from.ip),
        })
    }

    fn apply(&mut self, mut cut: Cut) -> Result<(), String> {
        // Two faults in force at once may cut the same route (two at once, the view leader
        // isolated while one of its links is cut): a route exists once, so the second fault
        // leaves it to the first, and healing deletes it once.
        cut.rules.retain(|rule| {
            !matches!(rule, Rule::Blackhole { .. })
                || !self.active.iter().any(|c| c.rules.contains(rule))
        });
        let mut added = Vec::new();
        for rule in &cut.rules {
            match rule_commands(rule, true)
                .iter()
                .try_for_each(|c| run_owned(c))
            {
                Ok(()) => added.push(rule.clone()),
                Err(err) => {
                    for rule in added {
                        undo(&rule);
                    }
                    return Err(err);
                }
            }
        }
        self.active.push(cut);
        Ok(())
    }

    /// Undoes every cut in force; returns what was healed.
    pub fn heal_all(&mut self) -> Vec<String> {
        let mut healed = Vec::new();
        for cut in self.active.drain(..) {
            for rule in &cut.rules {
                undo(rule);
            }
            healed.push(cut.description);
        }
        healed
    }

    /// Cuts in force.
    pub fn active(&self) -> usize {
        self.active.len()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Nodes first, the hub last; each veth goes with its namespace.
        for ns in self.namespaces.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        for link in &self.host_links {
            let _ = quiet(&["ip", "link", "del", link]);
        }
    }
}

fn rule_commands(rule: &Rule, add: bool) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    match rule {
        Rule::Blackhole { ns, to } => {
            let verb = if add { "add" } else { "del" };
            vec![s(&[
                "ip",
                "-n",
                ns,
                "route",
                verb,
                "blackhole",
                &format!("{to}/32"),
            ])]
        }
        Rule::NoCalls { ns, to } => {
            let verb = if add { "-A" } else { "-D" };
            let to = to.to_string();
            vec![
                s(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "iptables",
                    "-w",
                    verb,
                    "OUTPUT",
                    "-d",
                    &to,
                    "-m",
                    "conntrack",
                    "--ctdir",
                    "ORIGINAL",
                    "-j",
                    "DROP",
                ]),
                s(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "iptables",
                    "-w",
                    verb,
                    "INPUT",
                    "-s",
                    &to,
                    "-m",
                    "conntrack",
                    "--ctdir",
                    "REPLY",
                    "-j",
                    "DROP",
                ]),
            ]
        }
    }
}

fn undo(rule: &Rule) {
    for command in rule_commands(rule, false) {
        let _ = run_owned(&command);
    }
}

fn add_namespace(ns: &str) -> Result<(), String> {
    run(&["ip", "netns", "add", ns])?;
    run(&["ip", "-n", ns, "link", "set", "lo", "up"]).map(|_| ())
}

/// A `10.A.B.0/24` no address or route of this host uses.
fn free_subnet(rng: &mut impl Rng) -> Result<[u8; 2], String> {
    let used = format!(
        "{}\n{}",
        run(&["ip", "-4", "-o", "addr", "show"])?,
        run(&["ip", "-4", "route", "show", "table", "all"])?
    );
    for _ in 0..SUBNET_TRIES_MAX {
        let subnet = [rng.gen_range(200..=254u8), rng.gen_range(1..=254u8)];
        if !used.contains(&format!("10.{}.{}.", subnet[0], subnet[1])) {
            return Ok(subnet);
        }
    }
    Err(format!(
        "no free 10.x.y.0/24 subnet in {SUBNET_TRIES_MAX} tries"
    ))
}

/// Deletes the namespaces of chaos runs whose process is gone (killed before it could clean up).
pub fn remove_stale() {
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

fn is_root() -> bool {
    run(&["id", "-u"])
        .map(|uid| uid.trim() == "0")
        .unwrap_or(false)
}

fn run_owned(args: &[String]) -> Result<(), String> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs).map(|_| ())
}

/// Runs a command; its stdout, or what went wrong.
fn run(args: &[&str]) -> Result<String, String> {
    let (program, rest) = args.split_first().ok_or("empty command")?;
    let output = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("{}: {err}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs a command whose failure is expected at times (cleanup of what may be gone already).
fn quiet(args: &[&str]) -> Result<(), String> {
    run(args).map(|_| ())
}
