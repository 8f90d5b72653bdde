//! The TLS flags every binary shares (`--tls-cert`, `--tls-key`, `--tls-ca`), and
//! `client tls-certs DIR`: a development CA and the certificates it signs, written as PEM files
//! ready for those flags.
//!
//! What `tls-certs` writes:
//! * `ca.pem`, `ca-key.pem`: the CA. Every process trusts `ca.pem`; `ca-key.pem` signs and
//!   belongs on no node.
//! * `node.pem`, `node-key.pem`: for servers and view-leader members, both as the listening
//!   side and when they dial each other (server and client authentication), valid for every
//!   `--host` (default 127.0.0.1, ::1 and localhost): the names callers dial.
//! * `client.pem`, `client-key.pem`: for clients (client authentication only: it cannot serve).
//!
//! Keys are ECDSA P-256, written with mode 0600; nothing is overwritten.
//!
//! # Deliberately left out
//! * Signing with an existing CA, or one certificate per node: this is for development and
//!   tests; production certificates come from the operator's own CA.
//! * Revocation lists.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

use super::output::Output;
use crate::errinput;
use crate::error::{Error, Result};
use crate::net::tls::{self, CA_ENV, CERT_ENV, KEY_ENV};
use crate::net::Env;

/// How long the certificates `tls-certs` makes are valid, in days: long enough for a
/// development cluster to outlive a year of use, short enough that a forgotten key expires.
pub const CERT_VALIDITY_DAYS: i64 = 365;
/// Most `--host` names one node certificate carries.
pub const HOSTS_MAX: usize = 64;
/// The names a node certificate carries without `--host`: loopback, as processes bind by default.
pub const HOSTS_DEFAULT: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// TLS for every connection and port of this process: all three files, or none.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// This process's certificate (PEM, signed by --tls-ca): turns on TLS for every port and
    /// connection. Needs --tls-key and --tls-ca.
    #[arg(long, global = true, value_name = "FILE", env = CERT_ENV)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, value_name = "FILE", env = KEY_ENV)]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate (PEM) every peer's certificate must be signed by.
    #[arg(long, global = true, value_name = "FILE", env = CA_ENV)]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// `env` with TLS when the three files are given (and load), unchanged when none is.
    pub fn apply(&self, env: Env) -> Result<Env> {
        let config = tls::load_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        )?;
        Ok(match config {
            Some(config) => tls::with_tls(env, config),
            None => env,
        })
    }
}

/// `client tls-certs`.
#[derive(clap::Args, Debug)]
pub struct TlsCertsArgs {
    /// Directory to write the PEM files to (created if missing; no file in it is overwritten).
    pub dir: PathBuf,
    /// A name callers use to reach the nodes (IP address or DNS name); repeat for several.
    /// Default: 127.0.0.1, ::1 and localhost.
    #[arg(long = "host", value_name = "H")]
    pub hosts: Vec<String>,
}

/// The PEM files of a development CA and its two certificates.
pub struct DevCerts {
    pub ca: String,
    pub ca_key: String,
    pub node: String,
    pub node_key: String,
    pub client: String,
    pub client_key: String,
}

/// Makes a CA, a node certificate for `hosts` (server and client authentication) and a client
/// certificate (client authentication only), valid from the day before `today` (days since
/// 1970-01-01) for [`CERT_VALIDITY_DAYS`]. `ca_tag` makes the CA's name its own.
pub fn make_certs(hosts: &[String], today: i64, ca_tag: u32) -> Result<DevCerts> {
    let rcgen_err = |what: &str, err: rcgen::Error| Error::Internal(format!("{what}: {err}"));
    let with_validity = |mut params: CertificateParams, cn: &str| {
        let (year, month, day) = civil_date(today - 1);
        params.not_before = rcgen::date_time_ymd(year, month, day);
        let (year, month, day) = civil_date(today + CERT_VALIDITY_DAYS);
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "ringleader development");
        name.push(DnType::CommonName, cn);
        params.distinguished_name = name;
        params.use_authority_key_identifier_extension = true;
        params
    };

    let ca_key = KeyPair::generate().map_err(|err| rcgen_err("CA key", err))?;
    // A name of its own: two development CAs never look like issuers of each other's
    // certificates, so a peer of the other one fails as an unknown issuer.
    let ca_name = format!("ringleader development CA {ca_tag:08x}");
    let mut ca_params = with_validity(CertificateParams::default(), &ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|err| rcgen_err("CA certificate", err))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    for host in hosts {
        if host.parse::<std::net::IpAddr>().is_err()
            && rustls::pki_types::DnsName::try_from(host.as_str()).is_err()
        {
            return Err(errinput!(
                "--host {host:?} is neither an IP address nor a DNS name"
            ));
        }
    }
    let node_params = CertificateParams::new(hosts.to_vec())
        .map_err(|err| errinput!("--host names not usable in a certificate: {err}"))?;
    let mut node_params = with_validity(node_params, "ringleader node");
    node_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    node_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let node_key = KeyPair::generate().map_err(|err| rcgen_err("node key", err))?;
    let node_cert = node_params
        .signed_by(&node_key, &issuer)
        .map_err(|err| rcgen_err("node certificate", err))?;

    let mut client_params = with_validity(CertificateParams::default(), "ringleader client");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let client_key = KeyPair::generate().map_err(|err| rcgen_err("client key", err))?;
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .map_err(|err| rcgen_err("client certificate", err))?;

    Ok(DevCerts {
        ca: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        node: node_cert.pem(),
        node_key: node_key.serialize_pem(),
        client: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

/// Writes the certificates into `args.dir` and prints which flags each process takes; `env`
/// gives the date and the CA's tag.
pub fn run(args: &TlsCertsArgs, env: &Env, out: Output) -> Result<u8> {
    if args.hosts.len() > HOSTS_MAX {
        return Err(errinput!(
            "{} --host names given; a certificate here carries at most {HOSTS_MAX}",
            args.hosts.len()
        ));
    }
    let hosts: Vec<String> = if args.hosts.is_empty() {
        HOSTS_DEFAULT.iter().map(|h| h.to_string()).collect()
    } else {
        args.hosts.clone()
    };
    let today = (env.wall_us() / MICROS_PER_DAY) as i64;
    let certs = make_certs(&hosts, today, env.random_u128() as u32)?;
    let dir = &args.dir;
    // (file, contents, secret): every name is checked before anything is written, so a refusal
    // leaves the directory as it was.
    let files = [
        ("ca.pem", &certs.ca, false),
        ("ca-key.pem", &certs.ca_key, true),
        ("node.pem", &certs.node, false),
        ("node-key.pem", &certs.node_key, true),
        ("client.pem", &certs.client, false),
        ("client-key.pem", &certs.client_key, true),
    ];
    let existing: Vec<String> = files
        .iter()
        .map(|(name, _, _)| dir.join(name))
        .filter(|path| path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err(errinput!(
            "refusing to overwrite {}: choose another directory or remove them",
            existing.join(", ")
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|err| errinput!("cannot create directory {}: {err}", dir.display()))?;
    for (name, contents, secret) in &files {
        write_new(&dir.join(name), contents, *secret)?;
    }

    let path = |name: &str| dir.join(name).display().to_string();
    let node_flags = flags(&path("node.pem"), &path("node-key.pem"), &path("ca.pem"));
    let client_flags = flags(
        &path("client.pem"),
        &path("client-key.pem"),
        &path("ca.pem"),
    );
    out.ok(
        format!(
            "wrote a development CA and certificates to {} (node certificate valid for {})\n\
             servers and view leaders: {}\n\
             clients:                  {}\n\
             keep ca-key.pem off the nodes: whoever holds it can make members",
            dir.display(),
            hosts.join(", "),
            node_flags.join(" "),
            client_flags.join(" ")
        ),
        json!({
            "dir": dir.display().to_string(),
            "hosts": hosts,
            "files": files.iter().map(|(name, _, _)| path(name)).collect::<Vec<_>>(),
            "node_flags": node_flags,
            "client_flags": client_flags,
        }),
    );
    Ok(super::EXIT_OK)
}

fn flags(cert: &str, key: &str, ca: &str) -> Vec<String> {
    ["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Creates `path` (never replacing a file) with `contents`; only its owner may read a secret.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options
        .open(path)
        .map_err(|err| errinput!("cannot create {}: {err}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| Error::Internal(format!("cannot write {}: {err}", path.display())))
}

const MICROS_PER_DAY: u64 = 86_400 * 1_000_000;

/// Year, month and day of day `days` since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_count_from_the_epoch() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }

    #[test]
    fn tls_certs_writes_six_files_keeps_keys_private_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = TlsCertsArgs {
            dir: dir.path().join("certs"),
            hosts: vec!["127.0.0.1".into(), "node-1.example.test".into()],
        };
        let out = Output { json: true };
        assert_eq!(run(&args, &Env::real(), out).expect("tls-certs"), 0);
        let files = [
            "ca.pem",
            "ca-key.pem",
            "node.pem",
            "node-key.pem",
            "client.pem",
            "client-key.pem",
        ];
        for name in files {
            let meta = std::fs::metadata(args.dir.join(name)).expect("written");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if name.ends_with("-key.pem") {
                    assert_eq!(mode, 0o600, "{name} is readable by others");
                }
            }
            assert!(meta.len() > 0, "{name} is empty");
        }
        // What it wrote loads as the flags say, for nodes and for clients.
        let path = |name: &str| args.dir.join(name);
        tls::TlsConfig::load(&path("node.pem"), &path("node-key.pem"), &path("ca.pem"))
            .expect("the node's files load");
        tls::TlsConfig::load(
            &path("client.pem"),
            &path("client-key.pem"),
            &path("ca.pem"),
        )
        .expect("the client's files load");

        let before = std::fs::read(path("ca.pem")).expect("read ca.pem");
        match run(&args, &Env::real(), out) {
            Err(Error::InvalidRequest(msg)) => {
                assert!(
                    msg.contains("refusing to overwrite") && msg.contains("ca.pem"),
                    "{msg}"
                )
            }
            other => panic!("a second run over the same files answered {other:?}"),
        }
        assert_eq!(std::fs::read(path("ca.pem")).expect("read"), before);

        let bad = TlsCertsArgs {
            dir: dir.path().join("bad"),
            hosts: vec!["not a host!".into()],
        };
        match run(&bad, &Env::real(), out) {
            Err(Error::InvalidRequest(msg)) => assert!(msg.contains("not a host!"), "{msg}"),
            other => panic!("a bad --host answered {other:?}"),
        }
    }
}
