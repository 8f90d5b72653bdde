//! `client load` through real processes (issue 17): a file of KEY<TAB>VALUE lines is checked
//! whole and then written with setr, a bounded number at once; standard input is streamed and
//! stops at its first bad line; progress lines go to stderr (not a terminal here) and nowhere
//! with `--json`; each failed key is named with its reason and the exit code is its error's.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{ClientRun, TestCluster, CLIENT_BIN, CLIENT_RUN_TIMEOUT, EXPIRY_TIMEOUT, POLL};

/// Pairs in the file of the main test.
const PAIRS: usize = 300;
/// Every this many keys one is read back.
const SAMPLE_EVERY: usize = 6;

/// The value of pair `i`: with a tab inside, which must come back verbatim.
fn value_of(i: usize) -> String {
    format!("value {i}\twith a tab")
}

/// `count` lines `PREFIX-i<TAB>value`, from `first`.
fn pairs_text(prefix: &str, first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("{prefix}-{i}\t{}\n", value_of(i)))
        .collect()
}

fn write_file(cluster: &TestCluster, name: &str, text: &str) -> String {
    let path = cluster.dir().join(name);
    std::fs::write(&path, text).expect("write the input file");
    path.display().to_string()
}

/// Runs `client --viewleader ADDR ARGS` with `input` on its standard input, bounded by
/// [`CLIENT_RUN_TIMEOUT`] (the harness gives its clients no standard input).
fn client_with_stdin(cluster: &TestCluster, args: &[&str], input: &str) -> ClientRun {
    let mut full = vec!["--viewleader".to_string(), cluster.viewleader_addr()];
    full.extend(args.iter().map(|a| a.to_string()));
    let mut child = Command::new(CLIENT_BIN)
        .args(&full)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RINGLEADER_VIEWLEADER")
        .env_remove("RINGLEADER_CLUSTER")
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    // The client may stop reading (a bad line): a write error then is expected.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + CLIENT_RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "`client {}` did not finish in {CLIENT_RUN_TIMEOUT:?}",
                full.join(" ")
            );
        }
        std::thread::sleep(POLL);
    };
    let _ = writer.join();
    ClientRun {
        args: full,
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader").trim_end().to_string(),
        stderr: stderr.join().expect("stderr reader").trim_end().to_string(),
    }
}

#[test]
fn a_file_of_pairs_loads_and_every_key_reads_back() {
    let mut cluster = TestCluster::start(3);
    let file = write_file(&cluster, "pairs.tsv", &pairs_text("key", 0, PAIRS));
    let run = cluster.client(&["load", &file, "--concurrency", "8"]);
    run.expect_ok();
    assert!(
        run.stdout.starts_with(&format!("loaded {PAIRS} keys in "))
            && run.stdout.ends_with("keys/s), 0 failed"),
        "{run:?}"
    );
    // Progress lines on stderr, as it is not a terminal here: the first one at once, the last
    // one where the load ended.
    assert!(
        run.stderr.contains(&format!(
            "loading {file}: 0 of {PAIRS} pairs written, 0 failed"
        )),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&format!(
            "loading {file}: {PAIRS} of {PAIRS} pairs written, 0 failed"
        )),
        "{run:?}"
    );
    for i in (0..PAIRS).step_by(SAMPLE_EVERY) {
        assert_eq!(
            cluster.getr_text(&format!("key-{i}")),
            Some(value_of(i)),
            "key-{i} after the load"
        );
    }
    assert_eq!(
        cluster.getr_text(&format!("key-{}", PAIRS - 1)),
        Some(value_of(PAIRS - 1))
    );

    // With --json: one document on stdout, nothing at all on stderr.
    let file = write_file(&cluster, "more.tsv", &pairs_text("more", 0, 40));
    let run = cluster.client(&["--json", "load", &file]);
    run.expect_ok();
    let doc = run.json();
    assert_eq!(doc["loaded"], 40, "{doc}");
    assert_eq!(doc["failed"], 0, "{doc}");
    assert_eq!(doc["pairs"], 40, "{doc}");
    assert!(doc["keys_per_s"].as_f64().is_some(), "{doc}");
    assert!(run.stderr.is_empty(), "{run:?}");
    assert_eq!(cluster.getr_text("more-39"), Some(value_of(39)));

    // Writes that fail are each named with their reason (the first few, then a count), and the
    // exit code is their error's: with no server left, every setr is unreachable (3).
    for number in 0..3 {
        cluster.kill_server(number);
    }
    cluster.wait_for_view(EXPIRY_TIMEOUT, "every server expired", |view| {
        if view.servers.is_empty() {
            Ok(())
        } else {
            Err("servers left".to_string())
        }
    });
    let file = write_file(&cluster, "doomed.tsv", &pairs_text("doomed", 0, 30));
    let run = cluster.client(&["load", &file]);
    run.expect_code(3);
    assert!(run.stdout.ends_with("), 30 failed"), "{run:?}");
    assert!(run.stdout.starts_with("loaded 0 keys"), "{run:?}");
    let named = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("failed: \"doomed-") && line.contains("unreachable"))
        .count();
    assert_eq!(named, 10, "{run:?}");
    assert!(
        run.stderr.contains("... and 20 more keys failed"),
        "{run:?}"
    );
    let run = cluster.client(&["--json", "load", &file]);
    run.expect_code(3);
    assert_eq!(run.json()["failed"], 30, "{run:?}");
    assert_eq!(run.error_json().0, "unreachable", "{run:?}");
}

#[test]
fn a_bad_line_in_a_file_is_named_and_nothing_is_written() {
    let cluster = TestCluster::start(3);
    // Line 51 has no tab; the lines before it are good.
    let mut text = pairs_text("early", 0, 50);
    text.push_str("this line has no tab\n");
    text.push_str(&pairs_text("late", 0, 10));
    let file = write_file(&cluster, "bad.tsv", &text);
    let run = cluster.client(&["load", &file]);
    run.expect_code(5);
    assert!(
        run.stderr.contains(&format!("line 51 of {file}: no tab")),
        "{run:?}"
    );
    assert_eq!(
        cluster.getr_text("early-0"),
        None,
        "a bad file writes nothing"
    );
    assert_eq!(
        cluster.getr_text("early-49"),
        None,
        "a bad file writes nothing"
    );

    // An empty key, and a key over the limit, are input errors naming their line too (empty
    // lines are skipped, but counted).
    let file = write_file(&cluster, "empty-key.tsv", "a\t1\n\n\tvalue\n");
    let run = cluster.client(&["load", &file]);
    run.expect_code(5);
    assert!(run.stderr.contains("line 3 of"), "{run:?}");
    assert!(run.stderr.contains("key is empty"), "{run:?}");
    let long_key = "k".repeat(ringleader::types::KEY_BYTES_MAX + 1);
    let file = write_file(&cluster, "long-key.tsv", &format!("a\t1\n{long_key}\tv\n"));
    let run = cluster.client(&["load", &file]);
    run.expect_code(5);
    assert!(run.stderr.contains("line 2 of"), "{run:?}");
    assert_eq!(cluster.getr_text("a"), None);

    // A file that cannot be read is an input error as well.
    let missing = cluster.dir().join("missing.tsv").display().to_string();
    let run = cluster.client(&["load", &missing]);
    run.expect_code(5);
    assert!(run.stderr.contains("cannot read"), "{run:?}");

    // A file over the bound is refused before it is read, pointing at standard input (the
    // file is sparse: it takes no room on disk).
    let huge = cluster.dir().join("huge.tsv");
    std::fs::File::create(&huge)
        .and_then(|file| file.set_len(ringleader::cli::load::LOAD_FILE_BYTES_MAX + 1))
        .expect("make a sparse file");
    let run = cluster.client(&["load", &huge.display().to_string()]);
    run.expect_code(5);
    assert!(
        run.stderr.contains(&format!(
            "over the {} bytes",
            ringleader::cli::load::LOAD_FILE_BYTES_MAX
        )) && run.stderr.contains("client load - <"),
        "{run:?}"
    );

    // More writes at once than the maximum is a usage error, before anything is read.
    let too_many = (ringleader::client::LOAD_CONCURRENCY_MAX + 1).to_string();
    let run = cluster.client(&["load", &file, "--concurrency", &too_many]);
    run.expect_code(2);
    assert!(run.stderr.contains("--concurrency"), "{run:?}");
    let run = cluster.client(&["load", &file, "--concurrency", "0"]);
    run.expect_code(2);
}

#[test]
fn standard_input_is_streamed_and_stops_at_its_first_bad_line() {
    let cluster = TestCluster::start(3);
    let run = client_with_stdin(&cluster, &["load"], &pairs_text("piped", 0, 100));
    run.expect_ok();
    assert!(run.stdout.starts_with("loaded 100 keys"), "{run:?}");
    assert!(
        run.stderr
            .contains("loading standard input: 100 pairs written, 0 failed"),
        "{run:?}"
    );
    for i in (0..100).step_by(10) {
        assert_eq!(cluster.getr_text(&format!("piped-{i}")), Some(value_of(i)));
    }

    // `-` is standard input too. Line 21 is bad: the 20 before it are written, nothing after.
    let mut text = pairs_text("streamed", 0, 20);
    text.push_str("no tab on line 21\n");
    text.push_str(&pairs_text("streamed", 20, 10));
    let run = client_with_stdin(&cluster, &["load", "-"], &text);
    run.expect_code(5);
    assert!(
        run.stderr.contains("line 21 of standard input: no tab")
            && run.stderr.contains("20 pairs were already written"),
        "{run:?}"
    );
    assert_eq!(cluster.getr_text("streamed-0"), Some(value_of(0)));
    assert_eq!(cluster.getr_text("streamed-19"), Some(value_of(19)));
    assert_eq!(cluster.getr_text("streamed-20"), None);
    assert_eq!(cluster.getr_text("streamed-29"), None);
}
