//! The only place that opens sockets, so a simulated network could stand in for it.

use std::ops::RangeInclusive;

use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};

/// Ports a storage server tries in turn when not told one (the course's range).
pub const SERVER_PORTS: RangeInclusive<u16> = 38000..=38010;
/// Ports a view leader tries in turn when not told one.
pub const VIEWLEADER_PORTS: RangeInclusive<u16> = 39000..=39010;

/// Dials `addr` (`host:port`) with Nagle off: our messages are small and latency-bound.
pub async fn connect(addr: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|err| Error::Unreachable(format!("cannot connect to {addr}: {err}")))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Binds `host:port`, or with no port given the first free port of `range`. Port 0 takes any
/// free port.
pub async fn bind(
    host: &str,
    port: Option<u16>,
    range: RangeInclusive<u16>,
) -> Result<TcpListener> {
    if let Some(port) = port {
        return TcpListener::bind((host, port))
            .await
            .map_err(|err| Error::Unreachable(format!("cannot listen on {host}:{port}: {err}")));
    }
    let mut last_err = None;
    for port in range.clone() {
        match TcpListener::bind((host, port)).await {
            Ok(listener) => return Ok(listener),
            Err(err) => last_err = Some(err),
        }
    }
    Err(Error::Unreachable(format!(
        "no free port in {}-{} on {host}: {}",
        range.start(),
        range.end(),
        last_err.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// The addresses to try for a target given as `host[:port]`: the one address if it has a port,
/// else `host` at every port of `range` in turn (as the course's client does).
pub fn candidates(target: &str, range: RangeInclusive<u16>) -> Result<Vec<String>> {
    let target = target.trim();
    if target.is_empty() {
        return Err(Error::InvalidRequest("empty address".into()));
    }
    // A bracketed IPv6 literal, or host:port with a numeric port.
    if let Some((host, port)) = target.rsplit_once(':') {
        let bracketed_v6 = target.starts_with('[') && host.ends_with(']');
        let plain = !host.contains(':');
        if bracketed_v6 || plain {
            let port: u16 = port
                .parse()
                .map_err(|_| Error::InvalidRequest(format!("bad port in address {target:?}")))?;
            let host = if host.is_empty() { "localhost" } else { host };
            return Ok(vec![format!("{host}:{port}")]);
        }
    }
    Ok(range.map(|port| format!("{target}:{port}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_port_expands_to_the_whole_range() {
        let all = candidates("localhost", 38000..=38002).unwrap();
        assert_eq!(
            all,
            vec!["localhost:38000", "localhost:38001", "localhost:38002"]
        );
    }

    #[test]
    fn a_host_with_port_is_taken_as_is() {
        assert_eq!(
            candidates("127.0.0.1:5", 1..=2).unwrap(),
            vec!["127.0.0.1:5"]
        );
        assert_eq!(candidates(":5", 1..=2).unwrap(), vec!["localhost:5"]);
        assert!(candidates("h:notaport", 1..=2).is_err());
    }
}
