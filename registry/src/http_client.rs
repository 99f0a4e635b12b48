//! A small HTTP/1.1 client for one thing: a follower forwarding a write to
//! the writer's registry (another Strom node's axum listener). One request
//! per connection (`Connection: close`), a bounded answer, a deadline.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one forwarded request may take, connecting included.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer accepted: a write's answer is a few bytes of JSON.
const MAX_ANSWER_BYTES: u64 = 1 << 20;
/// How many header lines an answer may have.
const MAX_HEADERS: usize = 32;

/// A request to send.
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// The path with its query, as the client sent it.
    pub path_and_query: &'a str,
    pub headers: &'a [(&'a str, String)],
    pub body: &'a [u8],
}

/// What the other side answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `http://host:port[/...]` → `host:port`.
fn authority(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let end = rest.find('/').unwrap_or(rest.len());
    rest.get(..end)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("`{url}` names no host"))
}

/// Sends `req` to the server at `url` and reads its whole answer.
pub async fn send(url: &str, req: &Outgoing<'_>) -> Result<Answer, String> {
    match tokio::time::timeout(FORWARD_TIMEOUT, exchange(url, req)).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {FORWARD_TIMEOUT:?}")),
    }
}

async fn exchange(url: &str, req: &Outgoing<'_>) -> Result<Answer, String> {
    let host = authority(url)?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        req.method,
        req.path_and_query,
        req.body.len()
    );
    for (name, value) in req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connecting to {host}: {e}"))?;
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("sending to {host}: {e}"))?;
    stream
        .write_all(req.body)
        .await
        .map_err(|e| format!("sending to {host}: {e}"))?;
    let mut raw = Vec::new();
    // One byte more than allowed tells a too-long answer from a full one.
    (&mut stream)
        .take(MAX_ANSWER_BYTES.saturating_add(1))
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("reading the answer of {host}: {e}"))?;
    if u64::try_from(raw.len()).unwrap_or(u64::MAX) > MAX_ANSWER_BYTES {
        return Err(format!(
            "{host} answered more than {MAX_ANSWER_BYTES} bytes"
        ));
    }
    parse_answer(&raw)
}

/// Parses a whole HTTP/1.1 answer read until the server closed.
fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("a cut-off answer".into()),
        Err(e) => return Err(format!("a malformed answer: {e}")),
    };
    let status = parsed.code.ok_or("an answer without a status")?;
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let rest = raw.get(head_len..).unwrap_or_default();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return Err("a chunked answer (not expected from a registry write)".into());
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| "a bad Content-Length")?;
    let body = match length {
        Some(n) => rest
            .get(..n)
            .ok_or("an answer shorter than its Content-Length")?,
        None => rest,
    };
    Ok(Answer {
        status,
        headers,
        body: Bytes::copy_from_slice(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_by_content_length_and_bad_ones_are_errors() {
        let a = parse_answer(
            b"HTTP/1.1 409 Conflict\r\nContent-Type: x\r\nX-End: 7\r\ncontent-length: 4\r\n\r\nbodyEXTRA",
        )
        .unwrap();
        assert_eq!(a.status, 409);
        assert_eq!(a.header("x-end"), Some("7"));
        assert_eq!(&a.body[..], b"body");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
        assert!(parse_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
        )
        .is_err());
    }

    #[test]
    fn authority_is_host_and_port() {
        assert_eq!(
            authority("http://127.0.0.1:8081").unwrap(),
            "127.0.0.1:8081"
        );
        assert_eq!(authority("http://h:1/x").unwrap(), "h:1");
        assert!(authority("https://h:1").is_err());
        assert!(authority("http://").is_err());
    }
}
