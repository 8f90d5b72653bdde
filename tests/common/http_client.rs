//! The tests' one HTTP/1.1 client, over `std::net::TcpStream`: one request per connection
//! (`Connection: close`), any headers, the whole response read to the end. [`request`] tells a
//! connection closed without a byte of response apart from other failures (the log contract of
//! tests/http.rs needs it); [`http`] folds both into an error for tests that only want a response.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Time allowed for the connect and for every read and write.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read, in bytes (the gateway's pages are a few KiB, its lists a few MiB).
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) {:?}",
            self.status,
            self.content_type(),
            self.text()
        )
    }
}

/// What one request got.
#[derive(Debug)]
pub enum Reply {
    /// An HTTP response.
    Answered(Response),
    /// The connection was closed (or reset) before a single byte of response.
    Closed,
    /// No connection, a timeout, or a garbled response.
    Failed(String),
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Answered(response) => write!(f, "response {response}"),
            Reply::Closed => write!(f, "connection closed without a response"),
            Reply::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Sends `method path` to `addr` with `headers` and `body`; any answer but a response is an
/// `Err` saying what went wrong.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response, String> {
    match request(addr, method, path, headers, body.as_bytes()) {
        Reply::Answered(response) => Ok(response),
        other => Err(format!("{method} {path} on {addr}: {other}")),
    }
}

fn closed_kind(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// One request on a fresh connection, with [`HTTP_TIMEOUT`] on the connect and on every read
/// and write.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let Some(sock) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return Reply::Failed(format!("cannot resolve {addr}"));
    };
    let mut stream = match TcpStream::connect_timeout(&sock, HTTP_TIMEOUT) {
        Ok(stream) => stream,
        Err(err) => return Reply::Failed(format!("connect to {addr}: {err}")),
    };
    let _ = stream.set_read_timeout(Some(HTTP_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HTTP_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    if let Err(err) = stream.write_all(&out) {
        return if closed_kind(&err) {
            Reply::Closed
        } else {
            Reply::Failed(format!("write: {err}"))
        };
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if raw.len() + n > RESPONSE_BYTES_MAX => {
                return Reply::Failed(format!("a response over {RESPONSE_BYTES_MAX} bytes"));
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) if raw.is_empty() && closed_kind(&err) => return Reply::Closed,
            Err(err) => {
                return Reply::Failed(format!("read after {} bytes: {err}", raw.len()));
            }
        }
    }
    if raw.is_empty() {
        return Reply::Closed;
    }
    match parse(&raw) {
        Ok(response) => Reply::Answered(response),
        Err(why) => Reply::Failed(format!("{why}: {:?}", String::from_utf8_lossy(&raw))),
    }
}

fn parse(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the header")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "a header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or("").starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(&response.body)?;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().map_err(|_| "bad Content-Length")?;
        if response.body.len() < length {
            return Err(format!(
                "body of {} bytes, Content-Length {length}",
                response.body.len()
            ));
        }
        response.body.truncate(length);
    }
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
