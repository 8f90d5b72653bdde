//! The one place the command line shows progress of a command that takes a while (a
//! decommission, a bulk load, a wait for the cluster to settle, a read or write waiting out a
//! rebalancing). On a terminal it is an indicatif bar (or spinner) on stderr; elsewhere (a pipe,
//! a log file, a test) it is plain lines on stderr, printed only when what they say changes and
//! at most once per [`PROGRESS_LINE_MS_MIN`], so a log is not flooded by a command that looks
//! many times a second; with `--json` it is nothing at all, so that stdout and stderr carry only
//! the documents.
//!
//! The library never prints: it tells its progress through callbacks, and the commands turn
//! what they hear into one line of text, which this module shows.
//!
//! Left out: several bars at once (no command runs two long things side by side), and a
//! terminal on stdout without one on stderr (the progress goes where the errors go).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::output::Output;
use crate::client::RebalanceWait;
use crate::net::Env;

/// Least time between two progress lines when stderr is not a terminal, in ms: a line that
/// changes sooner waits (the last one is printed when the command ends).
pub const PROGRESS_LINE_MS_MIN: u64 = 1_000;
/// How long a `setr`, `getr` or `append` waits for a rebalancing before the wait is shown, in
/// ms: a wait shorter than this is not worth a line.
pub const REBALANCE_WAIT_SHOW_MS: u64 = 1_000;
/// How often a spinner turns on a terminal, in ms.
const SPINNER_TICK_MS: u64 = 120;

/// What a progress display counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Steps toward a known total: a bar.
    Bar,
    /// Steps of no known total, or none at all: a spinner beside the line.
    Spinner,
}

enum Display {
    Bar(indicatif::ProgressBar),
    Lines {
        /// The last line printed, and when.
        printed: Option<(String, Instant)>,
        /// The newest line, not printed yet because it came too soon after the last.
        pending: Option<String>,
    },
    Silent,
}

/// A progress display on stderr (see the module).
pub struct Progress {
    display: Display,
    env: Env,
}

impl Progress {
    /// A display of `shape`: a bar or spinner when stderr is a terminal, else lines; nothing
    /// with `--json`. `env` is its clock.
    pub fn new(out: Output, shape: Shape, env: &Env) -> Self {
        let display = if out.json {
            Display::Silent
        } else if std::io::stderr().is_terminal() {
            Display::Bar(terminal_bar(shape))
        } else {
            Display::Lines {
                printed: None,
                pending: None,
            }
        };
        Self {
            display,
            env: env.clone(),
        }
    }

    /// Shows `line`, `done` steps of `total` (a bar's length; `None` for a spinner).
    pub fn update(&mut self, done: u64, total: Option<u64>, line: String) {
        match &mut self.display {
            Display::Bar(bar) => {
                if let Some(total) = total {
                    bar.set_length(total.max(done));
                }
                bar.set_position(done);
                bar.set_message(line);
            }
            Display::Lines { printed, pending } => {
                let now = self.env.now();
                match printed {
                    Some((last, _)) if *last == line => *pending = None,
                    Some((_, at))
                        if now.saturating_duration_since(*at)
                            < Duration::from_millis(PROGRESS_LINE_MS_MIN) =>
                    {
                        *pending = Some(line)
                    }
                    _ => {
                        eprintln!("{line}");
                        *printed = Some((line, now));
                        *pending = None;
                    }
                }
            }
            Display::Silent => {}
        }
    }

    /// Prints `line` (a failure, a warning) on stderr without breaking the display; nothing
    /// with `--json`.
    pub fn println(&self, line: &str) {
        match &self.display {
            Display::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            Display::Lines { .. } => eprintln!("{line}"),
            Display::Silent => {}
        }
    }

    /// The command is done: a bar is cleared (the command prints its result next), and the
    /// last line held back is printed, so the lines end on where the command ended.
    pub fn finish(self) {
        match self.display {
            Display::Bar(bar) => bar.finish_and_clear(),
            Display::Lines {
                pending: Some(line),
                ..
            } => eprintln!("{line}"),
            Display::Lines { .. } | Display::Silent => {}
        }
    }

    /// The thing shown is over and not worth a last line: a bar is cleared, lines stop.
    pub fn clear(self) {
        if let Display::Bar(bar) = self.display {
            bar.finish_and_clear();
        }
    }
}

fn terminal_bar(shape: Shape) -> indicatif::ProgressBar {
    let (bar, template) = match shape {
        Shape::Bar => (
            indicatif::ProgressBar::new(0),
            "[{bar:30}] {percent:>3}% {elapsed:>4} {wide_msg}",
        ),
        Shape::Spinner => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {elapsed:>4} {wide_msg}",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    if shape == Shape::Spinner {
        bar.enable_steady_tick(Duration::from_millis(SPINNER_TICK_MS));
    }
    bar
}

/// The hook the command line installs on its client for `setr`, `getr` and `append`
/// ([`crate::client::Client::on_rebalance_wait`]): once a wait for a rebalancing has lasted
/// [`REBALANCE_WAIT_SHOW_MS`], it shows which epoch it waits on and how much of the `--wait-ms`
/// budget is gone; it clears the display when the wait is over.
pub fn rebalance_wait_hook(out: Output, env: Env) -> impl Fn(&RebalanceWait) + Send + Sync {
    let shown: Mutex<Option<Progress>> = Mutex::new(None);
    move |wait: &RebalanceWait| {
        let Ok(mut shown) = shown.lock() else {
            return;
        };
        if wait.over {
            if let Some(progress) = shown.take() {
                progress.clear();
            }
            return;
        }
        if wait.waited < Duration::from_millis(REBALANCE_WAIT_SHOW_MS) {
            return;
        }
        let progress = shown.get_or_insert_with(|| Progress::new(out, Shape::Spinner, &env));
        let waited_ms = u64::try_from(wait.waited.as_millis()).unwrap_or(u64::MAX);
        progress.update(
            waited_ms,
            None,
            format!(
                "waiting for the cluster to finish rebalancing epoch {} ({:.1} s of the {:.1} s \
                 --wait-ms budget)",
                wait.epoch,
                wait.waited.as_secs_f64(),
                wait.budget.as_secs_f64()
            ),
        );
    }
}
