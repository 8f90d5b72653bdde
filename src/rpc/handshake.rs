//! The hello: the first exchange on every connection, from both ends.
//!
//! 1. The caller sends [`Request::Hello`]: protocol version, the service it means to reach, its
//!    cluster, and, if it holds a cluster secret ([`crate::net::secret`]), the role it will prove
//!    and a fresh nonce.
//! 2. The service checks version, service and cluster and answers [`Response::Hello`]. If it has
//!    a secret, the answer carries a challenge: its own fresh nonce and its proof of the role's
//!    secret over the transcript (version, service, cluster, role, both nonces). A caller
//!    without a secret is refused here; one that asked for the other service is told what this
//!    is and the connection closes.
//! 3. A caller with a secret checks the service's proof (so it knows it reached a process of its
//!    own cluster) and answers [`Request::Proof`], its proof over the same transcript under a
//!    different tag; the service answers [`Response::Welcome`] with the role granted, or
//!    `Forbidden` and closes.
//!
//! Both nonces are fresh per connection, so a proof recorded on one connection is worthless on
//! the next, and the secret itself never crosses the wire. The tags keep the service's proof
//! from being replayed as the caller's.
//!
//! A service without a secret authenticates nobody and grants everyone a member's rights: that
//! is only safe on loopback, which is why a process refuses to listen anywhere else without a
//! secret ([`crate::net::secret::require_secret_off_loopback`]).
//!
//! # Deliberately left out
//! * Telling one member from another: every member proves the same member key.
//! * Encryption and integrity of what follows the hello: that is TLS's job (`--tls-*`).
//! * Protection against a man in the middle who relays a whole connection: without TLS, one who
//!   can relay bytes can also read and alter the calls after the hello.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::debug;

use super::frame::{codec, decode, encode};
use super::message::{
    cluster_mismatch, Challenge, HelloAuth, Request, Response, ServiceKind, PROTOCOL_VERSION,
};
use crate::error::{Error, Result};
use crate::net::secret::{fresh_bytes, Role, SECRET_BYTES};
use crate::net::{self, Conn, Env};

/// A connection during and after its hello.
pub type Wire = Framed<Conn, LengthDelimitedCodec>;

/// The domain tag of the service's proof.
const SERVICE_TAG: &[u8] = b"ringleader hello v1: service proof";
/// The domain tag of the caller's proof: not the service's, so neither proof stands for the other.
const CALLER_TAG: &[u8] = b"ringleader hello v1: caller proof";

/// How an HTTP reply starts: what a ringleader port never sends first.
const HTTP_REPLY_START: &[u8] = b"HTTP/";

/// A connection framed for the hello.
pub fn wire(stream: Conn) -> Wire {
    Framed::new(stream, codec())
}

/// What both proofs are made over: everything the hello settled.
struct Transcript<'a> {
    service: ServiceKind,
    cluster: &'a str,
    role: Role,
    caller_nonce: [u8; SECRET_BYTES],
    service_nonce: [u8; SECRET_BYTES],
}

impl Transcript<'_> {
    fn bytes(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(&(
            PROTOCOL_VERSION,
            self.service,
            self.cluster,
            self.role,
            self.caller_nonce,
            self.service_nonce,
        ))
        .map_err(|err| Error::Internal(format!("cannot encode the hello's transcript: {err}")))
    }
}

// ---------------------------------------------------------------------------------------------
// The service's end
// ---------------------------------------------------------------------------------------------

/// Runs the service's end of the hello on a fresh connection: `Some(role)`, the rights the
/// caller proved (a member's when this service has no secret), or `None` when the connection
/// must end (the caller has been told why, where it could be). The caller bounds its time.
pub async fn accept<T: DeserializeOwned>(
    wire: &mut Wire,
    service: ServiceKind,
    env: &Env,
) -> Option<Role> {
    let payload = match wire.next().await {
        None => return None,
        Some(Err(err)) => {
            let _ = send_error(wire, 0, Error::InvalidRequest(frame_error(&err))).await;
            return None;
        }
        Some(Ok(payload)) => payload,
    };
    let (request_id, wanted, auth) = match decode::<Request<T>>(&payload) {
        Ok(envelope) => match envelope.body {
            Request::Hello {
                protocol_version,
                service: wanted,
                cluster: peer_cluster,
                auth,
            } => {
                if let Err(err) = check_hello(
                    protocol_version,
                    wanted,
                    &peer_cluster,
                    service,
                    env.cluster(),
                ) {
                    let _ = send_error(wire, envelope.request_id, err).await;
                    return None;
                }
                (envelope.request_id, wanted, auth)
            }
            Request::Call(_) | Request::Proof { .. } => {
                let err = Error::Protocol("the first message must be a hello".into());
                let _ = send_error(wire, envelope.request_id, err).await;
                return None;
            }
        },
        Err((request_id, err)) => {
            let err = match err {
                Error::InvalidRequest(what) => Error::Protocol(format!(
                    "expected a hello of protocol version {PROTOCOL_VERSION}: {what}"
                )),
                other => other,
            };
            let _ = send_error(wire, request_id.unwrap_or(0), err).await;
            return None;
        }
    };
    if wanted != service {
        // A caller that wanted the other service is told what this is, then the connection ends.
        let _ = send_hello(wire, request_id, service, env, None).await;
        return None;
    }
    let Some(secret) = env.secret.clone() else {
        // No secret here: nobody is authenticated, so everybody is trusted (loopback only). A
        // caller with a secret refuses this answer itself.
        send_hello(wire, request_id, service, env, None)
            .await
            .ok()?;
        return Some(Role::Member);
    };
    let Some(auth) = auth else {
        let err = Error::Forbidden(format!(
            "this {service} requires the cluster secret: start the caller with \
             --cluster-secret-file FILE (or RINGLEADER_CLUSTER_SECRET_FILE); `client secrets DIR` \
             makes a member's and a client's"
        ));
        debug!("refused a hello without a secret");
        let _ = send_error(wire, request_id, err).await;
        return None;
    };
    let transcript = Transcript {
        service,
        cluster: env.cluster(),
        role: auth.role,
        caller_nonce: auth.nonce,
        service_nonce: fresh_bytes(env),
    };
    let bytes = transcript.bytes().ok()?;
    // A service holds a member's secret (the binaries refuse a client's), so it can prove and
    // check either role.
    let proof = secret.prove(auth.role, &[SERVICE_TAG, &bytes])?;
    let challenge = Challenge {
        nonce: transcript.service_nonce,
        proof,
    };
    send_hello(wire, request_id, service, env, Some(challenge))
        .await
        .ok()?;

    let payload = match wire.next().await {
        Some(Ok(payload)) => payload,
        None | Some(Err(_)) => return None,
    };
    let envelope = decode::<Request<T>>(&payload).ok()?;
    let granted = match envelope.body {
        Request::Proof { proof } if secret.verify(auth.role, &[CALLER_TAG, &bytes], &proof) => {
            auth.role
        }
        Request::Proof { .. } => {
            debug!(role = %auth.role, "refused a hello with a wrong proof");
            let err = Error::Forbidden(format!(
                "the caller's proof does not match this cluster's {} secret: a wrong secret \
                 file, another cluster's, or a replayed hello",
                auth.role
            ));
            let _ = send_error(wire, envelope.request_id, err).await;
            return None;
        }
        Request::Hello { .. } | Request::Call(_) => {
            let err = Error::Protocol("expected the proof of the cluster secret".into());
            let _ = send_error(wire, envelope.request_id, err).await;
            return None;
        }
    };
    let welcome: Result<Response<()>> = Ok(Response::Welcome { role: granted });
    let bytes = encode(envelope.request_id, &welcome).ok()?;
    wire.send(bytes).await.ok()?;
    Some(granted)
}

/// Checks a hello against this service: `Ok` if it is of this protocol version and this
/// cluster (whichever service it asks for: one that asked for the other is answered with our
/// kind); else the error that says which of them differs.
pub fn check_hello(
    protocol_version: u32,
    service: ServiceKind,
    peer_cluster: &str,
    service_here: ServiceKind,
    cluster: &str,
) -> Result<()> {
    if protocol_version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "this is a {service_here} speaking protocol version {PROTOCOL_VERSION}; \
             the peer asked for a {service} speaking version {protocol_version}"
        )));
    }
    if service == service_here && peer_cluster != cluster {
        debug!(peer_cluster = %net::shown_cluster(peer_cluster), "refused a hello from another cluster");
        return Err(cluster_mismatch(service_here, cluster, peer_cluster));
    }
    Ok(())
}

async fn send_hello(
    wire: &mut Wire,
    request_id: u64,
    service: ServiceKind,
    env: &Env,
    challenge: Option<Challenge>,
) -> Result<()> {
    let hello: Result<Response<()>> = Ok(Response::Hello {
        protocol_version: PROTOCOL_VERSION,
        service,
        cluster: env.cluster().to_string(),
        challenge,
    });
    let bytes = encode(request_id, &hello)?;
    wire.send(bytes).await.map_err(Error::from)
}

/// Sends `err` as the reply to request `request_id`.
pub async fn send_error(wire: &mut Wire, request_id: u64, err: Error) -> Result<()> {
    let reply: Result<Response<()>> = Err(err);
    let bytes = encode(request_id, &reply)?;
    wire.send(bytes).await.map_err(Error::from)
}

/// What a frame that could not be read is called in the error sent back.
pub fn frame_error(err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::InvalidData {
        format!(
            "frame larger than the limit of {} bytes",
            super::frame::FRAME_BYTES_MAX
        )
    } else {
        format!("bad frame: {err}")
    }
}

// ---------------------------------------------------------------------------------------------
// The caller's end
// ---------------------------------------------------------------------------------------------

/// Runs the caller's end of the hello with the `service` at `addr`, as a process of `env`'s
/// cluster proving `env`'s secret. Every refusal names `addr`. The caller bounds its time.
pub async fn offer<Rep: DeserializeOwned>(
    wire: &mut Wire,
    addr: &str,
    service: ServiceKind,
    env: &Env,
) -> Result<()> {
    let auth = env.secret.as_ref().map(|secret| HelloAuth {
        role: secret.role(),
        nonce: fresh_bytes(env),
    });
    let hello: Request<()> = Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        service,
        cluster: env.cluster().to_string(),
        auth,
    };
    send_request(wire, addr, &hello).await?;
    let challenge = match read_reply::<Rep>(wire, addr).await? {
        Response::Hello {
            service: theirs, ..
        } if theirs != service => return Err(wrong_service(addr, theirs)),
        Response::Hello { cluster, .. } if cluster != env.cluster() => {
            let err = cluster_mismatch(service, &cluster, env.cluster());
            return Err(refused_by(addr, err));
        }
        Response::Hello { challenge, .. } => challenge,
        Response::Reply(_) | Response::Welcome { .. } => {
            return Err(Error::Protocol(format!(
                "{addr} answered the hello with a reply"
            )))
        }
    };
    let (secret, auth, challenge) = match (&env.secret, auth, challenge) {
        (None, _, None) => return Ok(()),
        (None, _, Some(_)) => {
            return Err(Error::Protocol(format!(
                "{addr} sent a challenge to a hello that claimed no secret"
            )))
        }
        (Some(_), _, None) => {
            return Err(Error::Forbidden(format!(
                "{addr} does not check the cluster secret (it was started without \
                 --cluster-secret-file): this process holds one and talks only to processes \
                 that prove it"
            )))
        }
        (Some(secret), Some(auth), Some(challenge)) => (secret, auth, challenge),
        (Some(_), None, Some(_)) => unreachable!("a caller with a secret always sends its auth"),
    };
    let transcript = Transcript {
        service,
        cluster: env.cluster(),
        role: auth.role,
        caller_nonce: auth.nonce,
        service_nonce: challenge.nonce,
    }
    .bytes()?;
    if !secret.verify(auth.role, &[SERVICE_TAG, &transcript], &challenge.proof) {
        return Err(Error::Forbidden(format!(
            "{addr} could not prove the cluster secret: it holds another secret (another \
             cluster's, or a wrong file), or it is not a ringleader process"
        )));
    }
    let Some(proof) = secret.prove(auth.role, &[CALLER_TAG, &transcript]) else {
        return Err(Error::Internal(format!(
            "this secret cannot prove the {} role it claimed",
            auth.role
        )));
    };
    send_request(wire, addr, &Request::<()>::Proof { proof }).await?;
    match read_reply::<Rep>(wire, addr).await? {
        Response::Welcome { role } if role == auth.role => Ok(()),
        other => Err(Error::Protocol(format!(
            "{addr} answered the proof with {}",
            match other {
                Response::Welcome { .. } => "another role than the one proved",
                Response::Hello { .. } => "a hello",
                Response::Reply(_) => "a reply",
            }
        ))),
    }
}

async fn send_request<T: Serialize>(
    wire: &mut Wire,
    addr: &str,
    request: &Request<T>,
) -> Result<()> {
    let bytes: Bytes = encode(0, request)?;
    wire.send(bytes)
        .await
        .map_err(|err| Error::Unreachable(format!("{addr}: {err}")))
}

/// The service's next answer during the hello; an error answer is returned as `Err`, naming
/// `addr`.
async fn read_reply<Rep: DeserializeOwned>(wire: &mut Wire, addr: &str) -> Result<Response<Rep>> {
    let payload = match wire.next().await {
        Some(Ok(payload)) => payload,
        // An HTTP server answers our hello's bytes with a 400; read as a frame, its "HTTP" is a
        // length far over the limit.
        Some(Err(_)) if wire.read_buffer().starts_with(HTTP_REPLY_START) => {
            return Err(speaks_http(addr))
        }
        Some(Err(err)) => return Err(Error::Unreachable(format!("{addr}: {err}"))),
        None => {
            return Err(Error::Unreachable(format!(
                "{addr} closed the connection during the handshake"
            )))
        }
    };
    let reply = decode::<Result<Response<Rep>>>(&payload).map_err(|(_, err)| {
        Error::Protocol(format!(
            "{addr} does not speak ringleader protocol {PROTOCOL_VERSION} ({err})"
        ))
    })?;
    reply.body.map_err(|err| refused_by(addr, err))
}

/// The error of dialling an HTTP port (a server's `--http-port`) instead of a ringleader one.
pub fn speaks_http(addr: &str) -> Error {
    Error::Protocol(format!(
        "{addr} speaks HTTP, not the ringleader protocol (is it an --http-port?)"
    ))
}

/// The error of dialling the other kind of service: it names the flag the address belongs to
/// (the client's `--server` and `--viewleader`).
pub fn wrong_service(addr: &str, theirs: ServiceKind) -> Error {
    let flag = match theirs {
        ServiceKind::ViewLeader => "--viewleader",
        ServiceKind::Server => "--server",
    };
    Error::Protocol(format!("{addr} is a {theirs}; use {flag} {addr}"))
}

/// A refused hello names the address that refused it (the refusing side cannot: it may not
/// know the address it is reached at).
fn refused_by(addr: &str, err: Error) -> Error {
    match err {
        Error::Protocol(msg) => Error::Protocol(format!("{addr} refused the hello: {msg}")),
        Error::Forbidden(msg) => Error::Forbidden(format!("{addr} refused the hello: {msg}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::future::BoxFuture;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::net::secret::ClusterSecret;
    use crate::net::{Listener, Tcp, Transport};
    use crate::rpc::client::RpcClient;
    use crate::rpc::server::{serve, Answer, Handler};

    /// A service that answers `n` with `n + 1`; numbers from [`MEMBERS_FROM`] up are a
    /// member's request.
    struct Increment;

    const MEMBERS_FROM: u64 = 1_000;

    impl Handler for Increment {
        type Request = u64;
        type Reply = u64;
        const SERVICE: ServiceKind = ServiceKind::ViewLeader;

        async fn handle(self: Arc<Self>, request: u64) -> Answer<u64> {
            Answer::Reply(Ok(request + 1))
        }

        fn members_only(request: &u64) -> bool {
            *request >= MEMBERS_FROM
        }

        fn name(_: &u64) -> &'static str {
            "increment"
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn member_secret(byte: u8) -> ClusterSecret {
        ClusterSecret::member([byte; SECRET_BYTES])
    }

    fn env_of(cluster: &str, secret: Option<ClusterSecret>) -> Env {
        Env::real().in_cluster(cluster).unwrap().with_secret(secret)
    }

    /// Serves [`Increment`] with `env` on a free loopback port; returns its address.
    async fn start(env: Env, shutdown: &CancellationToken) -> String {
        let listener = env.bind("127.0.0.1", Some(0), 0..=0).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, env, Arc::new(Increment), shutdown.clone()));
        addr
    }

    async fn connect(env: &Env, addr: &str) -> Result<RpcClient<u64, u64>> {
        RpcClient::connect(env, addr, ServiceKind::ViewLeader, TIMEOUT).await
    }

    fn forbidden(outcome: Result<RpcClient<u64, u64>>, what: &str) -> String {
        match outcome {
            Err(Error::Forbidden(msg)) => msg,
            Err(other) => panic!("{what}: not refused as forbidden: {other:?}"),
            Ok(_) => panic!("{what}: served"),
        }
    }

    #[test]
    fn a_hello_for_the_other_service_passes_the_check_and_names_the_flag() {
        // The service then answers with its own kind and closes; the caller names the flag.
        assert!(check_hello(
            PROTOCOL_VERSION,
            ServiceKind::Server,
            "b",
            ServiceKind::ViewLeader,
            "a"
        )
        .is_ok());
        let err = wrong_service("h:1", ServiceKind::ViewLeader);
        assert!(
            err.to_string()
                .contains("h:1 is a view leader; use --viewleader h:1"),
            "{err}"
        );
    }

    #[test]
    fn a_hello_from_another_cluster_or_version_is_refused_naming_both() {
        let check = |version: u32, cluster: &str| {
            check_hello(
                version,
                ServiceKind::Server,
                cluster,
                ServiceKind::Server,
                "a",
            )
        };
        assert!(check(PROTOCOL_VERSION, "a").is_ok());
        let err = check(PROTOCOL_VERSION, "b").unwrap_err();
        let Error::Protocol(msg) = &err else {
            panic!("not a protocol error: {err:?}")
        };
        assert!(
            msg.contains(r#"storage server belongs to cluster "a""#)
                && msg.contains(r#"caller to cluster "b""#),
            "{msg}"
        );
        let err = check(PROTOCOL_VERSION - 1, "b").unwrap_err();
        assert!(err.to_string().contains("protocol version"), "{err}");
    }

    #[tokio::test]
    async fn a_caller_of_another_cluster_is_refused_and_one_of_the_same_is_served() {
        let shutdown = CancellationToken::new();
        let addr = start(env_of("a", None), &shutdown).await;

        let err = connect(&env_of("b", None), &addr)
            .await
            .err()
            .expect("cluster b was served");
        let Error::Protocol(msg) = &err else {
            panic!("not a protocol error: {err:?}")
        };
        assert!(
            msg.contains(&addr)
                && msg.contains(r#"view leader belongs to cluster "a""#)
                && msg.contains(r#"caller to cluster "b""#),
            "{msg}"
        );
        assert!(!err.is_retryable(), "{err:?}");

        let client = connect(&env_of("a", None), &addr).await.unwrap();
        assert_eq!(client.call(&41, TIMEOUT).await.unwrap(), 42);
        shutdown.cancel();
    }

    /// The caller checks the answer too: a service that says hello from another cluster (one
    /// that does not check, say) is refused by the caller.
    #[tokio::test]
    async fn a_hello_answered_from_another_cluster_is_refused_by_the_caller() {
        let env = Env::real();
        let listener = env.bind("127.0.0.1", Some(0), 0..=0).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let other = env_of("a", None);
        tokio::spawn(async move {
            let (stream, _) = net::accept(&*listener).await;
            let mut wire = wire(stream);
            let Some(Ok(_)) = wire.next().await else {
                return;
            };
            let _ = send_hello(&mut wire, 0, ServiceKind::ViewLeader, &other, None).await;
            // Hold the connection open until the caller goes.
            let _ = wire.next().await;
        });
        let err = connect(&env_of("b", None), &addr)
            .await
            .err()
            .expect("cluster b was served");
        let Error::Protocol(msg) = &err else {
            panic!("not a protocol error: {err:?}")
        };
        assert!(
            msg.contains(&addr) && msg.contains(r#"cluster "a""#) && msg.contains(r#"cluster "b""#),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn callers_with_the_secret_are_served_in_their_role() {
        let shutdown = CancellationToken::new();
        let secret = member_secret(1);
        let addr = start(env_of("a", Some(secret.clone())), &shutdown).await;

        let member = connect(&env_of("a", Some(secret.clone())), &addr)
            .await
            .unwrap();
        assert_eq!(member.call(&1, TIMEOUT).await.unwrap(), 2);
        assert_eq!(
            member.call(&MEMBERS_FROM, TIMEOUT).await.unwrap(),
            MEMBERS_FROM + 1
        );

        let client = connect(&env_of("a", Some(secret.client_part())), &addr)
            .await
            .unwrap();
        assert_eq!(client.call(&1, TIMEOUT).await.unwrap(), 2);
        match client.call(&MEMBERS_FROM, TIMEOUT).await {
            Err(Error::Forbidden(msg)) => assert!(
                msg.contains("`increment` is a request between cluster members"),
                "{msg}"
            ),
            other => panic!("a client sent a member's request: {other:?}"),
        }
        // The refusal leaves the connection working.
        assert_eq!(client.call(&5, TIMEOUT).await.unwrap(), 6);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_caller_without_the_secret_or_with_a_wrong_one_is_refused() {
        let shutdown = CancellationToken::new();
        let addr = start(env_of("a", Some(member_secret(1))), &shutdown).await;

        let msg = forbidden(connect(&env_of("a", None), &addr).await, "no secret");
        assert!(
            msg.contains(&addr)
                && msg.contains("requires the cluster secret")
                && msg.contains("--cluster-secret-file"),
            "{msg}"
        );
        for wrong in [member_secret(2), member_secret(2).client_part()] {
            let msg = forbidden(
                connect(&env_of("a", Some(wrong)), &addr).await,
                "a wrong secret",
            );
            // The service's own proof already fails against the wrong key.
            assert!(msg.contains("could not prove the cluster secret"), "{msg}");
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_caller_with_a_secret_refuses_a_service_without_one() {
        let shutdown = CancellationToken::new();
        let addr = start(env_of("a", None), &shutdown).await;
        let msg = forbidden(
            connect(&env_of("a", Some(member_secret(1))), &addr).await,
            "a service that checks nothing",
        );
        assert!(msg.contains("does not check the cluster secret"), "{msg}");
        shutdown.cancel();
    }

    /// A transport that records every byte its connections write.
    struct Recording(Arc<Mutex<Vec<u8>>>);

    struct Tee {
        inner: Conn,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl tokio::io::AsyncRead for Tee {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for Tee {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
            if let std::task::Poll::Ready(Ok(n)) = &polled {
                self.written.lock().unwrap().extend_from_slice(&buf[..*n]);
            }
            polled
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl Transport for Recording {
        fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Conn>> {
            Box::pin(async move {
                let inner = Tcp.connect(addr).await?;
                Ok(Box::new(Tee {
                    inner,
                    written: self.0.clone(),
                }) as Conn)
            })
        }

        fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Box<dyn Listener>>> {
            Tcp.bind(addr)
        }
    }

    #[tokio::test]
    async fn a_recorded_hello_replayed_on_a_new_connection_is_refused() {
        let shutdown = CancellationToken::new();
        let secret = member_secret(1);
        let addr = start(env_of("a", Some(secret.clone())), &shutdown).await;

        // A client's whole handshake, as an eavesdropper would record it off the wire.
        let written = Arc::new(Mutex::new(Vec::new()));
        let recording = Env {
            transport: Arc::new(Recording(written.clone())),
            ..env_of("a", Some(secret.client_part()))
        };
        let client = connect(&recording, &addr).await.unwrap();
        assert_eq!(client.call(&1, TIMEOUT).await.unwrap(), 2);
        drop(client);
        let recorded = written.lock().unwrap().clone();

        // Replayed byte for byte, hello and proof, on a connection of its own: the service's
        // fresh nonce makes the old proof wrong.
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(&recorded).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "the replayed hello was neither refused nor closed"
        );
        let mut wire = codec();
        let mut buffer = bytes::BytesMut::from(&answer[..]);
        let mut refusals = Vec::new();
        while let Ok(Some(frame)) = tokio_util::codec::Decoder::decode(&mut wire, &mut buffer) {
            if let Ok(envelope) = decode::<Result<Response<u64>>>(&frame) {
                if let Err(err) = envelope.body {
                    refusals.push(err);
                } else if let Ok(Response::Reply(n)) = envelope.body {
                    panic!("the replayed connection was served: {n}");
                }
            }
        }
        assert!(
            matches!(refusals.as_slice(), [Error::Forbidden(msg)] if msg.contains("replayed hello")),
            "{refusals:?}"
        );
        shutdown.cancel();
    }
}
