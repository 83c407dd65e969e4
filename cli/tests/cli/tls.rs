//! `--ca-cert` pins a self-signed control host. The server is `openssl
//! s_server -www` (it answers any GET with an HTML status page): reaching
//! that page proves the handshake was trusted, and the client then says the
//! answer is not the API's JSON. The certificate is the one `openssl req
//! -x509` makes by default, marked as a CA, the case rustls alone refuses.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opsqueue_tests::DEADLINE;

use crate::helpers::client_only;

/// A self-signed certificate and key for 127.0.0.1 in `dir`.
fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.pem")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=control"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-keyout", &key, "-out", &cert])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is missing: run scripts/install-test-deps");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server -www` on a free loopback port; its URL.
fn serve(cert: &str, key: &str) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-cert", cert, "-key", key])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let server = Server(child);
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, format!("https://127.0.0.1:{port}"))
}

#[test]
fn ca_cert_pins_a_self_signed_control_host() {
    let app = client_only();
    let (cert, key) = self_signed(app.home.path(), "control");
    let (other, _) = self_signed(app.home.path(), "other");
    let (_server, url) = serve(&cert, &key);
    let ls = |extra: &[&str]| {
        let mut args = vec!["ops", "ls", "--url", &url, "--token", "k"];
        args.extend_from_slice(extra);
        app.run(&args)
    };

    let pinned = ls(&["--ca-cert", &cert]);
    pinned.expect_code(5);
    assert!(
        pinned
            .stderr
            .contains("200 OK with a body that is not JSON"),
        "the handshake is trusted: {pinned:#?}"
    );

    for untrusted in [ls(&[]), ls(&["--ca-cert", &other])] {
        untrusted.expect_code(5);
        assert!(untrusted.stderr.contains("certificate"), "{untrusted:#?}");
        assert!(
            untrusted
                .stderr
                .contains("hint: the server's certificate is not trusted"),
            "{untrusted:#?}"
        );
    }

    let bad = app.home.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let not_pem = ls(&["--ca-cert", bad.to_str().unwrap()]);
    not_pem.expect_code(64);
    assert!(
        not_pem.stderr.contains("no certificate in the file"),
        "{not_pem:#?}"
    );
}
