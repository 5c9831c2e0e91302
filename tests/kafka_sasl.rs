//! SASL to Kafka: what librdkafka sends, checked at the wire.
//!
//! Neither peer available here authenticates: librdkafka's mock cluster has no SaslHandshake
//! or SaslAuthenticate handler, and the tansu broker the interop tests use is run without
//! authentication. So this test is the broker side of the SASL exchange only, written from
//! the Kafka protocol: it answers ApiVersions (v3), SaslHandshake (v1) and SaslAuthenticate
//! (v1), records what the agent sent, and refuses, the way a real broker does. Checked: the
//! mechanism negotiation reaches the broker with the configured mechanism; a mechanism the
//! broker does not enable fails with one clear error naming the broker's mechanisms; PLAIN
//! sends `\0user\0password` over SASL_PLAINTEXT, SCRAM-SHA-256 sends its client-first
//! message over SASL_SSL (behind a TLS terminator, the broker verified), and a refused
//! password is one clear error. Nothing is delivered and what the agent took is spooled.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// What the fake broker saw: `(api key, version, request body)`.
type Seen = Arc<Mutex<Vec<(i16, i16, Vec<u8>)>>>;

/// A listener that speaks just enough Kafka to take a SASL exchange, enabling `mechanisms`
/// and refusing every authentication.
struct SaslBroker {
    port: u16,
    seen: Seen,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend(s.as_bytes());
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl SaslBroker {
    fn start(mechanisms: &'static [&'static str]) -> SaslBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Seen = Arc::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                std::thread::spawn(move || Self::serve(conn, mechanisms, &s));
            }
        });
        SaslBroker { port, seen }
    }

    fn serve(mut conn: TcpStream, mechanisms: &[&str], seen: &Seen) {
        loop {
            let mut len = [0u8; 4];
            if conn.read_exact(&mut len).is_err() {
                return;
            }
            let mut req = vec![0u8; i32::from_be_bytes(len) as usize];
            if conn.read_exact(&mut req).is_err() {
                return;
            }
            let (key, version) = (i16_at(&req, 0), i16_at(&req, 2));
            let correlation = &req[4..8];
            let client_id_len = i16_at(&req, 8).max(0) as usize;
            let mut body_at = 10 + client_id_len;
            if key == API_VERSIONS && version >= 3 {
                body_at += 1; // the flexible header's empty tagged fields
            }
            seen.lock()
                .unwrap()
                .push((key, version, req[body_at..].to_vec()));
            let mut body = Vec::new();
            match key {
                API_VERSIONS => {
                    // v3: error, compact array of (key, min, max, tags), throttle, tags.
                    body.extend(0i16.to_be_bytes());
                    let keys: [(i16, i16, i16); 3] = [
                        (API_VERSIONS, 0, 3),
                        (SASL_HANDSHAKE, 0, 1),
                        (SASL_AUTHENTICATE, 0, 1),
                    ];
                    body.push(keys.len() as u8 + 1);
                    for (k, min, max) in keys {
                        body.extend(k.to_be_bytes());
                        body.extend(min.to_be_bytes());
                        body.extend(max.to_be_bytes());
                        body.push(0);
                    }
                    body.extend(0i32.to_be_bytes());
                    body.push(0);
                }
                SASL_HANDSHAKE => {
                    let wanted = String::from_utf8_lossy(&req[body_at + 2..]).into_owned();
                    let ok = mechanisms.contains(&wanted.as_str());
                    let code = if ok { 0 } else { UNSUPPORTED_SASL_MECHANISM };
                    body.extend(code.to_be_bytes());
                    body.extend((mechanisms.len() as i32).to_be_bytes());
                    for m in mechanisms {
                        put_str(&mut body, m);
                    }
                }
                SASL_AUTHENTICATE => {
                    body.extend(SASL_AUTHENTICATION_FAILED.to_be_bytes());
                    put_str(
                        &mut body,
                        "Authentication failed: Invalid username or password",
                    );
                    body.extend(0i32.to_be_bytes()); // auth_bytes: empty
                    if version >= 1 {
                        body.extend(0i64.to_be_bytes()); // session_lifetime_ms
                    }
                }
                _ => return,
            }
            let mut resp = ((4 + body.len()) as i32).to_be_bytes().to_vec();
            resp.extend(correlation);
            resp.extend(body);
            if conn.write_all(&resp).is_err() {
                return;
            }
        }
    }

    fn seen(&self, key: i16) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _, _)| *k == key)
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

/// Runs the agent with SASL `mechanism` over plain TCP against `port` for 5 s; returns its
/// stderr.
fn run_agent(port: u16, mechanism: &str) -> String {
    run_agent_with(
        &format!("127.0.0.1:{port}"),
        mechanism,
        "\"security.protocol\" = \"SASL_PLAINTEXT\"",
    )
}

/// Runs the agent with SASL `mechanism` against `bootstrap`, `security` being the
/// `security.protocol` line and any TLS properties.
fn run_agent_with(bootstrap: &str, mechanism: &str, security: &str) -> String {
    let toml = format!(
        "[device]\nid = \"sasl-cam\"\n[source]\nkind = \"synthetic\"\nfps = 20\nwidth = 320\n\
         height = 240\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\n[kafka.properties]\n\
         {security}\n\"sasl.mechanism\" = \"{mechanism}\"\n\
         \"sasl.username\" = \"edgecam\"\n\"sasl.password\" = \"not-this-one\"\n"
    );
    let stderr = common::run_refused_agent(mechanism, &toml, 5);
    // The password never reaches the log.
    assert!(!stderr.contains("not-this-one"), "{stderr}");
    stderr
}

#[test]
fn a_mechanism_the_broker_does_not_enable_fails_clearly() {
    let broker = SaslBroker::start(&["PLAIN"]);
    let stderr = run_agent(broker.port, "SCRAM-SHA-512");
    let asked = broker.seen(SASL_HANDSHAKE);
    assert!(
        asked.len() >= 2,
        "librdkafka retries: {} handshakes",
        asked.len()
    );
    assert!(
        asked.iter().all(|b| b[2..] == *b"SCRAM-SHA-512"),
        "the configured mechanism reaches the broker"
    );
    assert!(broker.seen(SASL_AUTHENTICATE).is_empty());
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("SCRAM-SHA-512") && l.contains("PLAIN"))
        .collect();
    assert_eq!(lines.len(), 1, "one line naming both mechanisms:\n{stderr}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
}

#[test]
fn plain_sends_user_and_password_and_a_refusal_fails_clearly() {
    let broker = SaslBroker::start(&["PLAIN", "SCRAM-SHA-256"]);
    let stderr = run_agent(broker.port, "PLAIN");
    assert!(broker
        .seen(SASL_HANDSHAKE)
        .iter()
        .all(|b| b[2..] == *b"PLAIN"));
    let auth = broker.seen(SASL_AUTHENTICATE);
    assert!(
        auth.len() >= 2,
        "librdkafka retries: {} attempts",
        auth.len()
    );
    // SaslAuthenticate v0/v1: auth_bytes (int32 length) = authzid \0 user \0 password.
    assert!(auth.iter().all(|b| b[4..] == *b"\0edgecam\0not-this-one"));
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Invalid username or password"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line with the broker's reason:\n{stderr}"
    );
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
}

/// SASL_SSL: the same exchange inside TLS (the broker side behind a TLS terminator, its
/// certificate verified against the test CA), with SCRAM-SHA-256: the client-first message
/// names the user and carries a nonce; the refusal is one clear error.
#[test]
fn scram_over_tls_sends_the_client_first_message() {
    let pki = common::tls::Pki::new();
    let broker = SaslBroker::start(&["SCRAM-SHA-256"]);
    let tls = common::tls::Terminator::start(&pki, None, &format!("127.0.0.1:{}", broker.port));
    let security = format!(
        "\"security.protocol\" = \"SASL_SSL\"\n\"ssl.ca.location\" = \"{}\"",
        pki.ca.display()
    );
    let stderr = run_agent_with(
        &format!("localhost:{}", tls.port),
        "SCRAM-SHA-256",
        &security,
    );
    assert!(broker
        .seen(SASL_HANDSHAKE)
        .iter()
        .all(|b| b[2..] == *b"SCRAM-SHA-256"));
    let auth = broker.seen(SASL_AUTHENTICATE);
    assert!(
        auth.len() >= 2,
        "librdkafka retries: {} attempts",
        auth.len()
    );
    for b in &auth {
        let first = String::from_utf8_lossy(&b[4..]);
        assert!(
            first.starts_with("n,,n=edgecam,r="),
            "client-first: {first}"
        );
        assert!(
            first.len() > "n,,n=edgecam,r=".len() + 8,
            "a nonce: {first}"
        );
    }
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Invalid username or password"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line with the broker's reason:\n{stderr}"
    );
}
