//! The `probe` workload: the loopback round-trip floor. A TCP echo task on 127.0.0.1 and one
//! client sending a small message and reading it back, over and over on one connection (Nagle
//! off on both ends). No request can be served faster than this on this machine, so it stands
//! next to the results as the physical floor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{new_histogram, Stop};
use crate::error::{Error, Result};

/// Bytes per probe message: about the size of a small request.
pub const PROBE_MESSAGE_BYTES: usize = 64;

/// Runs `warmup` unmeasured round trips, then round trips until `stop`; returns their latency
/// histogram (µs), how many failed (a failure ends the probe: the connection is gone) and how
/// long the measured round trips took.
pub async fn run(
    warmup: u64,
    stop: Stop,
    completed: Arc<AtomicU64>,
) -> Result<(Histogram<u64>, u64, Duration)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|err| Error::Internal(format!("probe: bind: {err}")))?;
    let addr = listener
        .local_addr()
        .map_err(|err| Error::Internal(format!("probe: {err}")))?;
    let echo = tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let mut buf = vec![0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let outcome = round_trips(&addr.to_string(), warmup, stop, completed).await;
    echo.abort();
    outcome
}

async fn round_trips(
    addr: &str,
    warmup: u64,
    stop: Stop,
    completed: Arc<AtomicU64>,
) -> Result<(Histogram<u64>, u64, Duration)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|err| Error::Unreachable(format!("probe: {err}")))?;
    stream
        .set_nodelay(true)
        .map_err(|err| Error::Internal(format!("probe: {err}")))?;
    let message = [b'p'; PROBE_MESSAGE_BYTES];
    let mut reply = [0u8; PROBE_MESSAGE_BYTES];
    for _ in 0..warmup {
        round_trip(&mut stream, &message, &mut reply).await?;
    }
    let mut histogram = new_histogram()?;
    let started = Instant::now();
    let mut done = 0u64;
    while stop.more(done, started) {
        let begun = Instant::now();
        if round_trip(&mut stream, &message, &mut reply).await.is_err() {
            return Ok((histogram, 1, started.elapsed()));
        }
        let _ = histogram.record(begun.elapsed().as_micros().max(1) as u64);
        done += 1;
        completed.fetch_add(1, Ordering::Relaxed);
    }
    Ok((histogram, 0, started.elapsed()))
}

async fn round_trip(stream: &mut TcpStream, message: &[u8], reply: &mut [u8]) -> Result<()> {
    let broken = |err: std::io::Error| Error::Unreachable(format!("probe: {err}"));
    stream.write_all(message).await.map_err(broken)?;
    stream.read_exact(reply).await.map_err(broken)?;
    if reply != message {
        return Err(Error::Protocol(
            "probe echo differs from the message".into(),
        ));
    }
    Ok(())
}
