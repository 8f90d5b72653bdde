//! Bad input at a live storage server and view leader (tier 2: both in this process, on port 0).
//!
//! Each test starts a view leader and a storage server, stores some data, opens one well-behaved
//! connection to each, and then sends one kind of bad input to both over raw TCP: a frame over
//! the size limit, random bytes, a truncated frame, an unknown request, a wrong protocol version,
//! a hello for the wrong service or from another cluster. The offending peer must get an error reply or a closed
//! connection (a hello for the wrong service is answered with the service's own kind, then closed) (never a hang: every read is bounded), and afterwards both processes must go on
//! serving the connection that was already open and fresh clients, with the stored data unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use ringleader::client::ClientOptions;
use ringleader::net::{Env, CLUSTER_DEFAULT, CLUSTER_NAME_MAX_BYTES};
use ringleader::rpc::frame::{decode, encode, FRAME_BYTES_MAX};
use ringleader::rpc::message::{
    Envelope, Request, Response, ServerReply, ServerRequest, ServiceKind, ViewLeaderReply,
    ViewLeaderRequest, PROTOCOL_VERSION,
};
use ringleader::server::ServerOptions;
use ringleader::types::{Space, Value, Versioned};
use ringleader::viewleader::ViewLeaderOptions;
use ringleader::{Client, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest wait for any one answer: well under the peers' 5 s handshake timeout, so a peer that
/// sits waiting for bytes that never come is caught as a hang rather than excused by it.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a cancelled process to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a peer's reply to bad input decodes as.
type ErrorReply = Envelope<Result<Response<()>, Error>>;

/// A view leader and a storage server in this process, with data stored and one healthy raw
/// connection open to each.
struct Cluster {
    vl_addr: String,
    server_addr: String,
    token: CancellationToken,
    vl: JoinHandle<ringleader::Result<()>>,
    server: JoinHandle<ringleader::Result<()>>,
    /// What the server must hold: key → stored value and version.
    expected: BTreeMap<String, Versioned>,
    /// Connections opened before the bad input, used again after it.
    vl_conn: TcpStream,
    server_conn: TcpStream,
    next_id: u64,
}

impl Cluster {
    async fn start() -> Self {
        let token = CancellationToken::new();
        let vl_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let vl_addr = vl_listener.local_addr().unwrap().to_string();
        let vl = tokio::spawn(ringleader::viewleader::run(
            Box::new(vl_listener),
            ViewLeaderOptions::default(),
            ringleader::net::Env::real(),
            token.clone(),
        ));
        let server_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server_listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(ringleader::server::run(
            Box::new(server_listener),
            ServerOptions {
                viewleader: vl_addr.clone(),
                ..Default::default()
            },
            ringleader::net::Env::real(),
            ringleader::server::Storage::Memory,
            token.clone(),
            CancellationToken::new(),
        ));

        let client = client(&vl_addr);
        let mut expected = BTreeMap::new();
        for (key, value) in [("alpha", "one"), ("beta", "two"), ("gamma", "three")] {
            let value = Value::Text(value.into());
            let version = client.set(&server_addr, key, value.clone()).await.unwrap();
            expected.insert(key.to_string(), Versioned { value, version });
        }
        // The server joins the view through its heartbeats.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let view = client.query_servers().await.unwrap();
            if view.servers.iter().any(|s| s.addr == server_addr) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server never joined the view: {view:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let vl_conn = connect_with_hello(&vl_addr, ServiceKind::ViewLeader).await;
        let server_conn = connect_with_hello(&server_addr, ServiceKind::Server).await;
        Self {
            vl_addr,
            server_addr,
            token,
            vl,
            server,
            expected,
            vl_conn,
            server_conn,
            next_id: 100,
        }
    }

    fn addr(&self, service: ServiceKind) -> &str {
        match service {
            ServiceKind::ViewLeader => &self.vl_addr,
            ServiceKind::Server => &self.server_addr,
        }
    }

    /// Both processes still serve: the connection opened before the bad input answers, a fresh
    /// client can `set`/`get` and `query_servers`, and the stored data is what it was.
    async fn assert_still_serving(&mut self, after: &str) {
        // The connections that were open all along.
        self.next_id += 1;
        let id = self.next_id;
        assert_server_get(
            &mut self.server_conn,
            id,
            "alpha",
            self.expected.get("alpha"),
        )
        .await;
        self.next_id += 1;
        let id = self.next_id;
        let view = assert_query_servers(&mut self.vl_conn, id).await;
        assert!(
            view.servers.iter().any(|s| s.addr == self.server_addr),
            "after {after}: the server left the view: {view:?}"
        );

        // A fresh client, with fresh connections.
        let client = client(&self.vl_addr);
        let keys = client
            .query_all_keys(&self.server_addr, Space::Local)
            .await
            .unwrap();
        let expected_keys: Vec<String> = self.expected.keys().cloned().collect();
        assert_eq!(keys, expected_keys, "after {after}: the keys changed");
        for (key, versioned) in &self.expected {
            let got = client
                .get(&self.server_addr, Space::Local, key)
                .await
                .unwrap();
            assert_eq!(
                got.as_ref(),
                Some(versioned),
                "after {after}: {key} changed"
            );
        }
        let key = format!("written-after-{}", self.expected.len());
        let value = Value::Text(format!("after {after}"));
        let version = client
            .set(&self.server_addr, &key, value.clone())
            .await
            .unwrap();
        let got = client
            .get(&self.server_addr, Space::Local, &key)
            .await
            .unwrap();
        assert_eq!(
            got,
            Some(Versioned {
                value: value.clone(),
                version
            })
        );
        self.expected.insert(key, Versioned { value, version });
        let view = client.query_servers().await.unwrap();
        assert!(view.servers.iter().any(|s| s.addr == self.server_addr));
    }

    async fn stop(self) {
        drop(self.vl_conn);
        drop(self.server_conn);
        self.token.cancel();
        for (name, handle) in [("server", self.server), ("view leader", self.vl)] {
            let result = tokio::time::timeout(SHUTDOWN_TIMEOUT, handle)
                .await
                .unwrap_or_else(|_| panic!("the {name} did not stop after cancellation"))
                .unwrap();
            assert!(result.is_ok(), "the {name} stopped with {result:?}");
        }
    }
}

fn client(vl_addr: &str) -> Client {
    Client::new(ClientOptions {
        viewleader: vl_addr.to_string(),
        ..Default::default()
    })
}

// ----- raw frames --------------------------------------------------------------------------------

async fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

async fn send_frame(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(&framed(payload)).await.unwrap();
}

fn hello_payload(request_id: u64, protocol_version: u32, service: ServiceKind) -> Vec<u8> {
    hello_payload_in(request_id, protocol_version, service, CLUSTER_DEFAULT)
}

/// A hello from a process of `cluster`.
fn hello_payload_in(
    request_id: u64,
    protocol_version: u32,
    service: ServiceKind,
    cluster: &str,
) -> Vec<u8> {
    let hello: Request<()> = Request::Hello {
        protocol_version,
        service,
        cluster: cluster.to_string(),
        auth: None,
    };
    encode(request_id, &hello).unwrap().to_vec()
}

/// The next frame, or `None` if the peer closed (or reset) the connection. Panics on a hang.
async fn read_frame(stream: &mut TcpStream, what: &str) -> Option<Vec<u8>> {
    let read = async {
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes(head) as usize;
        assert!(
            len <= FRAME_BYTES_MAX,
            "{what}: a reply frame of {len} bytes"
        );
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        Some(payload)
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: no reply and no close within {READ_TIMEOUT:?}"))
}

/// The peer's error reply to bad input.
async fn read_error(stream: &mut TcpStream, what: &str) -> (u64, Error) {
    let payload = read_frame(stream, what)
        .await
        .unwrap_or_else(|| panic!("{what}: the connection closed without an error reply"));
    let envelope: ErrorReply =
        decode(&payload).unwrap_or_else(|(_, err)| panic!("{what}: an undecodable reply: {err}"));
    match envelope.body {
        Err(err) => (envelope.request_id, err),
        Ok(other) => panic!("{what}: expected an error reply, got {other:?}"),
    }
}

/// Error replies (any number) and then a closed connection, within the timeout.
async fn assert_errors_then_closed(stream: &mut TcpStream, what: &str) -> Vec<Error> {
    let mut errors = Vec::new();
    while let Some(payload) = read_frame(stream, what).await {
        let envelope: ErrorReply = decode(&payload)
            .unwrap_or_else(|(_, err)| panic!("{what}: an undecodable reply: {err}"));
        match envelope.body {
            Err(err) => errors.push(err),
            Ok(other) => panic!("{what}: expected an error or a close, got {other:?}"),
        }
        assert!(errors.len() < 16, "{what}: a stream of error replies");
    }
    errors
}

async fn assert_closed(stream: &mut TcpStream, what: &str) {
    if let Some(payload) = read_frame(stream, what).await {
        let reply: Result<ErrorReply, _> = decode(&payload);
        panic!("{what}: expected the connection closed, got another frame {reply:?}");
    }
}

async fn connect_with_hello(addr: &str, service: ServiceKind) -> TcpStream {
    let mut stream = connect(addr).await;
    send_frame(&mut stream, &hello_payload(0, PROTOCOL_VERSION, service)).await;
    let payload = read_frame(&mut stream, "hello")
        .await
        .expect("closed during the handshake");
    let envelope: ErrorReply = decode(&payload).unwrap_or_else(|(_, err)| panic!("{err}"));
    match envelope.body {
        Ok(Response::Hello {
            protocol_version,
            service: answered,
            cluster,
            challenge: None,
        }) => {
            assert_eq!(protocol_version, PROTOCOL_VERSION);
            assert_eq!(answered, service);
            assert_eq!(cluster, CLUSTER_DEFAULT);
        }
        other => panic!("hello to the {service:?} answered {other:?}"),
    }
    stream
}

/// A `get` on a raw connection to the server answers the expected value.
async fn assert_server_get(
    stream: &mut TcpStream,
    request_id: u64,
    key: &str,
    expected: Option<&Versioned>,
) {
    let request = Request::Call(ServerRequest::Get {
        key: key.into(),
        space: Space::Local,
    });
    send_frame(stream, &encode(request_id, &request).unwrap()).await;
    let payload = read_frame(stream, "get")
        .await
        .expect("the server closed a healthy connection");
    let envelope: Envelope<Result<Response<ServerReply>, Error>> =
        decode(&payload).unwrap_or_else(|(_, err)| panic!("{err}"));
    assert_eq!(envelope.request_id, request_id);
    match envelope.body {
        Ok(Response::Reply(ServerReply::Value(value))) => assert_eq!(value.as_ref(), expected),
        other => panic!("get {key} answered {other:?}"),
    }
}

/// A `query_servers` on a raw connection to the view leader answers a view.
async fn assert_query_servers(stream: &mut TcpStream, request_id: u64) -> ringleader::types::View {
    let request = Request::Call(ViewLeaderRequest::QueryServers);
    send_frame(stream, &encode(request_id, &request).unwrap()).await;
    let payload = read_frame(stream, "query_servers")
        .await
        .expect("the view leader closed a healthy connection");
    let envelope: Envelope<Result<Response<ViewLeaderReply>, Error>> =
        decode(&payload).unwrap_or_else(|(_, err)| panic!("{err}"));
    assert_eq!(envelope.request_id, request_id);
    match envelope.body {
        Ok(Response::Reply(ViewLeaderReply::View(view))) => view,
        other => panic!("query_servers answered {other:?}"),
    }
}

/// A valid call on a connection past its hello answers (with its own request id).
async fn assert_connection_works(stream: &mut TcpStream, service: ServiceKind, request_id: u64) {
    match service {
        ServiceKind::Server => {
            assert_server_get(stream, request_id, "no-such-key", None).await;
        }
        ServiceKind::ViewLeader => {
            assert_query_servers(stream, request_id).await;
        }
    }
}

const BOTH: [ServiceKind; 2] = [ServiceKind::Server, ServiceKind::ViewLeader];

fn other_service(service: ServiceKind) -> ServiceKind {
    match service {
        ServiceKind::Server => ServiceKind::ViewLeader,
        ServiceKind::ViewLeader => ServiceKind::Server,
    }
}

/// Whether `payload` would decode as a request of either service (random bytes sometimes do).
fn decodes_as_a_request(payload: &[u8]) -> bool {
    decode::<Request<ServerRequest>>(payload).is_ok()
        || decode::<Request<ViewLeaderRequest>>(payload).is_ok()
}

/// Random bytes that do not happen to decode as a request (which could change the store).
fn random_non_request(rng: &mut impl Rng) -> Vec<u8> {
    loop {
        let len = rng.gen_range(1..256);
        let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if !decodes_as_a_request(&payload) {
            return payload;
        }
    }
}

// ----- the tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_size_limit_gets_an_error_and_a_close() {
    let mut cluster = Cluster::start().await;
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        for length in [FRAME_BYTES_MAX as u32 + 1, u32::MAX] {
            // As the very first frame...
            let what = format!("{length}-byte frame before hello to the {service:?}");
            let mut stream = connect(&addr).await;
            stream.write_all(&length.to_be_bytes()).await.unwrap();
            let (_, err) = read_error(&mut stream, &what).await;
            assert!(matches!(err, Error::InvalidRequest(_)), "{what}: {err:?}");
            assert_closed(&mut stream, &what).await;

            // ...and after a good hello.
            let what = format!("{length}-byte frame after hello to the {service:?}");
            let mut stream = connect_with_hello(&addr, service).await;
            stream.write_all(&length.to_be_bytes()).await.unwrap();
            let (_, err) = read_error(&mut stream, &what).await;
            assert!(matches!(err, Error::InvalidRequest(_)), "{what}: {err:?}");
            assert_closed(&mut stream, &what).await;
        }
        cluster
            .assert_still_serving(&format!("oversized frames to the {service:?}"))
            .await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_get_an_error_or_a_close() {
    let mut cluster = Cluster::start().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        for round in 0..8 {
            // Unframed garbage instead of a hello, then the end of our stream.
            let what = format!("random bytes (round {round}) to the {service:?}");
            let len = rng.gen_range(1..512);
            let garbage: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let mut stream = connect(&addr).await;
            stream.write_all(&garbage).await.unwrap();
            let _ = stream.shutdown().await;
            assert_errors_then_closed(&mut stream, &what).await;

            // A well-framed frame of garbage instead of a hello: an error and a close.
            let what = format!("a first frame of random bytes (round {round}) to the {service:?}");
            let payload = random_non_request(&mut rng);
            let mut stream = connect(&addr).await;
            send_frame(&mut stream, &payload).await;
            let (_, err) = read_error(&mut stream, &what).await;
            assert!(matches!(err, Error::Protocol(_)), "{what}: {err:?}");
            assert_closed(&mut stream, &what).await;

            // Well-framed garbage after a good hello: an error reply, and the connection goes on.
            let what = format!("a frame of random bytes (round {round}) to the {service:?}");
            let payload = random_non_request(&mut rng);
            let mut stream = connect_with_hello(&addr, service).await;
            send_frame(&mut stream, &payload).await;
            let (_, err) = read_error(&mut stream, &what).await;
            assert!(matches!(err, Error::InvalidRequest(_)), "{what}: {err:?}");
            assert_connection_works(&mut stream, service, 9).await;
        }
        cluster
            .assert_still_serving(&format!("random bytes to the {service:?}"))
            .await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_gets_an_error_or_a_close() {
    let mut cluster = Cluster::start().await;
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[7u8; 10]);
    for service in BOTH {
        let addr = cluster.addr(service).to_string();

        let what = format!("a truncated first frame to the {service:?}");
        let mut stream = connect(&addr).await;
        stream.write_all(&truncated).await.unwrap();
        let _ = stream.shutdown().await;
        assert_errors_then_closed(&mut stream, &what).await;

        let what = format!("a truncated frame after hello to the {service:?}");
        let mut stream = connect_with_hello(&addr, service).await;
        stream.write_all(&truncated).await.unwrap();
        let _ = stream.shutdown().await;
        let errors = assert_errors_then_closed(&mut stream, &what).await;
        assert!(
            errors
                .iter()
                .all(|err| matches!(err, Error::InvalidRequest(_))),
            "{what}: {errors:?}"
        );

        cluster
            .assert_still_serving(&format!("truncated frames to the {service:?}"))
            .await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_request_gets_an_error_with_its_id_and_the_connection_keeps_working() {
    let mut cluster = Cluster::start().await;
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        let mut stream = connect_with_hello(&addr, service).await;
        let bodies: [(&str, &[u8]); 3] = [
            // A call whose request enum index (200) no service has.
            ("an unknown call", &[1, 0xc8, 0x01]),
            // A body whose own enum index (7) is neither hello nor call.
            ("an unknown body kind", &[7]),
            // A known call cut short: Get without its key.
            ("a call missing its fields", &[1, 2]),
        ];
        for (round, (kind, body)) in bodies.into_iter().enumerate() {
            let what = format!("{kind} to the {service:?}");
            let request_id = 77 + round as u64;
            let mut payload = postcard::to_stdvec(&request_id).unwrap();
            payload.extend_from_slice(body);
            assert!(!decodes_as_a_request(&payload), "{what} decodes");
            send_frame(&mut stream, &payload).await;
            let (id, err) = read_error(&mut stream, &what).await;
            assert_eq!(id, request_id, "{what}: the error carries the request's id");
            assert!(matches!(err, Error::InvalidRequest(_)), "{what}: {err:?}");
            // The frame boundary held, so the same connection goes on.
            assert_connection_works(&mut stream, service, request_id + 1000).await;
        }
        cluster
            .assert_still_serving(&format!("unknown requests to the {service:?}"))
            .await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_a_wrong_protocol_version_gets_an_error_and_a_close() {
    let mut cluster = Cluster::start().await;
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        for version in [0, PROTOCOL_VERSION + 1, u32::MAX] {
            let what = format!("a hello of version {version} to the {service:?}");
            let mut stream = connect(&addr).await;
            send_frame(&mut stream, &hello_payload(5, version, service)).await;
            let (id, err) = read_error(&mut stream, &what).await;
            assert_eq!(id, 5, "{what}: the error carries the hello's id");
            assert!(matches!(err, Error::Protocol(_)), "{what}: {err:?}");
            assert_closed(&mut stream, &what).await;
        }
        cluster
            .assert_still_serving(&format!("wrong protocol versions to the {service:?}"))
            .await;
    }
    cluster.stop().await;
}

/// A hello for the other service (of this protocol version) is answered with the service's own
/// kind, so the caller can say which flag the address belongs to, and then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_for_the_wrong_service_gets_our_kind_and_a_close() {
    let mut cluster = Cluster::start().await;
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        let wrong = other_service(service);
        let what = format!("a hello for the {wrong:?} sent to the {service:?}");
        let mut stream = connect(&addr).await;
        send_frame(&mut stream, &hello_payload(6, PROTOCOL_VERSION, wrong)).await;
        let payload = read_frame(&mut stream, &what)
            .await
            .unwrap_or_else(|| panic!("{what}: the connection closed without a reply"));
        let envelope: ErrorReply = decode(&payload)
            .unwrap_or_else(|(_, err)| panic!("{what}: an undecodable reply: {err}"));
        assert_eq!(envelope.request_id, 6);
        match envelope.body {
            Ok(Response::Hello {
                service: theirs, ..
            }) => assert_eq!(theirs, service, "{what}"),
            other => panic!("{what}: expected a hello naming the {service:?}, got {other:?}"),
        }
        assert_closed(&mut stream, &what).await;

        // A fresh client dialling the wrong service is told so, not misled.
        let client = client(&cluster.vl_addr);
        match service {
            ServiceKind::ViewLeader => {
                let err = client.get(&addr, Space::Local, "alpha").await.unwrap_err();
                assert!(matches!(err, Error::Protocol(_)), "{what}: {err:?}");
                assert!(
                    err.to_string().contains("use --viewleader"),
                    "{what}: {err}"
                );
            }
            ServiceKind::Server => {
                let wrong_client = Client::new(ClientOptions {
                    viewleader: addr.clone(),
                    ..Default::default()
                });
                let err = wrong_client.query_servers().await.unwrap_err();
                assert!(matches!(err, Error::Protocol(_)), "{what}: {err:?}");
                assert!(err.to_string().contains("use --server"), "{what}: {err}");
            }
        }
        cluster
            .assert_still_serving(&format!("a wrong-service hello to the {service:?}"))
            .await;
    }
    cluster.stop().await;
}

/// Whether `err` is the refusal of a hello between clusters `service_cluster` and
/// `caller_cluster`, naming both.
fn names_both_clusters(err: &Error, service_cluster: &str, caller_cluster: &str) -> bool {
    matches!(err, Error::Protocol(msg)
        if msg.contains(&format!("cluster {service_cluster:?}"))
            && msg.contains(&format!("cluster {caller_cluster:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_from_another_cluster_gets_an_error_naming_both_and_a_close() {
    let mut cluster = Cluster::start().await;
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        let what = format!("a hello from cluster \"elsewhere\" to the {service:?}");
        let mut stream = connect(&addr).await;
        send_frame(
            &mut stream,
            &hello_payload_in(7, PROTOCOL_VERSION, service, "elsewhere"),
        )
        .await;
        let (id, err) = read_error(&mut stream, &what).await;
        assert_eq!(id, 7);
        assert!(
            names_both_clusters(&err, CLUSTER_DEFAULT, "elsewhere"),
            "{what}: {err:?}"
        );
        assert_closed(&mut stream, &what).await;

        // A name no process may take (too long, not printable) is refused and quoted cut.
        let long = "\u{7}".repeat(10 * CLUSTER_NAME_MAX_BYTES);
        let mut stream = connect(&addr).await;
        send_frame(
            &mut stream,
            &hello_payload_in(8, PROTOCOL_VERSION, service, &long),
        )
        .await;
        let (_, err) = read_error(&mut stream, &what).await;
        assert!(
            matches!(&err, Error::Protocol(msg) if msg.len() < 20 * CLUSTER_NAME_MAX_BYTES),
            "{what}: the refusal quotes the whole foreign name: {err:?}"
        );
        assert_closed(&mut stream, &what).await;

        // A library client of another cluster is refused, both names in the error.
        let env = Env::real().in_cluster("elsewhere").unwrap();
        let stranger = Client::with_env(
            ClientOptions {
                viewleader: cluster.vl_addr.clone(),
                ..Default::default()
            },
            env,
        );
        let err = match service {
            ServiceKind::ViewLeader => stranger.query_servers().await.unwrap_err(),
            ServiceKind::Server => stranger
                .get(&addr, Space::Local, "alpha")
                .await
                .unwrap_err(),
        };
        assert!(
            names_both_clusters(&err, CLUSTER_DEFAULT, "elsewhere")
                && err.to_string().contains(&addr),
            "a client of another cluster calling the {service:?}: {err}"
        );
        cluster
            .assert_still_serving(&format!("hellos from another cluster to the {service:?}"))
            .await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hello_from_another_cluster_is_refused_and_the_connection_goes_on() {
    let mut cluster = Cluster::start().await;
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        let what = format!("a second hello, from another cluster, to the {service:?}");
        let mut stream = connect_with_hello(&addr, service).await;
        send_frame(
            &mut stream,
            &hello_payload_in(13, PROTOCOL_VERSION, service, "elsewhere"),
        )
        .await;
        let (id, err) = read_error(&mut stream, &what).await;
        assert_eq!(id, 13);
        assert!(
            names_both_clusters(&err, CLUSTER_DEFAULT, "elsewhere"),
            "{what}: {err:?}"
        );
        assert_connection_works(&mut stream, service, 14).await;
        cluster.assert_still_serving(&what).await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_before_the_hello_gets_an_error_and_a_close() {
    let mut cluster = Cluster::start().await;
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        let what = format!("a call before hello to the {service:?}");
        let payload = match service {
            ServiceKind::Server => encode(
                3,
                &Request::Call(ServerRequest::Set {
                    key: "alpha".into(),
                    value: Value::Text("overwritten".into()),
                    request_id: None,
                }),
            ),
            ServiceKind::ViewLeader => encode(
                3,
                &Request::Call(ViewLeaderRequest::Leave {
                    server_id: "whoever".into(),
                }),
            ),
        }
        .unwrap();
        let mut stream = connect(&addr).await;
        send_frame(&mut stream, &payload).await;
        let (id, err) = read_error(&mut stream, &what).await;
        assert_eq!(id, 3);
        assert!(matches!(err, Error::Protocol(_)), "{what}: {err:?}");
        assert_closed(&mut stream, &what).await;
        cluster
            .assert_still_serving(&format!("a call before hello to the {service:?}"))
            .await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hello_with_a_wrong_version_is_refused_and_the_connection_goes_on() {
    let mut cluster = Cluster::start().await;
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        let what = format!("a second, wrong hello to the {service:?}");
        let mut stream = connect_with_hello(&addr, service).await;
        send_frame(
            &mut stream,
            &hello_payload(11, PROTOCOL_VERSION + 1, service),
        )
        .await;
        let (id, err) = read_error(&mut stream, &what).await;
        assert_eq!(id, 11);
        assert!(matches!(err, Error::Protocol(_)), "{what}: {err:?}");
        assert_connection_works(&mut stream, service, 12).await;
        cluster
            .assert_still_serving(&format!("a second hello to the {service:?}"))
            .await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_request_is_reported_as_an_unknown_request() {
    let cluster = Cluster::start().await;
    for service in BOTH {
        let addr = cluster.addr(service).to_string();
        let mut stream = connect_with_hello(&addr, service).await;
        let mut payload = postcard::to_stdvec(&42u64).unwrap();
        payload.extend_from_slice(&[1, 0xc8, 0x01]);
        send_frame(&mut stream, &payload).await;
        let what = format!("an unknown call to the {service:?}");
        let (id, err) = read_error(&mut stream, &what).await;
        assert_eq!(id, 42);
        assert!(
            matches!(&err, Error::InvalidRequest(text) if text.contains("unknown request")),
            "{what}: {err:?}"
        );
    }
    cluster.stop().await;
}
