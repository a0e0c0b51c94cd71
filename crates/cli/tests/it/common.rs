#![allow(dead_code)]
//! Starting, killing and restarting the real server binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WRITE_KEY: &str = "test-write-key";
pub const ADMIN: &str = "test-admin-token";

pub struct TestServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub config: Option<PathBuf>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with_config(None)
    }

    /// Starts with an extra TOML config (written to the data dir's parent).
    pub fn start_with_config(toml: Option<&str>) -> Self {
        Self::start_at(free_port(), toml)
    }

    /// Starts on `port`, or on another free port if `port` turns out to be taken.
    pub fn start_at(port: u16, toml: Option<&str>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let config = toml.map(|t| {
            let p = tmp.path().join("niyet.toml");
            std::fs::write(&p, t).expect("write config");
            p
        });
        let mut s = TestServer {
            child: None,
            port,
            dir,
            _tmp: Some(tmp),
            config,
        };
        // The port is free when picked but let go before the server binds it: another
        // test may take it in between. The server then exits at once; a new port is
        // picked.
        for attempt in 0.. {
            match s.try_spawn() {
                Ok(()) => break,
                Err(log) if attempt < 4 && log.contains("in use") => s.port = free_port(),
                Err(log) => panic!("the server did not start on port {}:\n{log}", s.port),
            }
        }
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.with_extension("stderr.log")
    }

    /// Starts the server on `self.port` and waits until it is healthy.
    fn try_spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_niyet"));
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--data-dir",
        ])
        .arg(&self.dir)
        .env("NIYET_ADMIN_TOKEN", ADMIN)
        .env("NIYET_LOG", "warn")
        .env_remove("NIYET_CONFIG")
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(self.log_path())
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
        match &self.config {
            Some(c) => {
                cmd.arg("--config").arg(c).env_remove("NIYET_WRITE_KEY");
            }
            None => {
                cmd.env("NIYET_WRITE_KEY", WRITE_KEY);
            }
        }
        self.child = Some(cmd.spawn().expect("spawn niyet"));
        self.wait_healthy()
    }

    pub fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("the server did not start on port {}:\n{log}", self.port);
        }
    }

    /// Waits until the server answers `/healthz`; its log if it exited or never did.
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(format!("exited ({status}):\n{log}"));
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                // Whatever holds the port may accept and never answer (another test's
                // listener, when the server could not bind it).
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ =
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        Err(format!("not healthy within 30 s:\n{log}"))
    }

    /// SIGTERM and wait: a clean shutdown (the server writes its snapshot).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("the server did not stop within 60 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub async fn post(
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = client()
        .post(url)
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("response is not JSON: {text}"));
    (status, v, headers)
}

pub async fn admin_get(url: &str) -> (u16, Value) {
    let r = client()
        .get(url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

/// An admin request with an optional JSON body; the status and the JSON answer.
pub async fn admin_send(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = client()
        .request(method.parse().expect("method"), url)
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("send");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Every event in the log, by paging `/v1/events`.
pub async fn all_events(base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let (s, v) = admin_get(&format!("{base}/v1/events?offset={offset}&limit=1000")).await;
        assert_eq!(s, 200, "{v}");
        let evs = v["events"].as_array().expect("events").clone();
        let end = v["end_offset"].as_u64().expect("end");
        offset = v["next_offset"].as_u64().expect("next");
        out.extend(evs.into_iter().map(|e| e["event"].clone()));
        if offset >= end {
            return out;
        }
    }
}

/// Runs a `niyet` command against a server; its stdout as JSON.
pub fn niyet(args: &[&str], url: &str, token: &str) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_niyet"))
        .args(args)
        .env("NIYET_URL", url)
        .env("NIYET_ADMIN_TOKEN", token)
        .output()
        .expect("run niyet");
    assert!(
        out.status.success(),
        "niyet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("niyet prints JSON")
}
