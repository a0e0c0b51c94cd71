//! HTTPS on the listener: a self-signed certificate made with `openssl`, requests made with
//! `curl` verifying it; plain HTTP to the same port gets nowhere.

use std::process::Command;
use std::sync::Arc;

use niyet_model::ManualClock;

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{}"
admin_token = "tls-admin-token"
[[sources]]
name = "web"
write_key = "tls-write-key"
[tls]
cert = "{}"
key = "{}"
"#,
        dir.path().join("data").display(),
        cert.display(),
        key.display()
    );
    let cfg: niyet_server::Config = toml::from_str(&toml).unwrap();
    let server = niyet_server::Server::bind(cfg, Arc::new(ManualClock::new(1_767_225_600_000)))
        .await
        .unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(server.run(std::future::pending()));
    let cert_s = cert.display().to_string();
    tokio::task::spawn_blocking(move || {
        let https = format!("https://127.0.0.1:{port}");
        let (ok, out) = curl(&["--cacert", &cert_s, &format!("{https}/healthz")]);
        assert!(ok && out.contains("\"ok\""), "{out}");
        let (ok, out) = curl(&[
            "--cacert",
            &cert_s,
            "-u",
            "tls-write-key:",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"userId":"u1","event":"Signed Up"}"#,
            &format!("{https}/v1/track"),
        ]);
        assert!(ok && out.contains("\"accepted\":1"), "{out}");
        // Without trusting the certificate, curl refuses; plain HTTP gets no answer.
        let (ok, _) = curl(&[&format!("{https}/healthz")]);
        assert!(!ok, "an unknown certificate must not be accepted");
        let (ok, out) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
        assert!(
            !ok || !out.contains("\"ok\""),
            "plain HTTP was answered: {out}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_bad_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nadmin_token = \"tls-admin-token\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.path().join("data").display(),
        junk.display(),
        junk.display()
    );
    let cfg: niyet_server::Config = toml::from_str(&toml).unwrap();
    let err = niyet_server::Server::bind(cfg, Arc::new(ManualClock::new(0)))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("TLS certificate"), "{err}");
}
