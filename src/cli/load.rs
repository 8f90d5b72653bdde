//! `client load [FILE]`: a bulk load of key/value pairs, one `KEY<TAB>VALUE` a line (the value
//! is the rest of the line, verbatim, tabs included; a line may end in `\n` or `\r\n`; empty
//! lines are skipped), each written with `setr` by [`Client::load`], a bounded number at once.
//!
//! A FILE is read and checked whole before anything is written, so a bad line writes nothing
//! (at most [`LOAD_FILE_BYTES_MAX`]; larger inputs go through standard input). Standard input
//! (`-`, or no FILE) is streamed a line at a time, in bounded memory, and a bad line stops the
//! load there, saying how many pairs were already written. Progress goes to stderr (a bar of
//! pairs written for a file, a count for standard input); the first
//! [`LOAD_FAILURES_SHOWN_MAX`] failed keys are named there with their reason; a summary goes to
//! stdout.
//!
//! Left out: other input formats (JSON lines, CSV quoting: a tab-separated line needs no
//! escaping for any key, and values may hold tabs), and values of list type (`append` makes
//! lists).

use std::path::{Path, PathBuf};

use futures::stream::{self, Stream};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::output::Output;
use super::progress::{Progress, Shape};
use super::EXIT_OK;
use crate::client::{Client, LoadReport, LOAD_CONCURRENCY_DEFAULT, LOAD_CONCURRENCY_MAX};
use crate::errinput;
use crate::error::{Error, Result};
use crate::net::Env;
use crate::types::{check_key, check_value, Key, Value, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Largest FILE `load` reads (it is held in memory, checked whole, before the first write);
/// a larger input goes through standard input, which is streamed.
pub const LOAD_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Longest line read from standard input: a key and a value at their limits, the tab and a
/// `\r\n`. A longer line is an input error, found before it is all in memory.
pub const LOAD_LINE_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX + 3;
/// Failed keys named on stderr, with their reason, as they fail; the rest are counted.
pub const LOAD_FAILURES_SHOWN_MAX: usize = 10;

/// `client load`'s flags.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The pairs, one `KEY<TAB>VALUE` a line; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Writes in flight at once.
    #[arg(
        long,
        default_value_t = LOAD_CONCURRENCY_DEFAULT as u64,
        value_parser = clap::value_parser!(u64).range(1..=LOAD_CONCURRENCY_MAX as u64)
    )]
    pub concurrency: u64,
}

/// Where the pairs come from.
enum Source {
    File(PathBuf),
    Stdin,
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Stdin => "standard input".to_string(),
        }
    }
}

/// Runs `client load`; returns the exit code.
pub async fn run(client: &Client, args: LoadArgs, env: &Env, out: Output) -> Result<u8> {
    let source = match &args.file {
        Some(path) if path.as_os_str() != "-" => Source::File(path.clone()),
        _ => Source::Stdin,
    };
    let name = source.name();
    let concurrency = usize::try_from(args.concurrency).unwrap_or(LOAD_CONCURRENCY_MAX);
    let (report, total) = match &source {
        Source::File(path) => {
            let pairs = read_file(path).await?;
            let total = pairs.len() as u64;
            let pairs = stream::iter(pairs.into_iter().map(Ok));
            (
                load_showing(client, pairs, concurrency, Some(total), &name, env, out).await,
                Some(total),
            )
        }
        Source::Stdin => {
            let pairs = read_stream(BufReader::new(tokio::io::stdin()), name.clone());
            (
                load_showing(client, pairs, concurrency, None, &name, env, out).await,
                None,
            )
        }
    };
    if let Some(err) = &report.stopped_by {
        return Err(errinput!(
            "{}; stopped there: {} pairs were already written ({} failed)",
            message_of(err),
            report.written,
            report.failed
        ));
    }
    print_summary(&report, total, &name, out);
    match report.failures.first() {
        None => Ok(EXIT_OK),
        // With --json, the first failure is the error document on stderr, as for any failed
        // command; without, every shown failure is already on stderr.
        Some((_, err)) if out.json => Ok(out.error(err)),
        Some((_, err)) => Ok(err.exit_code()),
    }
}

/// [`Client::load`] with its progress and failures shown on stderr.
async fn load_showing(
    client: &Client,
    pairs: impl Stream<Item = Result<(Key, Value)>>,
    concurrency: usize,
    total: Option<u64>,
    name: &str,
    env: &Env,
    out: Output,
) -> LoadReport {
    let shape = if total.is_some() {
        Shape::Bar
    } else {
        Shape::Spinner
    };
    let mut progress = Progress::new(out, shape, env);
    let line = |written: u64, failed: u64| match total {
        Some(total) => {
            format!("loading {name}: {written} of {total} pairs written, {failed} failed")
        }
        None => format!("loading {name}: {written} pairs written, {failed} failed"),
    };
    progress.update(0, total, line(0, 0));
    let report = client
        .load(pairs, concurrency, |now| {
            if let Some((key, err)) = now.failure {
                if now.failed <= LOAD_FAILURES_SHOWN_MAX as u64 {
                    progress.println(&format!("failed: {key:?}: {err}"));
                }
            }
            let done = now.written.saturating_add(now.failed);
            progress.update(done, total, line(now.written, now.failed));
        })
        .await;
    if report.failed > LOAD_FAILURES_SHOWN_MAX as u64 {
        progress.println(&format!(
            "... and {} more keys failed",
            report.failed - LOAD_FAILURES_SHOWN_MAX as u64
        ));
    }
    progress.finish();
    report
}

fn print_summary(report: &LoadReport, total: Option<u64>, name: &str, out: Output) {
    let seconds = report.elapsed.as_secs_f64();
    let failures: Vec<_> = report
        .failures
        .iter()
        .take(LOAD_FAILURES_SHOWN_MAX)
        .map(|(key, err)| json!({"key": key, "kind": err.kind(), "message": err.to_string()}))
        .collect();
    out.ok(
        format!(
            "loaded {} keys in {seconds:.2} s ({:.0} keys/s), {} failed",
            report.written,
            report.keys_per_s(),
            report.failed
        ),
        json!({
            "source": name, "pairs": total, "loaded": report.written, "failed": report.failed,
            "seconds": seconds, "keys_per_s": report.keys_per_s(), "failures": failures,
        }),
    );
}

/// The message of an input error without the `invalid request: ` of its display.
fn message_of(err: &Error) -> String {
    match err {
        Error::InvalidRequest(message) => message.clone(),
        other => other.to_string(),
    }
}

/// Every pair of the file at `path`, checked: an error names the first bad line.
async fn read_file(path: &Path) -> Result<Vec<(Key, Value)>> {
    let shown = path.display();
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|err| errinput!("cannot read {shown}: {err}"))?;
    if metadata.len() > LOAD_FILE_BYTES_MAX {
        return Err(errinput!(
            "{shown} is {} bytes, over the {LOAD_FILE_BYTES_MAX} bytes `load` reads from a file \
             (it checks a file whole before writing); stream it instead: `client load - < {shown}`",
            metadata.len()
        ));
    }
    let mut text = Vec::new();
    tokio::fs::File::open(path)
        .await
        .map_err(|err| errinput!("cannot read {shown}: {err}"))?
        .take(LOAD_FILE_BYTES_MAX.saturating_add(1))
        .read_to_end(&mut text)
        .await
        .map_err(|err| errinput!("cannot read {shown}: {err}"))?;
    if text.len() as u64 > LOAD_FILE_BYTES_MAX {
        return Err(errinput!(
            "{shown} grew past {LOAD_FILE_BYTES_MAX} bytes while being read"
        ));
    }
    let name = shown.to_string();
    let mut pairs = Vec::new();
    for (index, line) in text.split(|byte| *byte == b'\n').enumerate() {
        let number = index as u64 + 1;
        if let Some(pair) = parse_line(line, number, &name)? {
            pairs.push(pair);
        }
    }
    Ok(pairs)
}

/// The pairs of `reader`, read a line at a time as they are asked for: a bad line is the last
/// item, an error naming it.
fn read_stream<R>(reader: BufReader<R>, name: String) -> impl Stream<Item = Result<(Key, Value)>>
where
    R: AsyncRead + Unpin,
{
    struct Reading<R> {
        reader: BufReader<R>,
        name: String,
        number: u64,
        done: bool,
    }
    let start = Reading {
        reader,
        name,
        number: 0,
        done: false,
    };
    stream::unfold(start, |mut reading| async move {
        if reading.done {
            return None;
        }
        let mut line = Vec::new();
        loop {
            line.clear();
            reading.number = reading.number.saturating_add(1);
            let limit = LOAD_LINE_BYTES_MAX as u64 + 1;
            let read = (&mut reading.reader)
                .take(limit)
                .read_until(b'\n', &mut line)
                .await;
            let item = match read {
                Ok(0) => return None,
                Ok(_) if line.len() > LOAD_LINE_BYTES_MAX => Err(errinput!(
                    "line {} of {} is longer than {LOAD_LINE_BYTES_MAX} bytes: no key and value \
                     within the limits ({KEY_BYTES_MAX} and {VALUE_BYTES_MAX} bytes) make one",
                    reading.number,
                    reading.name
                )),
                Ok(_) => match parse_line(&line, reading.number, &reading.name) {
                    Ok(None) => continue,
                    Ok(Some(pair)) => Ok(pair),
                    Err(err) => Err(err),
                },
                Err(err) => Err(errinput!(
                    "cannot read line {} of {}: {err}",
                    reading.number,
                    reading.name
                )),
            };
            reading.done = item.is_err();
            return Some((item, reading));
        }
    })
}

/// One line (with or without its `\n`) as a pair; `None` for an empty line.
fn parse_line(line: &[u8], number: u64, name: &str) -> Result<Option<(Key, Value)>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Ok(None);
    }
    let bad = |what: String| errinput!("line {number} of {name}: {what}");
    let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8 text".to_string()))?;
    let Some((key, value)) = text.split_once('\t') else {
        return Err(bad(
            "no tab between the key and the value (each line is KEY<TAB>VALUE)".to_string(),
        ));
    };
    check_key(key).map_err(|err| bad(message_of(&err)))?;
    let value = Value::Text(value.to_string());
    check_value(&value).map_err(|err| bad(message_of(&err)))?;
    Ok(Some((key.to_string(), value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn a_line_is_a_key_a_tab_and_the_rest_verbatim() {
        let pair = |line: &str| parse_line(line.as_bytes(), 1, "f");
        assert_eq!(
            pair("k\tv\tw x\n").unwrap(),
            Some(("k".to_string(), Value::Text("v\tw x".to_string())))
        );
        assert_eq!(
            pair("k\t\r\n").unwrap(),
            Some(("k".to_string(), Value::Text(String::new())))
        );
        assert_eq!(pair("\r\n").unwrap(), None);
        assert_eq!(pair("").unwrap(), None);
        let err = pair("no tab here").unwrap_err().to_string();
        assert!(
            err.contains("line 1 of f") && err.contains("no tab"),
            "{err}"
        );
        let err = pair("\tvalue").unwrap_err().to_string();
        assert!(err.contains("key is empty"), "{err}");
        let long_key = "k".repeat(KEY_BYTES_MAX + 1);
        let err = pair(&format!("{long_key}\tv")).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
    }

    #[tokio::test]
    async fn standard_input_stops_at_its_first_bad_line_and_skips_empty_ones() {
        let input: &[u8] = b"a\t1\n\nb\t2\nbad line\nc\t3\n";
        let items: Vec<_> = read_stream(BufReader::new(input), "stdin".into())
            .collect()
            .await;
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(items[1].as_ref().unwrap().0, "b");
        let err = items[2].as_ref().unwrap_err().to_string();
        assert!(err.contains("line 4 of stdin"), "{err}");
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_refused_before_it_is_all_read() {
        let mut input = vec![b'k'; LOAD_LINE_BYTES_MAX + 10];
        input.push(b'\n');
        let items: Vec<_> = read_stream(BufReader::new(&input[..]), "stdin".into())
            .collect()
            .await;
        assert_eq!(items.len(), 1);
        let err = items[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("line 1 of stdin is longer"), "{err}");
    }
}
