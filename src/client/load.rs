//! `load`: a bulk load. Key/value pairs come from a stream and each is written with `setr`, at
//! most a given number at once, so one slow replica or one key waiting out a conflict does not
//! hold up the rest. The caller hears after every write how far the load has come, and which
//! key failed and why; the report at the end sums it up.
//!
//! The pairs arrive as a stream (a file read up front, or standard input read as the load goes)
//! whose items may be errors: the first such error stops the reading, the writes already sent
//! finish, and the report carries the error beside what was written. Memory stays bounded by
//! the concurrency, whatever the length of the input.
//!
//! Left out: retrying a key that failed (`setr` already retries what can be retried within
//! `wait_ms`; what fails after that is the caller's to look at), a transaction across keys (each
//! key is written on its own), and ordering: pairs in flight at once land in any order, so two
//! lines with the same key leave either value.

use std::time::Duration;

use futures::stream::{FuturesUnordered, Stream, StreamExt};

use super::Client;
use crate::error::{Error, Result};
use crate::types::{Key, Value};

/// Writes in flight at once when the caller names no number: enough to hide a round trip of
/// 2PC behind others on a small cluster, few enough not to queue up at any one server.
pub const LOAD_CONCURRENCY_DEFAULT: usize = 16;
/// The most writes in flight at once a load accepts (a larger number is refused by the command
/// line and clamped by [`Client::load`]): each holds a transaction open on three replicas, and
/// far more than the servers' cores only lengthens their queues.
pub const LOAD_CONCURRENCY_MAX: usize = 256;
/// Failures a [`LoadReport`] keeps with their key and reason (the first ones); beyond it only
/// the count grows, so a load that fails on every key stays small in memory.
pub const LOAD_FAILURES_KEPT_MAX: usize = 100;

/// How far a load has come, told after every write.
#[derive(Debug)]
pub struct LoadProgress<'a> {
    /// Pairs written so far.
    pub written: u64,
    /// Pairs whose write failed so far.
    pub failed: u64,
    /// The key whose write just failed, and why (`None` after a write that succeeded).
    pub failure: Option<(&'a str, &'a Error)>,
}

/// What a load did.
#[derive(Debug)]
pub struct LoadReport {
    /// Pairs written.
    pub written: u64,
    /// Pairs whose write failed.
    pub failed: u64,
    /// The first failures (at most [`LOAD_FAILURES_KEPT_MAX`]), in the order they failed.
    pub failures: Vec<(Key, Error)>,
    /// The input error that stopped the load before its end, if one did.
    pub stopped_by: Option<Error>,
    /// From the first read of the input to the last write's answer.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Pairs written per second over the whole load.
    pub fn keys_per_s(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.written as f64 / seconds
        } else {
            0.0
        }
    }
}

impl Client {
    /// Writes every pair of `pairs` with [`Client::setr`], at most `concurrency` at once
    /// (clamped to 1..=[`LOAD_CONCURRENCY_MAX`]), calling `progress` after each write. An `Err`
    /// item stops the reading: the writes in flight finish and the report says what stopped it.
    /// A failed write does not stop the load; the report counts it.
    pub async fn load<S>(
        &self,
        pairs: S,
        concurrency: usize,
        mut progress: impl FnMut(&LoadProgress),
    ) -> LoadReport
    where
        S: Stream<Item = Result<(Key, Value)>>,
    {
        let concurrency = concurrency.clamp(1, LOAD_CONCURRENCY_MAX);
        let started = self.env.now();
        let mut report = LoadReport {
            written: 0,
            failed: 0,
            failures: Vec::new(),
            stopped_by: None,
            elapsed: Duration::ZERO,
        };
        let pairs = pairs.fuse();
        futures::pin_mut!(pairs);
        let mut input_open = true;
        let mut in_flight = FuturesUnordered::new();
        loop {
            let want_input = input_open && in_flight.len() < concurrency;
            if !want_input && in_flight.is_empty() {
                break;
            }
            // Reading and writing go on together: a slow input (a pipe) never stalls the
            // writes already sent, and a slow write never stops the next line being read.
            tokio::select! {
                next = pairs.next(), if want_input => match next {
                    Some(Ok((key, value))) => in_flight.push(async move {
                        let written = self.setr(&key, value).await;
                        (key, written)
                    }),
                    Some(Err(err)) => {
                        report.stopped_by = Some(err);
                        input_open = false;
                    }
                    None => input_open = false,
                },
                Some((key, written)) = in_flight.next(), if !in_flight.is_empty() => {
                    match written {
                        Ok(_) => {
                            report.written = report.written.saturating_add(1);
                            progress(&LoadProgress {
                                written: report.written,
                                failed: report.failed,
                                failure: None,
                            });
                        }
                        Err(err) => {
                            report.failed = report.failed.saturating_add(1);
                            progress(&LoadProgress {
                                written: report.written,
                                failed: report.failed,
                                failure: Some((&key, &err)),
                            });
                            if report.failures.len() < LOAD_FAILURES_KEPT_MAX {
                                report.failures.push((key, err));
                            }
                        }
                    }
                }
            }
        }
        report.elapsed = self.env.now().saturating_duration_since(started);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientOptions;

    /// A client whose view leader refuses every connection: each write fails at once.
    fn client_of_nothing() -> Client {
        Client::new(ClientOptions {
            viewleader: "127.0.0.1:1".into(),
            timeout_ms: 500,
            wait_ms: 0,
        })
    }

    fn pair(key: &str) -> Result<(Key, Value)> {
        Ok((key.to_string(), Value::Text("v".into())))
    }

    #[tokio::test]
    async fn an_input_error_stops_the_reading_and_failures_are_counted_and_told() {
        let client = client_of_nothing();
        let input = futures::stream::iter(vec![
            pair("a"),
            pair("b"),
            Err(crate::errinput!("line 3: bad")),
            pair("c"),
        ]);
        let mut told = Vec::new();
        let report = client
            .load(input, 1, |now| {
                told.push((
                    now.written,
                    now.failed,
                    now.failure.map(|(k, _)| k.to_string()),
                ))
            })
            .await;
        assert_eq!(report.failed, 2, "{report:?}");
        assert_eq!(report.written, 0, "{report:?}");
        assert_eq!(report.failures.len(), 2, "{report:?}");
        assert!(report.failures.iter().all(|(_, err)| err.exit_code() == 3));
        assert_eq!(
            report.stopped_by,
            Some(crate::errinput!("line 3: bad")),
            "{report:?}"
        );
        assert_eq!(
            told,
            vec![(0, 1, Some("a".to_string())), (0, 2, Some("b".to_string()))]
        );
    }
}
