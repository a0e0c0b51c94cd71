//! One attempt at sending: an HTTP POST (webhooks and their presets) or an SMTP
//! transaction. Each says whether trying again can help.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::shape::Mail;

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth another try (5xx, 408, 429, timeouts, refused connections), after at least
    /// the delay the receiver asked for (`Retry-After`).
    Retry(String, Option<Duration>),
    /// Trying again gives the same answer (other 4xx, a refused recipient).
    Permanent(String),
}

/// Headers of a signed POST.
pub struct Signed<'a> {
    pub key: &'a str,
    pub timestamp_s: i64,
    pub signature: Option<String>,
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

/// Sends one e-mail through the SMTP server at `addr` (plain SMTP, as to a local relay).
pub async fn smtp(
    addr: &str,
    from: &str,
    mail: &Mail,
    key: &str,
    date: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    match tokio::time::timeout(timeout, smtp_session(addr, from, mail, key, date)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Retry(
            format!("SMTP session not done within {} ms", timeout.as_millis()),
            None,
        )),
    }
}

async fn smtp_session(
    addr: &str,
    from: &str,
    mail: &Mail,
    key: &str,
    date: &str,
) -> Result<(), Failure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::Retry(format!("connecting to {addr}: {e}"), None))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    expect(&mut r, 220).await?;
    command(&mut w, &mut r, "EHLO niyet\r\n", 250).await?;
    command(&mut w, &mut r, &format!("MAIL FROM:<{from}>\r\n"), 250).await?;
    command(&mut w, &mut r, &format!("RCPT TO:<{}>\r\n", mail.to), 250).await?;
    command(&mut w, &mut r, "DATA\r\n", 354).await?;
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
    command(&mut w, &mut r, &msg, 250).await?;
    let _ = w.write_all(b"QUIT\r\n").await;
    Ok(())
}

async fn command(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &str,
    want: u16,
) -> Result<(), Failure> {
    w.write_all(line.as_bytes())
        .await
        .map_err(|e| Failure::Retry(format!("SMTP write: {e}"), None))?;
    expect(r, want).await
}

/// Reads one (possibly multi-line) reply and checks its code.
async fn expect(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    want: u16,
) -> Result<(), Failure> {
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
