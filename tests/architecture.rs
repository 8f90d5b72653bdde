//! The module layout of ringleader, held as a test.
//!
//! The layout is a map drawn from the design, and this test keeps the code on the map:
//!
//! * The protocols are state machines without sockets or clocks: the ring allocator, the domain
//!   types, two-phase commit and the view leader's state take time and randomness as inputs, so
//!   they run unchanged under simulated time and a simulated network. They name no wire
//!   (`crate::rpc`), no transport (`crate::net`, `tokio::net`), no timer and no task spawner.
//! * `src/net.rs` is the seam: the one place that opens sockets, reads the clock and draws random
//!   ids. A simulation replaces the seam and nothing else. Only the seam, the tools and test code
//!   may call `Instant::now`, `SystemTime::now`, `Uuid::new_v4`, `thread_rng`, `rand::random` or
//!   touch `tokio::net`.
//! * Parts depend one way: transport knows no protocol, an engine knows no protocol, the view
//!   leader neither stores keys nor coordinates, the binary (not the node) wires HTTP in, the
//!   store never depends on its tools (checker, load generator, chaos, demo, in-process cluster,
//!   simulation) nor on its command line, and the library never depends on a binary.
//! * No two modules import each other, directly or around a loop, so each can be read, tested and
//!   moved on its own.
//!
//! The parts, by path under `src/`: Bins `bin/`, Cli `cli/`, Tools `tools/`, Http `http/`,
//! Client `client/`, Server `server/`, ViewLeader `viewleader/`, TwoPC `twopc/`, Storage
//! `storage/`, Ring `ring.rs`, Faults `faults.rs`, Rpc `rpc/` and `net.rs`, Types `types.rs`,
//! Base `error.rs` and `lib.rs`; anything else is "Other". A part that does not exist yet simply
//! has no files.
//!
//! How it works: a small scanner reads every `.rs` file under `src/`, blanks comments, string and
//! character literals and test code (files named `tests.rs`, files under a `tests/` folder, and
//! any item marked `#[cfg(test)]`), then collects the paths the code names: every leaf of every
//! `use` tree, and every path expression rooted at `crate`, `super`, `self` or (in `src/bin/`)
//! `ringleader`. A path names the LONGEST prefix of itself that is an existing module file
//! (`crate::server::mover::plan` names `src/server/mover.rs`, `crate::server::ServerOptions`
//! names `src/server/mod.rs`). A module naming one of its own descendants is not a dependency: a
//! parent declares and re-exports its children.
//!
//! It is a text scanner, not a compiler: paths produced inside macros, or reached through a
//! glob import or a re-export, are seen only as written. Every rule runs the same functions over
//! small in-memory trees with a planted violation (`mod self_tests`), so the scanner cannot go
//! blind without a test saying so.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// The map
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Bins,
    Cli,
    Tools,
    Http,
    Client,
    Server,
    ViewLeader,
    TwoPC,
    Storage,
    Ring,
    Faults,
    Rpc,
    Types,
    Base,
    Other,
}

use Part::*;

/// The part a file (`src/...`) belongs to. `src/x.rs` and `src/x/...` belong to the same part.
fn part_of(file: &str) -> Part {
    let rest = file.strip_prefix("src/").unwrap_or(file);
    let top = match rest.split_once('/') {
        Some((dir, _)) => dir,
        None => rest.strip_suffix(".rs").unwrap_or(rest),
    };
    match top {
        "bin" | "main" => Bins,
        "cli" => Cli,
        "tools" => Tools,
        "http" => Http,
        "client" => Client,
        "server" => Server,
        "viewleader" => ViewLeader,
        "twopc" => TwoPC,
        "storage" => Storage,
        "ring" => Ring,
        "faults" => Faults,
        "rpc" | "net" => Rpc,
        "types" => Types,
        "error" | "lib" => Base,
        _ => Other,
    }
}

/// Arrows between parts that must never exist, with the design's reason. The arrows into Tools
/// and Cli are held separately by [`store_to_tools_arrows`].
const NEVER: &[(Part, Part, &str)] = &[
    (Ring, Rpc, "the allocator is a pure function"),
    (Types, Rpc, "the domain does not know the wire"),
    (TwoPC, Rpc, "2PC is a state machine without sockets"),
    (TwoPC, Server, "2PC is a state machine without sockets"),
    (TwoPC, Client, "2PC is a state machine without sockets"),
    (Storage, Rpc, "an engine knows no protocol"),
    (Storage, Server, "an engine knows no protocol"),
    (Storage, TwoPC, "an engine knows no protocol"),
    (Server, Http, "the binary wires HTTP to the node"),
    (
        ViewLeader,
        Server,
        "the view leader stores nothing key-specific",
    ),
    (
        ViewLeader,
        Client,
        "the view leader serves, it does not coordinate",
    ),
    (Rpc, Server, "transport knows no protocol"),
    (Rpc, Client, "transport knows no protocol"),
    (Rpc, ViewLeader, "transport knows no protocol"),
    (Rpc, TwoPC, "transport knows no protocol"),
    (Base, Bins, "the library never depends on a binary"),
    (Server, Bins, "the library never depends on a binary"),
    (Client, Bins, "the library never depends on a binary"),
    (Tools, Bins, "the library never depends on a binary"),
];

/// The parts of the store proper: none of them may import the tools or the command line.
const STORE: &[Part] = &[
    TwoPC, Storage, Types, Ring, Faults, Rpc, Server, Client, ViewLeader, Http, Base, Other,
];

const STORE_REASON: &str = "the store never depends on its tools or its command line \
     (checker, load generator, chaos, demo, in-process cluster, simulation live in src/tools/)";

fn store_to_tools_arrows() -> Vec<(Part, Part, &'static str)> {
    STORE
        .iter()
        .flat_map(|&from| [(from, Tools, STORE_REASON), (from, Cli, STORE_REASON)])
        .collect()
}

/// The pure cores: a path ending in `/` is a folder, anything else one file. A core that becomes
/// a folder (`src/ring/`) stays a core.
const PURE_CORES: &[&str] = &[
    "src/ring.rs",
    "src/ring/",
    "src/types.rs",
    "src/types/",
    "src/twopc/",
    "src/viewleader/state.rs",
    "src/viewleader/state/",
];

const WIRE_SOCKET_OR_TIMER: &[&str] = &[
    "crate::rpc",
    "crate::net",
    "tokio::net",
    "std::net::Tcp",
    "tokio::time",
    "std::time::Instant",
    "SystemTime",
    "tokio::spawn",
];

const PURE_CORE_REASON: &str = "a pure core (ring, types, 2PC, view-leader state) is a state \
     machine without wire, sockets or timers, so it runs under simulated time; take time and ids \
     as inputs and let the shell (service, rpc, net) do the I/O";

/// The seam and the tools: the only places outside test code that may read the clock, open
/// sockets or draw random ids.
const SEAM: &[&str] = &["src/net.rs", "src/net/", "src/tools/"];

const CLOCKS_SOCKETS_RANDOM_IDS: &[&str] = &[
    "tokio::net",
    "Instant::now",
    "SystemTime::now",
    "Uuid::new_v4",
    "thread_rng",
    "rand::random",
];

const SEAM_REASON: &str = "clocks, sockets and random ids come only through the seam \
     (src/net.rs) or the tools, so a simulation can replace them in one place; pass the time or \
     the id in, or add a function to src/net.rs";

fn in_any(file: &str, places: &[&str]) -> bool {
    places.iter().any(|place| {
        if place.ends_with('/') {
            file.starts_with(place)
        } else {
            file == *place
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The rules: each takes a tree (path under the crate root → source) and returns its violations.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    text: String,
    reason: String,
}

const CYCLE_REASON: &str = "modules that import each other cannot be read, tested or moved \
     apart; move the shared piece down (into types or a new leaf module) or pass it in";

/// Rule 1: every import cycle between modules, each as the list of its files (shortest cycles
/// through every edge that lies on a cycle), with the line that makes each hop.
fn import_cycles(files: &BTreeMap<String, String>) -> Vec<Violation> {
    let krate = Crate::load(files);
    let edges = krate.dependencies();
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut evidence: BTreeMap<(&str, &str), &Edge> = BTreeMap::new();
    for edge in &edges {
        graph.entry(edge.from).or_default().insert(edge.to);
        evidence.entry((edge.from, edge.to)).or_insert(edge);
    }

    let mut cycles: BTreeSet<Vec<&str>> = BTreeSet::new();
    for (&from, tos) in &graph {
        for &to in tos {
            if let Some(back) = shortest_path(&graph, to, from) {
                // from → to → … → from, rotated to start at its smallest file.
                let mut cycle = vec![from];
                cycle.extend(&back[..back.len() - 1]);
                let start = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                cycle.rotate_left(start);
                cycles.insert(cycle);
            }
        }
    }

    cycles
        .into_iter()
        .map(|cycle| {
            let mut text = cycle.join(" → ");
            text.push_str(" → ");
            text.push_str(cycle[0]);
            let hops: Vec<&Edge> = (0..cycle.len())
                .map(|i| evidence[&(cycle[i], cycle[(i + 1) % cycle.len()])])
                .collect();
            for hop in &hops {
                text.push_str(&format!(
                    "\n        {}:{} names `{}`",
                    hop.from, hop.line, hop.written
                ));
            }
            Violation {
                file: cycle[0].to_string(),
                line: hops[0].line,
                text,
                reason: CYCLE_REASON.to_string(),
            }
        })
        .collect()
}

/// BFS: the files on a shortest path from `from` to `to`, both included.
fn shortest_path<'a>(
    graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    from: &'a str,
    to: &'a str,
) -> Option<Vec<&'a str>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut path = vec![to];
            let mut at = to;
            while at != from {
                at = came_from[at];
                path.push(at);
            }
            path.reverse();
            return Some(path);
        }
        for &next in graph.get(at).into_iter().flatten() {
            if seen.insert(next) {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Rule 2: the pure cores name no wire, transport, socket or timer.
fn pure_core_violations(files: &BTreeMap<String, String>) -> Vec<Violation> {
    Crate::load(files).mentions(
        |file| in_any(file, PURE_CORES),
        WIRE_SOCKET_OR_TIMER,
        PURE_CORE_REASON,
    )
}

/// Rule 3: clocks, sockets and random ids only in the seam, the tools and test code.
fn seam_violations(files: &BTreeMap<String, String>) -> Vec<Violation> {
    Crate::load(files).mentions(
        |file| !in_any(file, SEAM),
        CLOCKS_SOCKETS_RANDOM_IDS,
        SEAM_REASON,
    )
}

/// Rule 4: no file of part P names a file of part Q for a forbidden arrow P → Q.
fn arrow_violations(
    files: &BTreeMap<String, String>,
    forbidden: &[(Part, Part, &str)],
) -> Vec<Violation> {
    let krate = Crate::load(files);
    let mut found = BTreeSet::new();
    for edge in krate.dependencies() {
        let (from, to) = (part_of(edge.from), part_of(edge.to));
        if let Some((_, _, why)) = forbidden.iter().find(|(p, q, _)| (*p, *q) == (from, to)) {
            found.insert(Violation {
                file: edge.from.to_string(),
                line: edge.line,
                text: format!("{from:?} → {to:?}: names `{}` ({})", edge.written, edge.to),
                reason: format!("{from:?} must never depend on {to:?}: {why}"),
            });
        }
    }
    found.into_iter().collect()
}

fn forbidden_arrow_violations(files: &BTreeMap<String, String>) -> Vec<Violation> {
    arrow_violations(files, NEVER)
}

fn store_tools_violations(files: &BTreeMap<String, String>) -> Vec<Violation> {
    arrow_violations(files, &store_to_tools_arrows())
}

/// Fails with every violation (file:line, the offending text), grouped under its reason.
fn assert_holds(rule: &str, violations: Vec<Violation>) {
    if violations.is_empty() {
        return;
    }
    let mut by_reason: BTreeMap<&str, Vec<&Violation>> = BTreeMap::new();
    for violation in &violations {
        by_reason
            .entry(&violation.reason)
            .or_default()
            .push(violation);
    }
    let mut message = format!("{rule}: {} violation(s)\n", violations.len());
    for (reason, group) in by_reason {
        message.push_str(&format!("\n  why: {reason}\n"));
        for v in group {
            message.push_str(&format!("    {}:{}: {}\n", v.file, v.line, v.text));
        }
    }
    panic!("{message}");
}

// ---------------------------------------------------------------------------------------------
// The real tree
// ---------------------------------------------------------------------------------------------

/// Every `.rs` file under `CARGO_MANIFEST_DIR/src`, keyed by its path (`src/...`, `/`-separated).
fn real_tree() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = BTreeMap::new();
    read_rust_files(root, &root.join("src"), &mut files);
    files
}

fn read_rust_files(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|err| panic!("cannot read {dir:?}: {err}"));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            read_rust_files(root, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let key = path
                .strip_prefix(root)
                .expect("under the crate root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let source = fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("cannot read {path:?}: {err}"));
            files.insert(key, source);
        }
    }
}

#[test]
fn no_import_cycle_between_modules() {
    assert_holds(
        "no import cycle between modules",
        import_cycles(&real_tree()),
    );
}

#[test]
fn pure_cores_import_no_wire_socket_or_timer() {
    assert_holds(
        "pure cores import no wire, socket or timer",
        pure_core_violations(&real_tree()),
    );
}

#[test]
fn clocks_sockets_and_random_ids_only_through_the_seam() {
    assert_holds(
        "clocks, sockets and random ids only through the seam",
        seam_violations(&real_tree()),
    );
}

#[test]
fn no_forbidden_arrow_between_parts() {
    assert_holds(
        "no forbidden arrow between parts",
        forbidden_arrow_violations(&real_tree()),
    );
}

#[test]
fn store_never_imports_its_tools() {
    assert_holds(
        "the store never imports its tools or its command line",
        store_tools_violations(&real_tree()),
    );
}

/// The scanner sees the real crate: if it read nothing, every rule above would pass vacuously.
#[test]
fn the_scanner_reads_the_real_tree() {
    let files = real_tree();
    assert!(files.contains_key("src/lib.rs"), "src/lib.rs not found");
    assert!(files.len() > 10, "only {} files under src/", files.len());
    let krate = Crate::load(&files);
    let edges = krate.dependencies();
    assert!(
        edges.len() > 20,
        "only {} dependencies between modules found",
        edges.len()
    );
    assert!(
        edges.iter().any(|e| e.from.starts_with("src/bin/")),
        "no dependency from a binary found"
    );
}

// ---------------------------------------------------------------------------------------------
// The scanner
// ---------------------------------------------------------------------------------------------

/// One source file, ready to scan.
struct Module<'a> {
    file: &'a str,
    /// The module path inside the library (`[]` for `src/lib.rs`); `None` for a binary.
    path: Option<Vec<String>>,
    /// The code with comments, literals and test code blanked; lines stay where they were.
    code: String,
    original: &'a str,
}

/// A path the code names.
struct Reference {
    line: usize,
    /// As written, with `use` groups expanded (`crate::rpc::message::View`).
    written: String,
    /// The path from the library root, when it names the library (`["rpc", "message", "View"]`).
    library: Option<Vec<String>>,
}

impl Reference {
    /// The path as the rules match it: from `crate` when it names the library.
    fn rendered(&self) -> String {
        match &self.library {
            Some(path) if path.is_empty() => "crate".to_string(),
            Some(path) => format!("crate::{}", path.join("::")),
            None => self.written.clone(),
        }
    }
}

/// "File `from`, at `line`, names `written`, which lives in file `to`."
struct Edge<'a> {
    from: &'a str,
    to: &'a str,
    line: usize,
    written: String,
}

struct Crate<'a> {
    modules: Vec<Module<'a>>,
    /// Library module path → its file.
    files_by_path: BTreeMap<Vec<String>, &'a str>,
}

impl<'a> Crate<'a> {
    fn load(files: &'a BTreeMap<String, String>) -> Self {
        let modules: Vec<Module> = files
            .iter()
            .filter(|(file, _)| file.ends_with(".rs") && !is_test_file(file))
            .map(|(file, source)| Module {
                file: file.as_str(),
                path: module_path(file),
                code: blank_test_code(&blank_comments_and_literals(source)),
                original: source.as_str(),
            })
            .collect();
        let files_by_path = modules
            .iter()
            .filter_map(|m| Some((m.path.clone()?, m.file)))
            .collect();
        Crate {
            modules,
            files_by_path,
        }
    }

    /// The file a library path names: the longest prefix of it that is a module file.
    fn file_named(&self, path: &[String]) -> Option<&'a str> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.files_by_path.get(&path[..n]).copied())
    }

    /// Every dependency between files, except on the file itself and on its own descendants.
    fn dependencies(&self) -> Vec<Edge<'a>> {
        let mut edges = Vec::new();
        let mut seen = BTreeSet::new();
        for module in &self.modules {
            for reference in self.references(module) {
                let Some(to) = reference
                    .library
                    .as_deref()
                    .and_then(|p| self.file_named(p))
                else {
                    continue;
                };
                if to == module.file {
                    continue;
                }
                if let (Some(here), Some(there)) = (&module.path, module_path(to)) {
                    if there.starts_with(here) {
                        continue; // a parent declares and re-exports its children
                    }
                }
                if seen.insert((module.file, to, reference.line, reference.written.clone())) {
                    edges.push(Edge {
                        from: module.file,
                        to,
                        line: reference.line,
                        written: reference.written,
                    });
                }
            }
        }
        edges
    }

    /// Every path `module` names: each leaf of each `use` tree, and each path expression rooted
    /// at `crate`, `super`, `self` or `ringleader`.
    fn references(&self, module: &Module) -> Vec<Reference> {
        let tokens = tokenize(&module.code);
        let text = |i: usize| tokens.get(i).map_or("", |t: &Token| t.text.as_str());
        let mut found = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            if text(i) == "use" && text(i + 1) != "<" {
                let end = (i..tokens.len())
                    .find(|&j| text(j) == ";")
                    .unwrap_or(tokens.len());
                let mut leaves = Vec::new();
                use_tree(&tokens[i + 1..end], &mut 0, Vec::new(), &mut leaves);
                for (segments, line) in leaves {
                    found.push(self.reference(module, segments, line));
                }
                i = end + 1;
            } else if ["crate", "super", "self", "ringleader"].contains(&text(i))
                && text(i + 1) == "::"
                && i.checked_sub(1)
                    .is_none_or(|p| !["::", "$", "in"].contains(&text(p)))
            {
                let line = tokens[i].line;
                let mut segments = vec![tokens[i].text.clone()];
                let mut j = i + 1;
                while text(j) == "::" && is_ident(text(j + 1)) {
                    segments.push(tokens[j + 1].text.clone());
                    j += 2;
                }
                found.push(self.reference(module, segments, line));
                i = j;
            } else {
                i += 1;
            }
        }
        found
    }

    fn reference(&self, module: &Module, segments: Vec<String>, line: usize) -> Reference {
        Reference {
            line,
            written: segments.join("::"),
            library: self.resolve(&segments, module.path.as_deref()),
        }
    }

    /// The library path `segments` names from module `here` (`None`: from a binary), if any.
    fn resolve(&self, segments: &[String], here: Option<&[String]>) -> Option<Vec<String>> {
        let (first, rest) = segments.split_first()?;
        match (first.as_str(), here) {
            ("ringleader", _) | ("crate", Some(_)) => Some(rest.to_vec()),
            ("self", Some(here)) => Some([here, rest].concat()),
            ("super", Some(here)) => {
                let mut base = here.to_vec();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                Some([base.as_slice(), rest].concat())
            }
            // `use child::X` inside the module that declares `child`.
            (_, Some(here)) => {
                let mut child = here.to_vec();
                child.push(first.clone());
                self.files_by_path
                    .contains_key(&child)
                    .then(|| [here, segments].concat())
            }
            _ => None,
        }
    }

    /// Rules 2 and 3: in every file `applies` to, each line that names one of `patterns`, in the
    /// code as written or in a path as resolved (`use std::time::{Duration, Instant}` names
    /// `std::time::Instant`; `super::rpc` in `src/types.rs` names `crate::rpc`).
    fn mentions(
        &self,
        applies: impl Fn(&str) -> bool,
        patterns: &[&str],
        reason: &str,
    ) -> Vec<Violation> {
        let mut violations = Vec::new();
        for module in self.modules.iter().filter(|m| applies(m.file)) {
            let mut hits: BTreeMap<(usize, &str), Option<String>> = BTreeMap::new();
            for (n, line) in module.code.lines().enumerate() {
                for &pattern in patterns.iter().filter(|&&p| names(line, p)) {
                    hits.insert((n + 1, pattern), None);
                }
            }
            for reference in self.references(module) {
                let rendered = reference.rendered();
                for &pattern in patterns.iter().filter(|&&p| names(&rendered, p)) {
                    hits.entry((reference.line, pattern))
                        .or_insert_with(|| Some(rendered.clone()));
                }
            }
            for ((line, pattern), via) in hits {
                let source = module.original.lines().nth(line - 1).unwrap_or("").trim();
                let via = via.map(|v| format!(" (as `{v}`)")).unwrap_or_default();
                violations.push(Violation {
                    file: module.file.to_string(),
                    line,
                    text: format!("`{source}` names `{pattern}`{via}"),
                    reason: reason.to_string(),
                });
            }
        }
        violations
    }
}

/// Whether `text` names `pattern`: it occurs there not glued to a preceding identifier, so
/// `Instant::now` matches `tokio::time::Instant::now()` but not `MyInstant::now()`.
fn names(text: &str, pattern: &str) -> bool {
    text.match_indices(pattern)
        .any(|(at, _)| !text[..at].chars().next_back().is_some_and(is_ident_char))
}

/// Test code: files named `tests.rs` and files under a `tests/` folder.
fn is_test_file(file: &str) -> bool {
    let mut parts = file.rsplit('/');
    parts.next() == Some("tests.rs") || parts.any(|dir| dir == "tests")
}

/// `src/lib.rs` → `[]`, `src/a.rs` and `src/a/mod.rs` → `[a]`, `src/a/b.rs` → `[a, b]`; a
/// binary (`src/bin/...`, `src/main.rs`) is its own crate: `None`.
fn module_path(file: &str) -> Option<Vec<String>> {
    let rest = file.strip_prefix("src/")?.strip_suffix(".rs")?;
    if rest == "main" || rest.starts_with("bin/") {
        return None;
    }
    let mut path: Vec<String> = rest.split('/').map(String::from).collect();
    if path.last().is_some_and(|last| last == "mod") || path == ["lib"] {
        path.pop();
    }
    Some(path)
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_ident(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Replaces every character that is not a newline by a space.
fn blank(chars: &mut [char]) {
    for c in chars {
        if *c != '\n' {
            *c = ' ';
        }
    }
}

/// The source with comments (`//`, `/* */`, nested), string literals (plain, byte, C, raw) and
/// character literals blanked; newlines stay, so line numbers do too. Lifetimes are kept.
fn blank_comments_and_literals(source: &str) -> String {
    let mut c: Vec<char> = source.chars().collect();
    let mut i = 0;
    while i < c.len() {
        let glued = i > 0 && is_ident_char(c[i - 1]);
        let literal_end = if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            Some((i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len()))
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            Some(block_comment_end(&c, i))
        } else if c[i] == '\'' && !glued {
            char_literal_end(&c, i) // `None`: a lifetime or a label
        } else if c[i] == 'b' && c.get(i + 1) == Some(&'\'') && !glued {
            char_literal_end(&c, i + 1)
        } else if c[i] == '"' || (matches!(c[i], 'b' | 'c' | 'r') && !glued) {
            string_literal_end(&c, i)
        } else {
            None
        };
        match literal_end {
            Some(end) => {
                blank(&mut c[i..end]);
                i = end;
            }
            None => i += 1,
        }
    }
    c.into_iter().collect()
}

fn block_comment_end(c: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    c.len()
}

/// At a `'`: the end of the character literal it opens, or `None` for a lifetime.
fn char_literal_end(c: &[char], quote: usize) -> Option<usize> {
    if c.get(quote + 1) == Some(&'\\') {
        let close = (quote + 3..c.len()).find(|&j| c[j] == '\'')?;
        Some(close + 1)
    } else if c.get(quote + 2) == Some(&'\'') {
        Some(quote + 3)
    } else {
        None
    }
}

/// At `"`, `b"`, `c"`, `r"`, `r#"`, `br#"`, …: the end of the string literal, or `None`.
fn string_literal_end(c: &[char], start: usize) -> Option<usize> {
    let mut j = start;
    if matches!(c[j], 'b' | 'c') {
        j += 1;
    }
    let raw = c.get(j) == Some(&'r');
    if raw {
        j += 1;
    }
    let mut hashes = 0;
    while raw && c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if !raw && c[j] == '\\' {
            j += 2;
        } else if c[j] == '"'
            && c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&h| h == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        } else {
            j += 1;
        }
    }
    Some(c.len())
}

/// The code (comments and literals already blanked) with every item marked `#[cfg(test)]`
/// blanked, from the attribute to the end of the item (its closing brace or semicolon); all of it
/// if the file says `#![cfg(test)]`.
fn blank_test_code(code: &str) -> String {
    let mut c: Vec<char> = code.chars().collect();
    let cfg_test = ["[", "cfg", "(", "test", ")", "]"];
    let inner_cfg_test = ["!", "[", "cfg", "(", "test", ")", "]"];
    if (0..c.len()).any(|i| c[i] == '#' && expect(&c, i + 1, &inner_cfg_test).is_some()) {
        blank(&mut c);
        return c.into_iter().collect();
    }
    let mut i = 0;
    while i < c.len() {
        let attribute_end = if c[i] == '#' {
            expect(&c, i + 1, &cfg_test)
        } else {
            None
        };
        match attribute_end {
            Some(after) => {
                let end = item_end(&c, after);
                blank(&mut c[i..end]);
                i = end;
            }
            None => i += 1,
        }
    }
    c.into_iter().collect()
}

/// Matches `pieces` in turn from `i`, whitespace allowed between them; the index after the last.
fn expect(c: &[char], mut i: usize, pieces: &[&str]) -> Option<usize> {
    for piece in pieces {
        while c.get(i).is_some_and(|ch| ch.is_whitespace()) {
            i += 1;
        }
        for want in piece.chars() {
            if c.get(i) != Some(&want) {
                return None;
            }
            i += 1;
        }
    }
    Some(i)
}

/// The end of the item that starts at `i` (after its `#[cfg(test)]`): further attributes, then up
/// to the `;` or the closing brace of its body, counting brackets (literals are already blanked).
fn item_end(c: &[char], mut i: usize) -> usize {
    loop {
        while c.get(i).is_some_and(|ch| ch.is_whitespace()) {
            i += 1;
        }
        match expect(c, i, &["#", "["]) {
            Some(open) => i = matching_close(c, open - 1),
            None => break,
        }
    }
    let mut word_at = i;
    if expect(c, word_at, &["pub"]).is_some() && !c.get(i + 3).is_some_and(|&ch| is_ident_char(ch))
    {
        word_at += 3;
        while c.get(word_at).is_some_and(|ch| ch.is_whitespace()) {
            word_at += 1;
        }
        if c.get(word_at) == Some(&'(') {
            word_at = matching_close(c, word_at);
        }
    }
    while c.get(word_at).is_some_and(|ch| ch.is_whitespace()) {
        word_at += 1;
    }
    let word: String = c[word_at.min(c.len())..]
        .iter()
        .take_while(|&&ch| is_ident_char(ch))
        .collect();
    let ends_at_semicolon =
        ["use", "const", "static", "type", "let", "extern"].contains(&word.as_str());

    let mut depth: i64 = 0;
    while i < c.len() {
        match c[i] {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth < 0 {
                    return i; // the enclosing block ends: the item was malformed
                }
                if depth == 0 && c[i] == '}' && !ends_at_semicolon {
                    return i + 1;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    c.len()
}

/// At an opening bracket: the index after its matching close.
fn matching_close(c: &[char], open: usize) -> usize {
    let mut depth = 0;
    for (j, &ch) in c.iter().enumerate().skip(open) {
        match ch {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    c.len()
}

struct Token {
    text: String,
    line: usize,
}

/// Identifiers (keywords included), `::`, and every other character on its own.
fn tokenize(code: &str) -> Vec<Token> {
    let c: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let start = i;
        if c[i] == '\n' {
            line += 1;
            i += 1;
            continue;
        } else if c[i].is_whitespace() {
            i += 1;
            continue;
        } else if is_ident_char(c[i]) {
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            i += 1;
        }
        tokens.push(Token {
            text: c[start..i].iter().collect(),
            line,
        });
    }
    tokens
}

/// Expands one `use` tree (the tokens after `use`, up to `;`) into its leaves, each with the line
/// it is written on: `crate::{a::{B, C}, d}` → `crate::a::B`, `crate::a::C`, `crate::d`.
fn use_tree(
    tokens: &[Token],
    i: &mut usize,
    prefix: Vec<String>,
    leaves: &mut Vec<(Vec<String>, usize)>,
) {
    let text = |i: usize| tokens.get(i).map_or("", |t| t.text.as_str());
    let mut path = prefix;
    if text(*i) == "::" {
        *i += 1;
    }
    while let Some(token) = tokens.get(*i) {
        match token.text.as_str() {
            "{" => {
                *i += 1;
                while *i < tokens.len() && text(*i) != "}" {
                    use_tree(tokens, i, path.clone(), leaves);
                    if text(*i) == "," {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            "*" => {
                leaves.push((path, token.line));
                *i += 1;
                return;
            }
            word if is_ident(word) => {
                // `self` inside a group (`rpc::{self, X}`) is the group's prefix.
                if word != "self" || path.is_empty() {
                    path.push(word.to_string());
                }
                *i += 1;
                match text(*i) {
                    "::" => *i += 1,
                    "as" => {
                        *i += 2;
                        leaves.push((path, token.line));
                        return;
                    }
                    _ => {
                        leaves.push((path, token.line));
                        return;
                    }
                }
            }
            _ => {
                *i += 1;
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Self-tests: the same functions over small in-memory trees, each with a planted violation.
// ---------------------------------------------------------------------------------------------

mod self_tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(path, source)| (path.to_string(), source.to_string()))
            .collect()
    }

    fn at(violations: &[Violation]) -> Vec<(&str, usize)> {
        violations
            .iter()
            .map(|v| (v.file.as_str(), v.line))
            .collect()
    }

    #[test]
    fn a_cycle_a_b_a_is_found() {
        let files = tree(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\n"),
            ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
            (
                "src/b.rs",
                "pub struct B;\npub fn f() -> crate::a::A { crate::a::A }\n",
            ),
        ]);
        let cycles = import_cycles(&files);
        assert_eq!(cycles.len(), 1, "{cycles:#?}");
        assert!(
            cycles[0].text.starts_with("src/a.rs → src/b.rs → src/a.rs"),
            "{cycles:#?}"
        );
        assert!(cycles[0].text.contains("src/a.rs:1 names `crate::b::B`"));
        assert!(cycles[0].text.contains("src/b.rs:2 names `crate::a::A`"));
    }

    #[test]
    fn a_cycle_through_super_and_a_grouped_use_is_found() {
        let files = tree(&[
            ("src/lib.rs", "pub mod rpc;\npub mod server;\n"),
            ("src/server/mod.rs", "mod mover;\nmod service;\n"),
            ("src/server/service.rs", "use super::mover::plan;\n"),
            (
                "src/server/mover.rs",
                "use crate::{\n    rpc::client::Pool,\n};\n",
            ),
            ("src/rpc/mod.rs", "pub mod client;\n"),
            (
                "src/rpc/client.rs",
                "fn f() { crate::server::service::g(); }\n",
            ),
        ]);
        let cycles = import_cycles(&files);
        assert_eq!(cycles.len(), 1, "{cycles:#?}");
        assert!(
            cycles[0]
                .text
                .starts_with("src/rpc/client.rs → src/server/service.rs → src/server/mover.rs"),
            "{cycles:#?}"
        );
        // The grouped leaf is reported on the line it is written on.
        assert!(
            cycles[0].text.contains("src/server/mover.rs:2"),
            "{cycles:#?}"
        );
    }

    #[test]
    fn a_parent_re_exporting_its_children_is_no_cycle() {
        let files = tree(&[
            ("src/lib.rs", "pub mod server;\npub use server::ServerOptions;\n"),
            (
                "src/server/mod.rs",
                "mod mover;\npub use mover::plan;\nuse crate::server::mover::Moves;\npub struct ServerOptions;\n",
            ),
            ("src/server/mover.rs", "use super::ServerOptions;\nuse crate::ServerOptions as O;\n"),
        ]);
        assert_eq!(import_cycles(&files), vec![]);
    }

    #[test]
    fn a_path_names_the_longest_existing_module() {
        let files = tree(&[
            ("src/lib.rs", "pub mod rpc;\npub mod server;\n"),
            ("src/server/mod.rs", "pub mod mover;\npub struct ServerOptions;\n"),
            ("src/server/mover.rs", "pub fn plan() {}\n"),
            ("src/rpc/mod.rs", "pub mod message;\n"),
            ("src/rpc/message.rs", "pub struct View;\n"),
            (
                "src/x.rs",
                "fn f(_: crate::rpc::message::View) {\n    crate::server::mover::plan();\n    let _ = crate::server::ServerOptions;\n}\n",
            ),
            ("src/bin/server.rs", "use ringleader::server::{self, ServerOptions};\n"),
        ]);
        let krate = Crate::load(&files);
        let mut edges: Vec<(&str, &str, usize)> = krate
            .dependencies()
            .iter()
            .map(|e| (e.from, e.to, e.line))
            .collect();
        edges.sort();
        assert_eq!(
            edges,
            vec![
                ("src/bin/server.rs", "src/server/mod.rs", 1),
                ("src/bin/server.rs", "src/server/mod.rs", 1),
                ("src/x.rs", "src/rpc/message.rs", 1),
                ("src/x.rs", "src/server/mod.rs", 3),
                ("src/x.rs", "src/server/mover.rs", 2),
            ]
        );
    }

    #[test]
    fn a_pure_core_importing_the_wire_is_found() {
        let files = tree(&[
            (
                "src/lib.rs",
                "pub mod ring;\npub mod rpc;\npub mod twopc;\npub mod types;\n",
            ),
            ("src/rpc/mod.rs", "pub mod message;\n"),
            ("src/rpc/message.rs", "pub struct X;\n"),
            ("src/ring.rs", "use crate::rpc::message::X;\n"),
            (
                "src/twopc/mod.rs",
                "use std::time::{\n    Duration,\n    Instant,\n};\n",
            ),
            ("src/types.rs", "fn f() {\n    super::rpc::message::X;\n}\n"),
            (
                "src/viewleader/state.rs",
                "use tokio::{net::TcpStream, spawn};\n",
            ),
            // Not a pure core: the same import is fine there.
            ("src/server/service.rs", "use crate::rpc::message::X;\n"),
        ]);
        let found = pure_core_violations(&files);
        assert_eq!(
            at(&found),
            vec![
                ("src/ring.rs", 1),
                ("src/twopc/mod.rs", 3),
                ("src/types.rs", 2),
                ("src/viewleader/state.rs", 1),
                ("src/viewleader/state.rs", 1),
            ],
            "{found:#?}"
        );
        assert!(found[0].text.contains("names `crate::rpc`"), "{found:#?}");
        assert!(found[1].text.contains("`std::time::Instant`"), "{found:#?}");
        assert!(
            found[2].text.contains("(as `crate::rpc::message::X`)"),
            "{found:#?}"
        );
        assert!(found.iter().all(|v| v.reason == PURE_CORE_REASON));
    }

    #[test]
    fn a_part_that_does_not_exist_yet_has_no_files() {
        let files = tree(&[
            ("src/lib.rs", "pub mod server;\n"),
            (
                "src/server/x.rs",
                "use crate::twopc::Coordinator;\nuse crate::tools::chaos;\n",
            ),
        ]);
        assert_eq!(pure_core_violations(&files), vec![]);
        assert_eq!(import_cycles(&files), vec![]);
        // Unresolvable paths fall back to the crate root (Base), never to a missing part.
        assert_eq!(store_tools_violations(&files), vec![]);
    }

    #[test]
    fn a_clock_in_the_server_is_found_but_not_in_the_seam_or_the_tools() {
        let clock = "fn now() -> std::time::Instant {\n    Instant::now()\n}\n";
        let files = tree(&[
            ("src/server/x.rs", clock),
            ("src/net.rs", clock),
            ("src/tools/load.rs", clock),
            (
                "src/client/ids.rs",
                "fn id() -> Uuid {\n    uuid::Uuid::new_v4()\n}\n",
            ),
            (
                "src/http/log.rs",
                "use rand::random;\nfn f() -> u8 { random() }\n",
            ),
            ("src/bin/server.rs", "use tokio::net::TcpListener;\n"),
        ]);
        let found = seam_violations(&files);
        assert_eq!(
            at(&found),
            vec![
                ("src/bin/server.rs", 1),
                ("src/client/ids.rs", 2),
                ("src/http/log.rs", 1),
                ("src/server/x.rs", 2),
            ],
            "{found:#?}"
        );
        assert!(found[3]
            .text
            .contains("`Instant::now()` names `Instant::now`"));
        assert!(found.iter().all(|v| v.reason == SEAM_REASON));
    }

    #[test]
    fn test_only_clocks_do_not_count() {
        let source = r#"pub fn real() {}

#[cfg(test)]
mod tests {
    use std::time::Instant;
    #[test]
    fn t() {
        let _brace = '}';
        let _text = "}} {";
        let _ = Instant::now();
        if true { let _ = std::time::SystemTime::now(); }
    }
}

pub fn later() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

#[cfg(test)]
fn helper() { let _ = rand::thread_rng(); }

#[cfg(test)]
use rand::random;
"#;
        let files = tree(&[
            ("src/server/x.rs", source),
            ("src/server/tests.rs", "fn t() { Instant::now(); }\n"),
            ("src/server/x/tests.rs", "fn t() { Instant::now(); }\n"),
            (
                "src/server/tests/helpers.rs",
                "fn t() { Instant::now(); }\n",
            ),
            ("src/ring.rs", "#![cfg(test)]\nfn t() { Instant::now(); }\n"),
        ]);
        let found = seam_violations(&files);
        assert_eq!(at(&found), vec![("src/server/x.rs", 16)], "{found:#?}");
    }

    #[test]
    fn comments_and_strings_do_not_count() {
        let source = r####"// rand::random
/// rand::random
//! rand::random
/* rand::random */
/* nested /* comment */ rand::random */
fn f() -> u8 {
    let _ = "rand::random";
    let _ = "escaped \" rand::random";
    let _ = r#"raw "rand::random" "#;
    let _ = b"rand::random";
    let _ = '"'; let _ = rand::random::<u8>();
    rand::random()
}
"####;
        let files = tree(&[("src/client/x.rs", source)]);
        let found = seam_violations(&files);
        assert_eq!(
            at(&found),
            vec![("src/client/x.rs", 11), ("src/client/x.rs", 12)],
            "{found:#?}"
        );
    }

    #[test]
    fn a_tools_path_in_the_client_is_found() {
        let files = tree(&[
            (
                "src/lib.rs",
                "pub mod cli;\npub mod client;\npub mod tools;\n",
            ),
            ("src/tools/mod.rs", "pub mod chaos;\n"),
            ("src/tools/chaos.rs", "pub fn run() {}\n"),
            (
                "src/client/x.rs",
                "fn f() {\n    crate::tools::chaos::run();\n}\n",
            ),
            ("src/cli/mod.rs", "use crate::tools::chaos;\n"),
            ("src/cluster.rs", "use crate::cli::run;\n"),
        ]);
        let found = store_tools_violations(&files);
        assert_eq!(
            at(&found),
            vec![("src/client/x.rs", 2), ("src/cluster.rs", 1)],
            "{found:#?}"
        );
        assert!(found[0]
            .text
            .starts_with("Client → Tools: names `crate::tools::chaos::run`"));
        assert!(found[1].text.starts_with("Other → Cli"));
    }

    #[test]
    fn a_forbidden_arrow_between_parts_is_found() {
        let files = tree(&[
            (
                "src/lib.rs",
                "pub mod http;\npub mod server;\npub mod net;\n",
            ),
            ("src/http/mod.rs", "use crate::server::Node;\n"),
            ("src/server/mod.rs", "mod x;\npub struct Node;\n"),
            (
                "src/server/x.rs",
                "use crate::http::Gateway;\nuse crate::net::connect;\n",
            ),
            ("src/net.rs", "use crate::server::Node;\n"),
        ]);
        let found = forbidden_arrow_violations(&files);
        assert_eq!(
            at(&found),
            vec![("src/net.rs", 1), ("src/server/x.rs", 1)],
            "{found:#?}"
        );
        assert_eq!(
            found[1].reason,
            "Server must never depend on Http: the binary wires HTTP to the node"
        );
        assert_eq!(
            found[0].reason,
            "Rpc must never depend on Server: transport knows no protocol"
        );
    }

    #[test]
    fn the_parts_are_the_layout() {
        assert_eq!(part_of("src/bin/server.rs"), Bins);
        assert_eq!(part_of("src/net.rs"), Rpc);
        assert_eq!(part_of("src/rpc/frame.rs"), Rpc);
        assert_eq!(part_of("src/viewleader/state.rs"), ViewLeader);
        assert_eq!(part_of("src/lib.rs"), Base);
        assert_eq!(part_of("src/error.rs"), Base);
        assert_eq!(part_of("src/metrics.rs"), Other);
        assert_eq!(part_of("src/tools/chaos.rs"), Tools);
        assert_eq!(module_path("src/lib.rs"), Some(vec![]));
        assert_eq!(
            module_path("src/server/mod.rs"),
            Some(vec!["server".to_string()])
        );
        assert_eq!(module_path("src/bin/client.rs"), None);
        assert!(is_test_file("src/server/participant/tests.rs"));
        assert!(is_test_file("src/server/tests/x.rs"));
        assert!(!is_test_file("src/server/participant.rs"));
    }
}
