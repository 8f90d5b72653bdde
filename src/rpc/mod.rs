//! The wire: frames, messages, the serving loop and the calling side.
//!
//! One TCP connection carries many requests. Each frame is a 4-byte big-endian length and a
//! postcard-encoded [`message::Envelope`] `{request_id, body}`; replies carry the id of their
//! request, so a connection is pipelined and pooled. The first exchange on a connection is a hello
//! naming the protocol version, the service and the cluster, so a client that dialled the wrong
//! port, an old binary, or a process of another cluster is told so instead of having its bytes
//! misread (or, worse, understood); where the cluster has a secret, both ends prove it there
//! ([`handshake`]).

pub mod client;
pub mod frame;
pub mod handshake;
pub mod locator;
pub mod message;
pub mod server;
