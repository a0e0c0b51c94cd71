//! One attempt at sending: an HTTP POST (webhooks and their presets) or an SMTP
//! transaction. Each says whether trying again can help.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::shape::Mail;
use crate::SmtpTls;

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth another try (5xx, 408, 429, timeouts, refused connections), after at least
    /// the delay the receiver asked for (`Retry-After`).
    Retry(String, Option<Duration>),
    /// Trying again gives the same answer (other 4xx, a refused recipient).
    Permanent(String),
    /// The receiver refused what the request carried (400, 413, 422): the same again
    /// would be refused too, but a part of it may not be (see `send_request`).
    Refused(String),
}

/// Headers of a signed POST.
pub struct Signed<'a> {
    pub key: &'a str,
    pub timestamp_s: i64,
    pub signature: Option<String>,
    /// How many actions the request carries, when it is a batch (`x-niyet-batch`).
    pub batch: Option<usize>,
}

/// POSTs `body` (JSON) to `url`.
pub async fn post(
    client: &reqwest::Client,
    url: Option<reqwest::Url>,
    body: Vec<u8>,
    h: Signed<'_>,
    timeout: Duration,
) -> Result<u16, Failure> {
    let Some(url) = url else {
        return Err(Failure::Permanent(
            "the destination has no valid `url`".into(),
        ));
    };
    let mut req = client
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("idempotency-key", h.key)
        .header("x-niyet-timestamp", h.timestamp_s.to_string());
    if let Some(s) = h.signature {
        req = req.header("x-niyet-signature", format!("v1={s}"));
    }
    if let Some(n) = h.batch {
        req = req.header("x-niyet-batch", n.to_string());
    }
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(Failure::Retry(
                format!("no answer within {} ms", timeout.as_millis()),
                None,
            ))
        }
        Err(e) => {
            return Err(Failure::Retry(
                format!("request failed: {}", chain(&e)),
                None,
            ))
        }
    };
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        // Read to the end, so the connection goes back to the pool instead of closing.
        let _ = resp.bytes().await;
        return Ok(status);
    }
    let after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let why = format!("HTTP {status}: {text}");
    if status >= 500 || status == 408 || status == 429 {
        Err(Failure::Retry(why, after))
    } else if matches!(status, 400 | 413 | 422) {
        Err(Failure::Refused(why))
    } else {
        Err(Failure::Permanent(why))
    }
}

/// An error with its causes, e.g. "error sending request …: client error (Connect):
/// invalid peer certificate: UnknownIssuer": the top line alone rarely says why.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// An SMTP server and how to talk to it.
pub struct SmtpServer<'a> {
    /// `host:port`.
    pub addr: &'a str,
    pub tls: SmtpTls,
    /// Set when `tls` is not `None`.
    pub connector: Option<&'a tokio_rustls::TlsConnector>,
    /// SMTP AUTH (PLAIN) user name and password, sent only over TLS.
    pub auth: Option<(&'a str, &'a str)>,
}

/// Sends one e-mail through the SMTP server `srv`.
pub async fn smtp(
    srv: &SmtpServer<'_>,
    from: &str,
    mail: &Mail,
    key: &str,
    date: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    match tokio::time::timeout(timeout, smtp_session(srv, from, mail, key, date)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Retry(
            format!("SMTP session not done within {} ms", timeout.as_millis()),
            None,
        )),
    }
}

/// A connection to an SMTP server, plain or TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}
type Session = BufReader<Box<dyn Conn>>;

/// TLS over `stream` to the host of `addr`, its certificate checked.
async fn tls(srv: &SmtpServer<'_>, stream: Box<dyn Conn>) -> Result<Box<dyn Conn>, Failure> {
    let Some(connector) = srv.connector else {
        return Err(Failure::Permanent("SMTP TLS is not set up".into()));
    };
    let host = srv
        .addr
        .rsplit_once(':')
        .map_or(srv.addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Failure::Permanent(format!("SMTP host `{host}` for TLS: {e}")))?;
    match connector.connect(name, stream).await {
        Ok(s) => Ok(Box::new(s)),
        Err(e) => Err(Failure::Retry(
            format!("SMTP TLS handshake with {}: {}", srv.addr, chain(&e)),
            None,
        )),
    }
}

async fn smtp_session(
    srv: &SmtpServer<'_>,
    from: &str,
    mail: &Mail,
    key: &str,
    date: &str,
) -> Result<(), Failure> {
    let addr = srv.addr;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::Retry(format!("connecting to {addr}: {e}"), None))?;
    let mut stream: Box<dyn Conn> = Box::new(stream);
    if srv.tls == SmtpTls::Tls {
        stream = tls(srv, stream).await?;
    }
    let mut r: Session = BufReader::new(stream);
    expect(&mut r, 220).await?;
    command(&mut r, "EHLO niyet\r\n", 250).await?;
    if srv.tls == SmtpTls::Starttls {
        command(&mut r, "STARTTLS\r\n", 220).await?;
        // Nothing more comes before the handshake, so nothing buffered is lost.
        r = BufReader::new(tls(srv, r.into_inner()).await?);
        command(&mut r, "EHLO niyet\r\n", 250).await?;
    }
    if let Some((user, password)) = srv.auth {
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        command(&mut r, &format!("AUTH PLAIN {token}\r\n"), 235).await?;
    }
    command(&mut r, &format!("MAIL FROM:<{from}>\r\n"), 250).await?;
    command(&mut r, &format!("RCPT TO:<{}>\r\n", mail.to), 250).await?;
    command(&mut r, "DATA\r\n", 354).await?;
    let mut msg = format!(
        "From: <{from}>\r\nTo: <{}>\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{key}@niyet>\r\nX-Niyet-Idempotency-Key: {key}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        mail.to, mail.subject
    );
    for line in mail.body.lines() {
        // Dot-stuffing (RFC 5321 4.5.2).
        if line.starts_with('.') {
            msg.push('.');
        }
        msg.push_str(line);
        msg.push_str("\r\n");
    }
    msg.push_str(".\r\n");
    command(&mut r, &msg, 250).await?;
    let _ = write(&mut r, "QUIT\r\n").await;
    Ok(())
}

async fn write(r: &mut Session, line: &str) -> std::io::Result<()> {
    let w = r.get_mut();
    w.write_all(line.as_bytes()).await?;
    // TLS holds written bytes until flushed.
    w.flush().await
}

async fn command(r: &mut Session, line: &str, want: u16) -> Result<(), Failure> {
    write(r, line)
        .await
        .map_err(|e| Failure::Retry(format!("SMTP write: {e}"), None))?;
    expect(r, want).await
}

/// Reads one (possibly multi-line) reply and checks its code.
async fn expect(r: &mut Session, want: u16) -> Result<(), Failure> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|e| Failure::Retry(format!("SMTP read: {e}"), None))?;
        if n == 0 {
            return Err(Failure::Retry(
                "SMTP server closed the connection".into(),
                None,
            ));
        }
        // "250-…" continues, "250 …" ends.
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
    if code == want {
        Ok(())
    } else if (400..500).contains(&code) || code == 0 {
        Err(Failure::Retry(format!("SMTP: {}", line.trim_end()), None))
    } else {
        Err(Failure::Permanent(format!("SMTP: {}", line.trim_end())))
    }
}
