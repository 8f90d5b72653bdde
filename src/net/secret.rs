//! The cluster secret: what a process proves in every hello so that nobody outside the cluster
//! can speak to it (the handshake itself is `crate::rpc::handshake`).
//!
//! There are two keys, so that a client cannot speak as a member:
//! * the **member key**, 32 random bytes, held by the view leader's members and the storage
//!   servers (and by an operator's tools that need a member's rights);
//! * the **client key**, derived from the member key with HMAC-SHA256 under a fixed label. Every
//!   member can compute it and so check a client's proof; a client holding only it cannot work
//!   back to the member key.
//!
//! A secret file is one line of text: `ringleader-member-secret-v1:` or
//! `ringleader-client-secret-v1:` and 64 hex digits. `client secrets DIR` writes a member file and
//! the client file derived from it.
//!
//! Proofs are HMAC-SHA256 under the key of the role claimed, over a domain tag and a transcript
//! of the hello (both sides' fresh nonces among it), so a proof never travels twice and the
//! secret never travels at all.
//!
//! # Deliberately left out
//! * Per-member keys or certificates naming a member: every member holds the same member key,
//!   so a member could claim another's identity (TLS certificates prove only that a peer belongs
//!   to the CA). A member is trusted.
//! * Rotation without a restart: a process reads its file once, at start.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::errinput;
use crate::error::{Error, Result};

/// Bytes in a key, a nonce and a proof.
pub const SECRET_BYTES: usize = 32;
/// Longest secret file read, in bytes: a real one is under 100; a larger file is the wrong one.
pub const SECRET_FILE_BYTES_MAX: u64 = 4 * 1024;

const MEMBER_PREFIX: &str = "ringleader-member-secret-v1:";
const CLIENT_PREFIX: &str = "ringleader-client-secret-v1:";
/// What the client key is derived under: changing it changes every client key.
const CLIENT_KEY_LABEL: &[u8] = b"ringleader client key v1";

/// Who a process proves to be in its hellos.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A view-leader member or a storage server: may send every request.
    Member,
    /// A client: reads, writes, locks, views; never a request only members exchange.
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Member => f.write_str("member"),
            Role::Client => f.write_str("client"),
        }
    }
}

/// A secret as a process holds it: the member key (members only) and the client key.
#[derive(Clone)]
pub struct ClusterSecret {
    member_key: Option<[u8; SECRET_BYTES]>,
    client_key: [u8; SECRET_BYTES],
}

/// Never prints a key.
impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret {{ role: {} }}", self.role())
    }
}

impl ClusterSecret {
    /// A member's secret from its 32-byte member key.
    pub fn member(member_key: [u8; SECRET_BYTES]) -> Self {
        Self {
            member_key: Some(member_key),
            client_key: mac_of(&member_key, &[CLIENT_KEY_LABEL]),
        }
    }

    /// The client's part of this secret: the client key alone.
    pub fn client_part(&self) -> Self {
        Self {
            member_key: None,
            client_key: self.client_key,
        }
    }

    /// The role this secret proves.
    pub fn role(&self) -> Role {
        match self.member_key {
            Some(_) => Role::Member,
            None => Role::Client,
        }
    }

    /// The key proofs of `role` are made with, if this secret holds it.
    fn key_for(&self, role: Role) -> Option<&[u8; SECRET_BYTES]> {
        match role {
            Role::Member => self.member_key.as_ref(),
            Role::Client => Some(&self.client_key),
        }
    }

    /// The proof of `role` over `parts`; `None` if this secret does not hold that role's key.
    pub fn prove(&self, role: Role, parts: &[&[u8]]) -> Option<[u8; SECRET_BYTES]> {
        self.key_for(role).map(|key| mac_of(key, parts))
    }

    /// Whether `proof` is the proof of `role` over `parts`, compared in constant time.
    pub fn verify(&self, role: Role, parts: &[&[u8]], proof: &[u8]) -> bool {
        let Some(key) = self.key_for(role) else {
            return false;
        };
        let mut mac = new_mac(key);
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(proof).is_ok()
    }

    /// The secret file's text: the prefix of its role, then the key in hex, then a newline.
    pub fn to_file_text(&self) -> String {
        let (prefix, key) = match &self.member_key {
            Some(key) => (MEMBER_PREFIX, key),
            None => (CLIENT_PREFIX, &self.client_key),
        };
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!("{prefix}{hex}\n")
    }

    /// Reads a secret file's text (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let (role, hex) = if let Some(hex) = text.strip_prefix(MEMBER_PREFIX) {
            (Role::Member, hex)
        } else if let Some(hex) = text.strip_prefix(CLIENT_PREFIX) {
            (Role::Client, hex)
        } else {
            return Err(errinput!(
                "not a ringleader secret: it must start with {MEMBER_PREFIX:?} or \
                 {CLIENT_PREFIX:?} (make one with `client secrets DIR`)"
            ));
        };
        let key = parse_key(hex)?;
        Ok(match role {
            Role::Member => Self::member(key),
            Role::Client => Self {
                member_key: None,
                client_key: key,
            },
        })
    }

    /// Reads the secret file at `path`. A file others may read is accepted with a warning, as
    /// a key that may have leaked is the operator's call.
    pub fn load(path: &Path) -> Result<Self> {
        let shown = path.display();
        let metadata = std::fs::metadata(path)
            .map_err(|err| errinput!("cannot read the cluster secret file {shown}: {err}"))?;
        if metadata.len() > SECRET_FILE_BYTES_MAX {
            return Err(errinput!(
                "the cluster secret file {shown} is {} bytes; a secret file is one short line \
                 (at most {SECRET_FILE_BYTES_MAX} bytes): is it the right file?",
                metadata.len()
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if metadata.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %shown, "the cluster secret file can be read by other users; chmod 600 it");
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|err| errinput!("cannot read the cluster secret file {shown}: {err}"))?;
        Self::parse(&text).map_err(|err| match err {
            Error::InvalidRequest(msg) => errinput!("the cluster secret file {shown}: {msg}"),
            other => other,
        })
    }
}

/// 32 fresh bytes from `env`'s randomness: a nonce, or a new member key.
pub fn fresh_bytes(env: &super::Env) -> [u8; SECRET_BYTES] {
    let mut bytes = [0u8; SECRET_BYTES];
    bytes[..16].copy_from_slice(&env.random_u128().to_le_bytes());
    bytes[16..].copy_from_slice(&env.random_u128().to_le_bytes());
    bytes
}

/// Refuses to listen on `host` without a secret unless `host` is loopback: without one, every
/// caller is trusted with a member's rights, which only the processes of this machine may have.
/// A name other than `localhost` counts as loopback only if every address it resolves to is.
pub fn require_secret_off_loopback(host: &str, secret: Option<&ClusterSecret>) -> Result<()> {
    if secret.is_some() || is_loopback(host) {
        return Ok(());
    }
    Err(errinput!(
        "refusing to listen on {host} without a cluster secret: anyone who can reach it could \
         write any key, join or drop servers, and take locks. Make a secret with `client \
         secrets DIR`, then start every view leader and server with --cluster-secret-file \
         DIR/member.secret and every client with --cluster-secret-file DIR/client.secret (or \
         listen on 127.0.0.1)"
    ))
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    use std::net::ToSocketAddrs;
    match (bare, 0u16).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|addr| addr.ip().is_loopback())
        }
        Err(_) => false,
    }
}

type HmacSha256 = Hmac<Sha256>;

fn new_mac(key: &[u8; SECRET_BYTES]) -> HmacSha256 {
    // HMAC takes a key of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

fn mac_of(key: &[u8; SECRET_BYTES], parts: &[&[u8]]) -> [u8; SECRET_BYTES] {
    let mut mac = new_mac(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn parse_key(hex: &str) -> Result<[u8; SECRET_BYTES]> {
    if hex.len() != 2 * SECRET_BYTES || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(errinput!(
            "the key must be {} hex digits, found {} characters",
            2 * SECRET_BYTES,
            hex.chars().count()
        ));
    }
    let mut key = [0u8; SECRET_BYTES];
    for (i, byte) in key.iter_mut().enumerate() {
        let digits = &hex[2 * i..2 * i + 2];
        *byte = u8::from_str_radix(digits, 16)
            .map_err(|err| errinput!("bad hex digits {digits:?} in the key: {err}"))?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> ClusterSecret {
        ClusterSecret::member([7; SECRET_BYTES])
    }

    #[test]
    fn a_secret_file_reads_back_as_the_same_secret() {
        for secret in [member(), member().client_part()] {
            let again = ClusterSecret::parse(&secret.to_file_text()).unwrap();
            assert_eq!(again.role(), secret.role());
            assert_eq!(again.client_key, secret.client_key);
            assert_eq!(again.member_key, secret.member_key);
        }
    }

    #[test]
    fn a_client_proves_as_a_client_and_never_as_a_member() {
        let member = member();
        let client = member.client_part();
        let parts: &[&[u8]] = &[b"transcript"];
        let proof = client.prove(Role::Client, parts).unwrap();
        assert!(member.verify(Role::Client, parts, &proof));
        assert!(client.prove(Role::Member, parts).is_none());
        assert!(!member.verify(Role::Member, parts, &proof));
        // A member's proof is checked against the member key only.
        let member_proof = member.prove(Role::Member, parts).unwrap();
        assert!(member.verify(Role::Member, parts, &member_proof));
        assert!(!client.verify(Role::Member, parts, &member_proof));
        assert!(!member.verify(Role::Member, &[b"another"], &member_proof));
    }

    #[test]
    fn another_members_key_gives_other_proofs() {
        let other = ClusterSecret::member([8; SECRET_BYTES]);
        let parts: &[&[u8]] = &[b"t"];
        let proof = other.prove(Role::Client, parts).unwrap();
        assert!(!member().verify(Role::Client, parts, &proof));
    }

    #[test]
    fn malformed_secret_files_are_refused_with_the_reason() {
        for (text, says) in [
            ("", "not a ringleader secret"),
            ("hunter2", "not a ringleader secret"),
            ("ringleader-member-secret-v1:abcd", "64 hex digits"),
            (
                "ringleader-client-secret-v1:zz00000000000000000000000000000000000000000000000000000000000000",
                "64 hex digits",
            ),
        ] {
            let err = ClusterSecret::parse(text).unwrap_err();
            assert!(err.to_string().contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn without_a_secret_only_loopback_may_be_listened_on() {
        for host in [
            "127.0.0.1",
            "127.0.0.5",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(require_secret_off_loopback(host, None).is_ok(), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1"] {
            let err = require_secret_off_loopback(host, None).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(host)
                    && msg.contains("client secrets DIR")
                    && msg.contains("--cluster-secret-file"),
                "{host}: {msg}"
            );
            assert!(
                require_secret_off_loopback(host, Some(&member())).is_ok(),
                "{host}"
            );
        }
    }

    #[test]
    fn debug_never_prints_a_key() {
        let shown = format!("{:?}", member());
        assert_eq!(shown, "ClusterSecret { role: member }");
    }
}
