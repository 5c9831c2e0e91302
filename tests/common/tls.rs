//! Test certificates, made with OpenSSL (the library edgecam links): a CA, a server
//! certificate for `localhost` / `127.0.0.1`, a client certificate, an expired server
//! certificate, and a second CA that signed none of them. EC P-256 keys (fast to make).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509NameBuilder, X509};

/// PEM files in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// Server certificate for `localhost` and `127.0.0.1`, and its key (PKCS#8).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The same names, signed by the CA, but expired yesterday.
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
    /// Client certificate (CN `edgecam-client`), and its key as a traditional
    /// `BEGIN EC PRIVATE KEY` file (not PKCS#8, as many CAs hand them out).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What a certificate is for.
enum Kind {
    Ca,
    Server,
    Client,
}

/// A certificate for `cn` over `key`, valid from `from` to `until` (Unix seconds), signed by
/// `issuer` (self-signed when `None`).
fn cert(
    cn: &str,
    key: &PKey<Private>,
    kind: Kind,
    issuer: Option<(&X509, &PKey<Private>)>,
    from: i64,
    until: i64,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(from).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(until).unwrap())
        .unwrap();
    match kind {
        Kind::Ca => {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
        Kind::Server | Kind::Client => {
            b.append_extension(BasicConstraints::new().build().unwrap())
                .unwrap();
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_agreement()
                    .build()
                    .unwrap(),
            )
            .unwrap();
            let mut eku = ExtendedKeyUsage::new();
            if matches!(kind, Kind::Server) {
                eku.server_auth();
            } else {
                eku.client_auth();
            }
            b.append_extension(eku.build().unwrap()).unwrap();
        }
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    if let Some((ca, _)) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(ca), None))
            .unwrap();
        b.append_extension(aki).unwrap();
    }
    if matches!(kind, Kind::Server) {
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
            .unwrap();
        b.append_extension(san).unwrap();
    }
    let signer = issuer.map_or(key, |(_, k)| k);
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build()
}

fn write(dir: &Path, name: &str, pem: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

impl Pki {
    /// Makes everything, valid from an hour ago for a year.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (t, hour, day) = (now(), 3600, 86_400);

        let ca_key = key();
        let ca = cert(
            "edgecam test CA",
            &ca_key,
            Kind::Ca,
            None,
            t - hour,
            t + 365 * day,
        );
        let issuer = Some((&ca, &ca_key));
        let server_key = key();
        let server = cert(
            "localhost",
            &server_key,
            Kind::Server,
            issuer,
            t - hour,
            t + 365 * day,
        );
        let expired_key = key();
        let expired = cert(
            "localhost",
            &expired_key,
            Kind::Server,
            issuer,
            t - 30 * day,
            t - day,
        );
        let client_key = key();
        let client = cert(
            "edgecam-client",
            &client_key,
            Kind::Client,
            issuer,
            t - hour,
            t + 365 * day,
        );
        let other_key = key();
        let other = cert(
            "some other CA",
            &other_key,
            Kind::Ca,
            None,
            t - hour,
            t + 365 * day,
        );

        let pkcs8 = |k: &PKey<Private>| k.private_key_to_pem_pkcs8().unwrap();
        Pki {
            ca: write(d, "ca.pem", &ca.to_pem().unwrap()),
            server_cert: write(d, "server.pem", &server.to_pem().unwrap()),
            server_key: write(d, "server.key", &pkcs8(&server_key)),
            expired_cert: write(d, "expired.pem", &expired.to_pem().unwrap()),
            expired_key: write(d, "expired.key", &pkcs8(&expired_key)),
            client_cert: write(d, "client.pem", &client.to_pem().unwrap()),
            client_key: write(
                d,
                "client.key",
                &client_key.ec_key().unwrap().private_key_to_pem().unwrap(),
            ),
            other_ca: write(d, "other-ca.pem", &other.to_pem().unwrap()),
            dir,
        }
    }
}

/// A TLS terminator in front of a plain TCP service: `socat` with OpenSSL listening on a free
/// loopback port with [`Pki::server_cert`], forwarding each connection to `upstream`. Killed
/// on drop. Needs `socat` (scripts/setup installs it).
pub struct Terminator {
    child: std::process::Child,
    /// The TLS port on 127.0.0.1.
    pub port: u16,
}

impl Terminator {
    /// `client_ca`: require a client certificate signed by it (mutual TLS).
    pub fn start(pki: &Pki, client_ca: Option<&Path>, upstream: &str) -> Terminator {
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};
        let port = super::mosquitto::free_port();
        let verify = match client_ca {
            Some(ca) => format!("verify=1,cafile={}", ca.display()),
            None => "verify=0".to_string(),
        };
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
                pki.server_cert.display(),
                pki.server_key.display()
            ))
            .arg(format!("TCP:{upstream}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (Debian package socat; scripts/setup installs it)");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Terminator { child, port }
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
