//! Bearer tokens on the HTTP pages (`--http-token-file`, `--http-read-open`): one check,
//! [`require`], layered over every router of [`super`], the gateway's and the view leader's.
//!
//! Without a token file nothing changes: every route answers whoever connects (the gateway is
//! then for loopback and trusted networks only). With one, each request falls in one of three
//! classes ([`access_of`]):
//!
//! * **open**: `GET /health` and `GET /ready`, always, for load balancers and container checks,
//!   which carry no credentials and reveal nothing but up/ready;
//! * **read**: `GET /keys/{key}`, the only route that only reads data; it needs the token
//!   unless `--http-read-open` is given;
//! * **write and admin**: everything else (`POST /keys/..`, the log's `PUT /`, `/crash`,
//!   `/recover`, `/exit`, `/admin/status`, `/metrics`, and any path no route knows), always
//!   with the token. Unknown paths are closed rather than open, so a route added later is
//!   protected until someone decides otherwise.
//!
//! A refused request gets `401` with `WWW-Authenticate: Bearer` (RFC 6750) and a one-line
//! reason, and reaches no handler, so nothing is written. The token is compared in constant time
//! ([`constant_time_eq`]); it is never logged, and its `Debug` form hides it.
//!
//! Deliberately left out: several tokens or scopes (one token for all writes; reads are either
//! open or behind the same token), token rotation without a restart, and rate limiting of
//! wrong guesses (a 16-byte random token is not guessable over HTTP). The token crosses the
//! wire in clear unless the gateway runs behind TLS.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use axum::middleware::Next;
use tracing::{info, warn};

use crate::errinput;
use crate::error::Result;

/// Shortest token accepted, in bytes: 16 random bytes (32 hex digits make 32) cannot be
/// guessed one HTTP request at a time; anything shorter is probably a placeholder or a password.
pub const HTTP_TOKEN_BYTES_MIN: usize = 16;
/// Largest token file read, in bytes: a token is one line, so a bigger file is the wrong file
/// (a key, a log), and reading it whole could take any amount of memory.
pub const HTTP_TOKEN_FILE_BYTES_MAX: u64 = 4096;
/// The environment variable `--http-token-file` falls back to.
pub const HTTP_TOKEN_FILE_ENV: &str = "RINGLEADER_HTTP_TOKEN_FILE";
/// The realm named in `WWW-Authenticate`, so a client can tell which service asked.
const REALM: &str = "ringleader";

/// The bearer token, as read from `--http-token-file`. Its `Debug` hides the value, so it can
/// sit in options that are logged.
#[derive(Clone)]
pub struct HttpToken(Arc<[u8]>);

impl std::fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpToken(<{} bytes, hidden>)", self.0.len())
    }
}

impl PartialEq for HttpToken {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for HttpToken {}

impl HttpToken {
    /// A token from text: surrounding whitespace trimmed; refused if empty, shorter than
    /// [`HTTP_TOKEN_BYTES_MIN`], or holding a byte a header cannot carry. `origin` names where
    /// the text came from, for the error.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let token = text.trim();
        if token.is_empty() {
            return Err(errinput!(
                "{origin} is empty; put one token of at least {HTTP_TOKEN_BYTES_MIN} bytes in it \
                 (for example: openssl rand -hex 32 > FILE)"
            ));
        }
        if token.len() < HTTP_TOKEN_BYTES_MIN {
            return Err(errinput!(
                "{origin} holds a token of {} bytes; at least {HTTP_TOKEN_BYTES_MIN} are needed \
                 (for example: openssl rand -hex 32 > FILE)",
                token.len()
            ));
        }
        // RFC 6750 tokens are visible ASCII: anything else cannot be sent in a header as is.
        if let Some(at) = token.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(errinput!(
                "{origin} holds a byte a bearer token cannot carry at offset {at} (only visible \
                 ASCII without spaces; one token per file)"
            ));
        }
        Ok(Self(Arc::from(token.as_bytes())))
    }

    /// The token in the file at `path`, checked as [`HttpToken::parse`] does.
    pub fn from_file(path: &Path) -> Result<Self> {
        use std::io::Read;
        let origin = format!("the HTTP token file {}", path.display());
        let cannot_read = |err: std::io::Error| errinput!("cannot read {origin}: {err}");
        let file = std::fs::File::open(path).map_err(cannot_read)?;
        let metadata = file.metadata().map_err(cannot_read)?;
        if !metadata.is_file() {
            return Err(errinput!("{origin} is not a regular file"));
        }
        warn_if_others_can_read(path, &metadata);
        // Read through the open file, one byte past the bound: a file that grew since its
        // metadata was read is still caught, and never read whole.
        let mut bytes = Vec::new();
        file.take(HTTP_TOKEN_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot_read)?;
        if bytes.len() as u64 > HTTP_TOKEN_FILE_BYTES_MAX {
            return Err(errinput!(
                "{origin} has more than {HTTP_TOKEN_FILE_BYTES_MAX} bytes; a token file holds \
                 one token"
            ));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| errinput!("{origin} is not text (a token is visible ASCII)"))?;
        Self::parse(&text, &origin)
    }

    fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.0, presented)
    }
}

#[cfg(unix)]
fn warn_if_others_can_read(path: &Path, metadata: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    if metadata.permissions().mode() & 0o077 != 0 {
        warn!(path = %path.display(), "the HTTP token file can be read by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_others_can_read(_path: &Path, _metadata: &std::fs::Metadata) {}

/// Who may use an HTTP router: everybody (no token), or the holders of the token, with reads
/// open to everybody if `read_open`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpAuth {
    pub token: Option<HttpToken>,
    /// `--http-read-open`: reads need no token (writes and admin routes still do).
    pub read_open: bool,
}

impl HttpAuth {
    /// From the flags: the token in `token_file`, if given. `--http-read-open` without a token
    /// file is refused: it would suggest that something is closed.
    pub fn from_flags(token_file: Option<&Path>, read_open: bool) -> Result<Self> {
        let token = token_file.map(HttpToken::from_file).transpose()?;
        if read_open && token.is_none() {
            return Err(errinput!(
                "--http-read-open needs --http-token-file (without a token every route is open)"
            ));
        }
        let auth = Self { token, read_open };
        if auth.token.is_some() {
            info!(
                reads_open = read_open,
                "HTTP routes other than /health and /ready need the bearer token"
            );
        }
        Ok(auth)
    }

    /// Why `request` may not be served, or `None` if it may.
    pub fn refusal(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Option<Refusal> {
        let token = self.token.as_ref()?;
        match access_of(method, path) {
            Access::Open => return None,
            Access::Read if self.read_open => return None,
            Access::Read | Access::Write => {}
        }
        let Some(value) = authorization else {
            return Some(Refusal::Missing);
        };
        let Some(presented) = bearer_token(value.as_bytes()) else {
            return Some(Refusal::Malformed);
        };
        if token.matches(presented) {
            None
        } else {
            Some(Refusal::Wrong)
        }
    }
}

/// What a route does, for the token check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Health and readiness: never needs the token.
    Open,
    /// Only reads data: needs the token unless reads are open.
    Read,
    /// Writes, admin pages, fault injection, unknown paths: always needs the token.
    Write,
}

/// The class of a request (see the module doc).
pub fn access_of(method: &Method, path: &str) -> Access {
    let reads = method == Method::GET || method == Method::HEAD;
    if !reads {
        return Access::Write;
    }
    match path {
        "/health" | "/ready" => Access::Open,
        _ if path.starts_with("/keys/") => Access::Read,
        _ => Access::Write,
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Wrong,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this route needs an Authorization: Bearer TOKEN header (the server was started with --http-token-file)"
            }
            Refusal::Malformed => "the Authorization header is not of the form `Bearer TOKEN`",
            Refusal::Wrong => "the bearer token is not the one this server was started with",
        }
    }

    /// The 401 for this refusal: `WWW-Authenticate` as RFC 6750 asks (an `invalid_token` error
    /// when a token was given), and the reason as one line of text.
    pub fn response(self) -> Response<Body> {
        let challenge = match self {
            Refusal::Missing => format!("Bearer realm=\"{REALM}\""),
            Refusal::Malformed => format!("Bearer realm=\"{REALM}\", error=\"invalid_request\""),
            Refusal::Wrong => format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
        };
        let mut response = super::text(StatusCode::UNAUTHORIZED, format!("{}\n", self.reason()));
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme in any case, RFC 7235).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether `a` and `b` are equal, in a time that depends only on their lengths (never on where
/// they first differ), so that timing answers does not reveal a token byte by byte. The length
/// itself is not secret enough to hide: it only says how long a token to guess.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// The middleware: answers 401 for a request [`HttpAuth::refusal`] refuses, else passes it on.
pub async fn require(
    State(auth): State<Arc<HttpAuth>>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let refused = auth.refusal(
        request.method(),
        request.uri().path(),
        request.headers().get(header::AUTHORIZATION),
    );
    match refused {
        Some(refusal) => {
            // The path and the reason only: never the header, which may hold a near-miss token.
            warn!(
                path = request.uri().path(),
                ?refusal,
                "HTTP request refused: bearer token"
            );
            refusal.response()
        }
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn auth(read_open: bool) -> HttpAuth {
        HttpAuth {
            token: Some(HttpToken::parse(TOKEN, "test").unwrap()),
            read_open,
        }
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[test]
    fn without_a_token_every_route_is_open() {
        let open = HttpAuth::default();
        for (method, path) in [
            (Method::POST, "/crash"),
            (Method::PUT, "/"),
            (Method::GET, "/metrics"),
        ] {
            assert_eq!(open.refusal(&method, path, None), None, "{method} {path}");
        }
    }

    #[test]
    fn writes_and_admin_routes_need_the_right_token() {
        let auth = auth(true);
        for (method, path) in [
            (Method::POST, "/keys/a"),
            (Method::PUT, "/"),
            (Method::POST, "/crash"),
            (Method::POST, "/recover"),
            (Method::POST, "/exit"),
            (Method::GET, "/admin/status"),
            (Method::GET, "/metrics"),
            (Method::GET, "/no/such/route"),
            (Method::DELETE, "/keys/a"),
        ] {
            assert_eq!(
                auth.refusal(&method, path, None),
                Some(Refusal::Missing),
                "{method} {path}"
            );
            let wrong = bearer("0123456789abcdef0124");
            assert_eq!(
                auth.refusal(&method, path, Some(&wrong)),
                Some(Refusal::Wrong),
                "{method} {path}"
            );
            assert_eq!(
                auth.refusal(&method, path, Some(&bearer(TOKEN))),
                None,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn reads_need_the_token_unless_reads_are_open_and_health_never_does() {
        let closed = auth(false);
        let open = auth(true);
        assert_eq!(
            closed.refusal(&Method::GET, "/keys/a", None),
            Some(Refusal::Missing)
        );
        assert_eq!(open.refusal(&Method::GET, "/keys/a", None), None);
        for path in ["/health", "/ready"] {
            assert_eq!(closed.refusal(&Method::GET, path, None), None, "{path}");
        }
        // A write to a health path is no health check.
        assert_eq!(
            closed.refusal(&Method::POST, "/health", None),
            Some(Refusal::Missing)
        );
    }

    #[test]
    fn the_authorization_header_must_be_a_bearer_token() {
        let auth = auth(false);
        let header = |value: &str| HeaderValue::from_str(value).unwrap();
        let ask = |value: &str| auth.refusal(&Method::PUT, "/", Some(&header(value)));
        assert_eq!(
            ask(&format!("bearer {TOKEN}")),
            None,
            "the scheme is case-insensitive"
        );
        assert_eq!(ask(&format!("Basic {TOKEN}")), Some(Refusal::Malformed));
        assert_eq!(ask("Bearer"), Some(Refusal::Malformed));
        assert_eq!(ask("Bearer "), Some(Refusal::Malformed));
        assert_eq!(ask(TOKEN), Some(Refusal::Malformed));
        assert_eq!(ask(&format!("Bearer {TOKEN}x")), Some(Refusal::Wrong));
        assert_eq!(
            ask(&format!("Bearer {}", &TOKEN[1..])),
            Some(Refusal::Wrong)
        );
    }

    #[test]
    fn a_refusal_is_a_401_with_a_bearer_challenge() {
        for refusal in [Refusal::Missing, Refusal::Malformed, Refusal::Wrong] {
            let response = refusal.response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let challenge = response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap();
            assert!(challenge.starts_with("Bearer realm="), "{challenge}");
        }
    }

    /// The layer as the routers apply it: a refused request reaches no handler.
    #[tokio::test]
    async fn the_layer_answers_401_before_any_handler_runs() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tower::ServiceExt;
        let handled = Arc::new(AtomicUsize::new(0));
        let counter = handled.clone();
        let router = axum::Router::new()
            .route(
                "/keys/{*key}",
                axum::routing::post(move || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    "stored"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(auth(false)),
                require,
            ));
        let post = |authorization: Option<String>| {
            let mut request = Request::builder().method(Method::POST).uri("/keys/a");
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            request.body(Body::from("[\"x\"]")).unwrap()
        };
        let refused = router.clone().oneshot(post(None)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().contains_key(header::WWW_AUTHENTICATE));
        let wrong = Some("Bearer 0123456789abcdef012X".to_string());
        let refused = router.clone().oneshot(post(wrong)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            handled.load(Ordering::SeqCst),
            0,
            "a refused request reached the handler"
        );
        let right = Some(format!("Bearer {TOKEN}"));
        let served = router.oneshot(post(right)).await.unwrap();
        assert_eq!(served.status(), StatusCode::OK);
        assert_eq!(handled.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn tokens_compare_equal_only_when_every_byte_and_the_length_match() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abcdef", b"bbcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcde"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason_and_good_ones_trimmed() {
        let refused = |text: &str| {
            HttpToken::parse(text, "the file F")
                .unwrap_err()
                .to_string()
        };
        assert!(refused("").contains("the file F is empty"));
        assert!(refused(" \n\t").contains("is empty"));
        assert!(refused("short").contains("token of 5 bytes; at least 16"));
        assert!(refused("0123456789abcdef 0123").contains("cannot carry"));
        assert!(refused("0123456789abcdef\n0123").contains("one token per file"));
        let token = HttpToken::parse(&format!("  {TOKEN}\n"), "f").unwrap();
        assert!(token.matches(TOKEN.as_bytes()));
        assert!(
            !format!("{token:?}").contains(TOKEN),
            "Debug hides the token"
        );
    }

    #[test]
    fn token_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{TOKEN}\n")).unwrap();
        let auth = HttpAuth::from_flags(Some(&good), false).unwrap();
        assert_eq!(auth.token, Some(HttpToken::parse(TOKEN, "x").unwrap()));
        let missing = dir.path().join("missing");
        let err = HttpAuth::from_flags(Some(&missing), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the HTTP token file"), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; HTTP_TOKEN_FILE_BYTES_MAX as usize + 1]).unwrap();
        let err = HttpAuth::from_flags(Some(&big), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("one token"), "{err}");
        let err = HttpAuth::from_flags(Some(dir.path()), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        let err = HttpAuth::from_flags(None, true).unwrap_err().to_string();
        assert!(
            err.contains("--http-read-open needs --http-token-file"),
            "{err}"
        );
    }
}
