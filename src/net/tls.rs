//! TLS on every socket of a node, on request (`--tls-cert`, `--tls-key`, `--tls-ca`).
//!
//! [`with_tls`] wraps the [`Transport`] of an [`Env`]: every connection the node dials does TCP
//! and then a TLS client handshake, and every listener it binds (the RPC port and the HTTP
//! gateway, which both bind through the `Env`) speaks TLS. It is mutual TLS: each end presents a
//! certificate signed by the cluster's CA and checks the other's against that CA alone. A caller
//! checks the certificate of the address it dials (the host part of `host:port`, an IP address
//! or a DNS name); a listener asks every caller for a certificate and refuses one without it
//! (rustls's `WebPkiClientVerifier`). The crypto is rustls with ring: no system library.
//!
//! A listener hands out each connection at once and does the server handshake on the
//! connection's first read or write, so a peer that stalls its handshake never holds up the
//! accept loop: the RPC hello timeout bounds it like any slow peer, and
//! [`HANDSHAKE_TIMEOUT_MS`] bounds it on every port.
//! A peer that speaks plain TCP to a TLS port is told so in its own language (a ringleader error
//! frame, or an HTTP 400) before the connection closes, and a failed handshake on the dialling
//! side says which address failed and why, in rustls's words.
//!
//! # Deliberately left out
//! * Revocation: no CRL or OCSP. A certificate is good until it expires; to shut a member out
//!   before then, make a new CA and new certificates.
//! * Reloading: the files are read once, at start; new certificates take a restart.
//! * Names of members: any certificate the CA signed is a full member. Telling members from
//!   clients is the cluster secret's job (the handshake), not the certificate's.
//! * 0-RTT (early data): off, as rustls has it by default. Early data can be replayed, and
//!   connections are pooled and long-lived, so the round trip it saves is paid once per peer.

use std::fmt;
use std::io;
use std::io::Read;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Conn, Env, Listener, Transport};
use crate::errinput;
use crate::error::{Error, Result};

/// The environment variable behind `--tls-cert`.
pub const CERT_ENV: &str = "RINGLEADER_TLS_CERT";
/// The environment variable behind `--tls-key`.
pub const KEY_ENV: &str = "RINGLEADER_TLS_KEY";
/// The environment variable behind `--tls-ca`.
pub const CA_ENV: &str = "RINGLEADER_TLS_CA";

/// Largest certificate, key or CA file read, in bytes. A chain of a few PEM certificates is a
/// few KiB; anything near this is the wrong file, refused before it is read whole.
pub const TLS_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Most bytes read from a new connection before deciding whether it speaks TLS: enough for a
/// whole ClientHello or a plain request line in one read, so that a plain peer's request is read
/// (not left unread, which would make the close a reset that may eat our answer).
pub const FIRST_READ_BYTES_MAX: usize = 4096;
/// Longest a caller may take over its TLS handshake on a listener, in ms, counted from the
/// connection's first read. Above the RPC hello timeout (5 s), so that on an RPC port the hello
/// timeout fires first; on an HTTP port it bounds a stalled handshake by itself.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// The first byte of every TLS connection: a handshake record (RFC 8446, 5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a TLS endpoint needs, loaded once from the three files: this process's certificate and
/// key, and the CA every peer's certificate must be signed by.
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.write_str("TlsConfig { .. }")
    }
}

/// The three flags, as given: all three turn TLS on, none leaves it off, and anything between is
/// refused with the missing flag named.
pub fn load_flags(
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: Option<&Path>,
) -> Result<Option<TlsConfig>> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => TlsConfig::load(cert, key, ca).map(Some),
        _ => {
            let missing: Vec<String> = [
                (cert.is_none(), "--tls-cert", CERT_ENV),
                (key.is_none(), "--tls-key", KEY_ENV),
                (ca.is_none(), "--tls-ca", CA_ENV),
            ]
            .iter()
            .filter(|(absent, _, _)| *absent)
            .map(|(_, flag, env)| format!("{flag} (or {env})"))
            .collect();
            Err(errinput!(
                "TLS needs --tls-cert, --tls-key and --tls-ca together; missing: {}",
                missing.join(", ")
            ))
        }
    }
}

impl TlsConfig {
    /// Reads the certificate chain (PEM, this process's certificate first), its private key
    /// (PEM: PKCS#8, PKCS#1 or SEC1) and the CA certificate(s) (PEM). A file that cannot be read
    /// or holds nothing usable is an [`Error::InvalidRequest`] naming the flag, the file and what
    /// is wrong with it.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self> {
        let cert_pem = read_file("--tls-cert", cert)?;
        let key_pem = read_file("--tls-key", key)?;
        let ca_pem = read_file("--tls-ca", ca)?;
        let what = |flag: &str, path: &Path| format!("{flag} file {}", path.display());
        Self::from_pem(
            (&what("--tls-cert", cert), &cert_pem),
            (&what("--tls-key", key), &key_pem),
            (&what("--tls-ca", ca), &ca_pem),
        )
    }

    /// [`TlsConfig::load`] on contents already read, each with the words that name it in errors.
    pub fn from_pem(
        (cert_name, cert_pem): (&str, &[u8]),
        (key_name, key_pem): (&str, &[u8]),
        (ca_name, ca_pem): (&str, &[u8]),
    ) -> Result<Self> {
        let certs = parse_certs(cert_name, cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| match err {
            rustls::pki_types::pem::Error::NoItemsFound => {
                errinput!("{key_name} holds no private key (a PEM block such as BEGIN PRIVATE KEY)")
            }
            err => errinput!("{key_name} is not a readable PEM private key: {err}"),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in parse_certs(ca_name, ca_pem)? {
            roots
                .add(ca)
                .map_err(|err| errinput!("{ca_name} holds an unusable CA certificate: {err}"))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|err| errinput!("{ca_name} cannot verify peers: {err}"))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::Internal(format!("TLS versions: {err}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|err| key_error(cert_name, key_name, err))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::Internal(format!("TLS versions: {err}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|err| key_error(cert_name, key_name, err))?;
        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// The rustls configuration this process dials with (its certificate, the CA it trusts).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

/// `env` with TLS on every connection it dials and every listener it binds.
pub fn with_tls(env: Env, config: TlsConfig) -> Env {
    let transport = Arc::new(TlsTransport {
        inner: env.transport.clone(),
        connector: TlsConnector::from(config.client),
        acceptor: TlsAcceptor::from(config.server),
    });
    Env { transport, ..env }
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .map_err(|err| errinput!("cannot read {flag} file {}: {err}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(TLS_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| errinput!("cannot read {flag} file {}: {err}", path.display()))?;
    if bytes.len() as u64 > TLS_FILE_BYTES_MAX {
        return Err(errinput!(
            "{flag} file {} is over {TLS_FILE_BYTES_MAX} bytes: not a PEM certificate or key",
            path.display()
        ));
    }
    Ok(bytes)
}

fn parse_certs(name: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| errinput!("{name} is not readable PEM: {err}"))?;
    if certs.is_empty() {
        return Err(errinput!(
            "{name} holds no certificate (a PEM block BEGIN CERTIFICATE)"
        ));
    }
    Ok(certs)
}

fn key_error(cert_name: &str, key_name: &str, err: rustls::Error) -> Error {
    match err {
        rustls::Error::InconsistentKeys(_) => {
            errinput!("{key_name} is not the key of the certificate in {cert_name} ({err})")
        }
        err => errinput!("{key_name} with {cert_name} cannot be used: {err}"),
    }
}

/// The name a caller checks the certificate of `addr` (`host:port`) against.
fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| {
        errinput!("cannot check the TLS certificate of {addr}: {host:?} is neither an IP address nor a DNS name")
    })
}

/// TLS over another transport (TCP in a real process).
struct TlsTransport {
    inner: Arc<dyn Transport>,
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

impl Transport for TlsTransport {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Conn>> {
        Box::pin(async move {
            let name = server_name(addr)?;
            let stream = self.inner.connect(addr).await?;
            match self.connector.connect(name, stream).await {
                Ok(stream) => Ok(Box::new(Dialled { stream }) as Conn),
                Err(err) => Err(handshake_error(addr, err)),
            }
        })
    }

    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let inner = self.inner.bind(addr).await?;
            Ok(Box::new(TlsListener {
                inner,
                acceptor: self.acceptor.clone(),
            }) as Box<dyn Listener>)
        })
    }
}

/// The rustls error inside an I/O error of tokio-rustls, if that is what it is.
fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Whether `err` is the peer refusing this process's certificate. (`DecryptError`: a signature
/// that does not verify, which on a certificate means a CA of the same name that is not ours.)
fn refuses_our_certificate(err: &rustls::Error) -> bool {
    use rustls::AlertDescription::*;
    matches!(
        err,
        rustls::Error::AlertReceived(
            BadCertificate
                | UnsupportedCertificate
                | CertificateRevoked
                | CertificateExpired
                | CertificateUnknown
                | UnknownCA
                | AccessDenied
                | CertificateRequired
                | DecryptError
        )
    )
}

/// The error of a failed client handshake with `addr`: it names the address, says TLS, and
/// gives rustls's reason. Certificates that do not verify and peers that do not speak TLS will
/// fail the same way next time, so those are not retryable; a connection that merely broke is.
fn handshake_error(addr: &str, err: io::Error) -> Error {
    let Some(tls) = rustls_error(&err) else {
        let hint = if err.kind() == io::ErrorKind::UnexpectedEof {
            " (it closed the connection: does it speak TLS?)"
        } else {
            ""
        };
        return Error::Unreachable(format!("TLS handshake with {addr} failed: {err}{hint}"));
    };
    match tls {
        rustls::Error::InvalidCertificate(_) => Error::Protocol(format!(
            "TLS handshake with {addr} failed: its certificate is not trusted here ({tls}); \
             it must be signed by the CA in --tls-ca and name the host dialled"
        )),
        tls if refuses_our_certificate(tls) => Error::Forbidden(format!(
            "TLS handshake with {addr} failed: it refused this process's certificate ({tls}); \
             --tls-cert must be signed by the CA the cluster trusts"
        )),
        rustls::Error::InvalidMessage(_) => Error::Protocol(format!(
            "TLS handshake with {addr} failed: it does not answer in TLS ({tls}); \
             is it started without --tls-cert?"
        )),
        tls => Error::Protocol(format!("TLS handshake with {addr} failed: {tls}")),
    }
}

/// An I/O error on an established connection, reworded when it comes from TLS. With TLS 1.3 the
/// listener checks a caller's certificate after the caller's handshake is done, so a refused
/// certificate shows up here, as an alert on the first read; the caller adds the address.
fn session_error(err: io::Error) -> io::Error {
    let Some(tls) = rustls_error(&err) else {
        return err;
    };
    let message = if refuses_our_certificate(tls) {
        format!(
            "TLS: the peer refused this process's certificate ({tls}); --tls-cert must be signed \
             by the CA the cluster trusts"
        )
    } else {
        format!("TLS: {tls}")
    };
    io::Error::new(err.kind(), message)
}

/// A connection this process dialled, past its handshake.
struct Dialled {
    stream: tokio_rustls::client::TlsStream<Conn>,
}

impl AsyncRead for Dialled {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream)
            .poll_read(cx, buf)
            .map_err(session_error)
    }
}

impl AsyncWrite for Dialled {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream)
            .poll_write(cx, buf)
            .map_err(session_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream)
            .poll_flush(cx)
            .map_err(session_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream)
            .poll_shutdown(cx)
            .map_err(session_error)
    }
}

/// A listener whose connections speak TLS.
struct TlsListener {
    inner: Box<dyn Listener>,
    acceptor: TlsAcceptor,
}

impl Listener for TlsListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Conn, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.inner.accept().await?;
            let handshake = server_handshake(stream, self.acceptor.clone(), peer.clone()).boxed();
            Ok((Box::new(Accepted::Handshaking(handshake)) as Conn, peer))
        })
    }

    fn local_addr(&self) -> Result<String> {
        self.inner.local_addr()
    }
}

type ServerStream = tokio_rustls::server::TlsStream<Replayed>;

/// Reads what the caller sent first and, if it is a TLS handshake, does the server side of it.
/// A caller speaking plain TCP gets one answer it can read (see [`refuse_plain`]) and the
/// connection ends.
async fn server_handshake(
    stream: Conn,
    acceptor: TlsAcceptor,
    peer: String,
) -> io::Result<ServerStream> {
    let limit = std::time::Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    match tokio::time::timeout(limit, server_handshake_inner(stream, acceptor, &peer)).await {
        Ok(done) => done,
        Err(_) => {
            tracing::info!(%peer, "a TLS handshake took over {HANDSHAKE_TIMEOUT_MS} ms");
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the TLS handshake took over {HANDSHAKE_TIMEOUT_MS} ms"),
            ))
        }
    }
}

async fn server_handshake_inner(
    mut stream: Conn,
    acceptor: TlsAcceptor,
    peer: &str,
) -> io::Result<ServerStream> {
    let mut first = vec![0u8; FIRST_READ_BYTES_MAX];
    let read = stream.read(&mut first).await?;
    first.truncate(read);
    match first.first() {
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before the TLS handshake",
        )),
        Some(&TLS_HANDSHAKE_RECORD) => {
            let replayed = Replayed {
                head: first,
                read: 0,
                inner: stream,
            };
            acceptor.accept(replayed).await.map_err(|err| {
                tracing::info!(peer, %err, "refused a TLS handshake");
                err
            })
        }
        Some(_) => {
            tracing::info!(peer, "refused a caller that does not speak TLS");
            refuse_plain(&mut stream, &first).await;
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the caller does not speak TLS",
            ))
        }
    }
}

/// Tells a caller that spoke plain TCP to a TLS port what went wrong, in the protocol it spoke:
/// an HTTP 400 to what looks like an HTTP request (it starts with a method in capitals), else a
/// ringleader error frame, which a plain client reports as the hello being refused.
async fn refuse_plain(stream: &mut Conn, first: &[u8]) {
    let looks_like_http = first
        .iter()
        .position(|&b| b == b' ')
        .is_some_and(|space| space > 0 && first[..space].iter().all(u8::is_ascii_uppercase));
    let answer: Vec<u8> = if looks_like_http {
        let body = "this port speaks HTTPS (TLS): use https:// and the cluster's certificates\n";
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    } else {
        let refusal: Result<crate::rpc::message::Response<()>> = Err(Error::Protocol(
            "this port speaks TLS: give the caller --tls-cert, --tls-key and --tls-ca (or \
             RINGLEADER_TLS_CERT, RINGLEADER_TLS_KEY and RINGLEADER_TLS_CA)"
                .into(),
        ));
        let Ok(payload) = crate::rpc::frame::encode(0, &refusal) else {
            return;
        };
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        frame
    };
    // A few hundred bytes fit any socket buffer: this write does not wait on the peer.
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
}

/// A stream whose first bytes were already read: they are read again, then the rest.
struct Replayed {
    head: Vec<u8>,
    read: usize,
    inner: Conn,
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.head.is_empty() {
            let n = buf.remaining().min(this.head.len() - this.read);
            buf.put_slice(&this.head[this.read..this.read + n]);
            this.read += n;
            if this.read == this.head.len() {
                // Read again in full: the buffer is not kept for the connection's lifetime.
                this.head = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection a listener accepted: its handshake runs on its first read or write.
enum Accepted {
    Handshaking(BoxFuture<'static, io::Result<ServerStream>>),
    Ready(Box<ServerStream>),
    /// The handshake failed: every later read or write fails the same way.
    Failed(io::ErrorKind, String),
}

impl Accepted {
    /// Drives the handshake; ready once the stream can carry data.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut ServerStream>> {
        if let Accepted::Handshaking(handshake) = self {
            match handshake.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(stream)) => *self = Accepted::Ready(Box::new(stream)),
                Poll::Ready(Err(err)) => {
                    let err = session_error(err);
                    *self = Accepted::Failed(err.kind(), err.to_string());
                }
            }
        }
        match self {
            Accepted::Ready(stream) => Poll::Ready(Ok(stream)),
            Accepted::Failed(kind, message) => {
                Poll::Ready(Err(io::Error::new(*kind, message.clone())))
            }
            Accepted::Handshaking(_) => Poll::Pending,
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.poll_handshake(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_read(cx, buf),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.poll_handshake(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_write(cx, buf),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_handshake(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_flush(cx),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Accepted::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            // Nothing was said yet, or the handshake failed: there is no session to close, and
            // a stalled handshake must not hold up whoever is closing the connection.
            Accepted::Handshaking(_) | Accepted::Failed(..) => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tls_certs::{make_certs, DevCerts};
    use crate::net::Clock;
    use std::time::Duration;
    use tokio::net::TcpStream;

    /// A fresh development CA (a name of its own) and its certificates, valid today.
    fn certs(hosts: &[&str]) -> DevCerts {
        let today = (super::super::SystemClock.wall_us() / 86_400_000_000) as i64;
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        match make_certs(&hosts, today, rand::random()) {
            Ok(certs) => certs,
            Err(err) => panic!("cannot make test certificates: {err}"),
        }
    }

    fn config(cert: &str, key: &str, ca: &str) -> TlsConfig {
        TlsConfig::from_pem(
            ("cert", cert.as_bytes()),
            ("key", key.as_bytes()),
            ("ca", ca.as_bytes()),
        )
        .unwrap_or_else(|err| panic!("the test certificates do not load: {err}"))
    }

    fn node(certs: &DevCerts) -> TlsConfig {
        config(&certs.node, &certs.node_key, &certs.ca)
    }

    fn invalid(result: Result<impl fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidRequest(msg)) => msg,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn a_partial_set_of_flags_is_refused_naming_what_is_missing() {
        let p = Path::new("x.pem");
        assert!(matches!(load_flags(None, None, None), Ok(None)));
        let msg = invalid(load_flags(Some(p), None, Some(p)));
        assert!(
            msg.contains("missing: --tls-key (or RINGLEADER_TLS_KEY)"),
            "{msg}"
        );
        let msg = invalid(load_flags(None, Some(p), Some(p)));
        assert!(msg.contains("missing: --tls-cert"), "{msg}");
        assert!(!msg.contains("--tls-ca ("), "{msg}");
        let msg = invalid(load_flags(Some(p), Some(p), None));
        assert!(msg.contains("missing: --tls-ca"), "{msg}");
    }

    #[test]
    fn a_file_that_cannot_be_read_or_parsed_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = certs(&["127.0.0.1"]);
        let other = certs(&["127.0.0.1"]);
        let write = |name: &str, contents: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).expect("write a test file");
            path
        };
        let cert = write("node.pem", good.node.as_bytes());
        let key = write("node-key.pem", good.node_key.as_bytes());
        let ca = write("ca.pem", good.ca.as_bytes());
        assert!(TlsConfig::load(&cert, &key, &ca).is_ok());

        let missing = dir.path().join("missing.pem");
        let msg = invalid(TlsConfig::load(&cert, &missing, &ca));
        assert!(
            msg.contains("cannot read --tls-key file") && msg.contains("missing.pem"),
            "{msg}"
        );

        let empty = write("empty.pem", b"");
        let msg = invalid(TlsConfig::load(&empty, &key, &ca));
        assert!(
            msg.contains("--tls-cert file") && msg.contains("empty.pem"),
            "{msg}"
        );
        assert!(msg.contains("holds no certificate"), "{msg}");

        let msg = invalid(TlsConfig::load(&cert, &key, &empty));
        assert!(
            msg.contains("--tls-ca file") && msg.contains("holds no certificate"),
            "{msg}"
        );

        let garbled = write(
            "garbled.pem",
            b"-----BEGIN CERTIFICATE-----\n@@@ not base64 @@@\n-----END CERTIFICATE-----\n",
        );
        let msg = invalid(TlsConfig::load(&garbled, &key, &ca));
        assert!(
            msg.contains("garbled.pem") && msg.contains("not readable PEM"),
            "{msg}"
        );

        // A certificate where the key belongs.
        let msg = invalid(TlsConfig::load(&cert, &cert, &ca));
        assert!(
            msg.contains("--tls-key file") && msg.contains("holds no private key"),
            "{msg}"
        );

        let foreign_key = write("other-key.pem", other.node_key.as_bytes());
        let msg = invalid(TlsConfig::load(&cert, &foreign_key, &ca));
        assert!(
            msg.contains("other-key.pem") && msg.contains("is not the key of the certificate"),
            "{msg}"
        );

        let huge = write("huge.pem", &vec![b'A'; TLS_FILE_BYTES_MAX as usize + 1]);
        let msg = invalid(TlsConfig::load(&cert, &key, &huge));
        assert!(msg.contains("huge.pem") && msg.contains("over"), "{msg}");
    }

    #[test]
    fn a_caller_checks_the_host_part_of_the_address_it_dials() {
        let ip = |s: &str| ServerName::IpAddress(s.parse::<std::net::IpAddr>().unwrap().into());
        assert_eq!(server_name("127.0.0.1:5").unwrap(), ip("127.0.0.1"));
        assert_eq!(server_name("[::1]:5").unwrap(), ip("::1"));
        assert_eq!(
            server_name("db1.example.org:5").unwrap(),
            ServerName::try_from("db1.example.org").unwrap()
        );
        let msg = invalid(server_name("not a host:5"));
        assert!(
            msg.contains("neither an IP address nor a DNS name"),
            "{msg}"
        );
    }

    /// A TLS listener of `config` on a free loopback port that echoes what each connection
    /// sends; returns its address.
    async fn echo_listener(config: TlsConfig) -> String {
        let env = with_tls(Env::real(), config);
        let listener = match env.bind("127.0.0.1", Some(0), 0..=0).await {
            Ok(listener) => listener,
            Err(err) => panic!("cannot bind: {err}"),
        };
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = crate::net::accept(&*listener).await;
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Dials `addr` with `config`, sends a line and reads it back.
    async fn echo(config: TlsConfig, addr: &str) -> Result<String> {
        let env = with_tls(Env::real(), config);
        let mut conn = env.connect(addr).await?;
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf)
            .await
            .map_err(|err| Error::Unreachable(format!("{addr}: {err}")))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    #[tokio::test]
    async fn peers_of_one_ca_talk_and_a_stalled_handshake_holds_up_no_one() {
        let certs = certs(&["127.0.0.1", "localhost"]);
        let addr = echo_listener(node(&certs)).await;
        // A caller that connects and says nothing: its handshake waits on its first byte, in
        // its own connection, not in the accept loop.
        let _stalled = TcpStream::connect(&addr).await.expect("connect");
        let client = config(&certs.client, &certs.client_key, &certs.ca);
        let reply = tokio::time::timeout(Duration::from_secs(10), echo(client, &addr)).await;
        assert_eq!(reply.expect("no answer").expect("echo"), "ping");
        let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
        let by_name = echo(node(&certs), &format!("localhost:{port}")).await;
        assert_eq!(by_name.expect("echo by DNS name"), "ping");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_handshake_is_dropped_after_the_handshake_timeout() {
        let certs = certs(&["127.0.0.1"]);
        let addr = echo_listener(node(&certs)).await;
        let mut stalled = TcpStream::connect(&addr).await.expect("connect");
        let started = tokio::time::Instant::now();
        // The listener reads at once (the echo loop), so the handshake's clock starts now; the
        // paused clock jumps to its deadline, and the listener closes the connection.
        let mut buf = [0u8; 16];
        let read = stalled.read(&mut buf).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "a stalled caller was sent {read:?}"
        );
        // The clock is paused: it only jumps to timers, so this is the timeout, not a speed.
        let waited = started.elapsed();
        let limit = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
        assert!(
            waited >= limit && waited < 2 * limit,
            "dropped after {waited:?}, not at the handshake timeout"
        );
    }

    #[tokio::test]
    async fn a_caller_refuses_a_listener_of_another_ca_or_for_another_host() {
        let ours = certs(&["127.0.0.1"]);
        let theirs = certs(&["127.0.0.1"]);
        let addr = echo_listener(node(&theirs)).await;
        let client = config(&ours.client, &ours.client_key, &ours.ca);
        match echo(client, &addr).await {
            Err(Error::Protocol(msg)) => {
                assert!(msg.contains(&addr) && msg.contains("TLS"), "{msg}");
                assert!(msg.contains("UnknownIssuer"), "{msg}");
            }
            other => panic!("a listener of another CA was trusted: {other:?}"),
        }

        let elsewhere = certs(&["db.example.test"]);
        let addr = echo_listener(node(&elsewhere)).await;
        match echo(node(&elsewhere), &addr).await {
            Err(Error::Protocol(msg)) => {
                assert!(
                    msg.contains(&addr) && msg.contains("not valid for name"),
                    "{msg}"
                )
            }
            other => panic!("a certificate for another host was trusted: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_listener_refuses_a_caller_of_another_ca() {
        let ours = certs(&["127.0.0.1"]);
        let theirs = certs(&["127.0.0.1"]);
        let addr = echo_listener(node(&ours)).await;
        // It trusts our CA, but its certificate is signed by another.
        let stranger = config(&theirs.client, &theirs.client_key, &ours.ca);
        match echo(stranger, &addr).await {
            Err(err) => {
                let msg = err.to_string();
                assert!(
                    msg.contains(&addr)
                        && msg.contains("TLS")
                        && msg.contains("refused this process's certificate"),
                    "{msg}"
                );
                assert!(msg.contains("UnknownCA"), "{msg}");
            }
            Ok(reply) => panic!("a caller of another CA was answered: {reply:?}"),
        }
    }

    #[tokio::test]
    async fn a_plain_caller_is_told_the_port_speaks_tls() {
        let certs = certs(&["127.0.0.1"]);
        let addr = echo_listener(node(&certs)).await;

        let mut plain = TcpStream::connect(&addr).await.expect("connect");
        plain
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("send");
        let mut answer = String::new();
        plain.read_to_string(&mut answer).await.expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 400") && answer.contains("speaks HTTPS"),
            "{answer}"
        );

        // A ringleader frame: the answer is a frame holding a protocol error.
        let mut plain = TcpStream::connect(&addr).await.expect("connect");
        plain.write_all(&[0, 0, 0, 3, 1, 2, 3]).await.expect("send");
        let mut answer = Vec::new();
        plain.read_to_end(&mut answer).await.expect("read");
        let payload = answer.get(4..).expect("a whole frame");
        let reply: crate::rpc::message::Envelope<Result<crate::rpc::message::Response<()>>> =
            postcard::from_bytes(payload).expect("a ringleader frame");
        match reply.body {
            Err(Error::Protocol(msg)) => assert!(msg.contains("speaks TLS"), "{msg}"),
            other => panic!("a plain caller was answered {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_tls_caller_is_told_a_plain_port_does_not_speak_tls() {
        let certs = certs(&["127.0.0.1"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move {
            if let Ok((mut conn, _)) = listener.accept().await {
                let _ = conn.write_all(b"not tls at all\n").await;
                let mut sink = [0u8; 1024];
                let _ = conn.read(&mut sink).await;
            }
        });
        match echo(node(&certs), &addr).await {
            Err(Error::Protocol(msg)) => assert!(
                msg.contains(&addr) && msg.contains("does not answer in TLS"),
                "{msg}"
            ),
            other => panic!("a plain port passed for TLS: {other:?}"),
        }
    }
}
