//! A minimal HTTP/1.1 client over `std::net`, for the load tool and the tests: keep-alive
//! requests with `Content-Length` bodies, and raw byte exchanges for malformed requests. It
//! talks to loopback addresses only.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A URL the client can use: `http://HOST:PORT/path` with a loopback host.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved loopback address.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// The path (with query), at least `/`.
    pub path: String,
}

impl Target {
    /// Parses `url`; refuses anything but `http://` to a loopback address.
    pub fn parse(url: &str) -> io::Result<Self> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid(format!("{url}: only http:// URLs are supported")))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if host.starts_with('[') {
            if host.contains("]:") {
                host.to_string()
            } else {
                format!("{host}:80")
            }
        } else if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid(format!("{url}: cannot resolve {host}")))?;
        if !addr.ip().is_loopback() {
            return Err(invalid(format!(
                "{url}: {} is not a loopback address; the load tool only talks to this machine",
                addr.ip()
            )));
        }
        Ok(Self {
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The same server with another path.
    pub fn with_path(&self, path: &str) -> Self {
        Self {
            path: path.to_string(),
            ..self.clone()
        }
    }
}

/// A keep-alive connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Connection {
    /// Connects to `addr` with `timeout` on connecting, reading and writing.
    pub fn open(addr: SocketAddr, host: &str, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
            host: host.to_string(),
        })
    }

    /// Sends one request and reads its response. `headers` are extra `Name: value` lines.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(body);
        if let Err(write_error) = self.reader.get_mut().write_all(&message) {
            // A server may answer before the body has arrived (413 for a body over its
            // limit) and close; the write then fails with a broken pipe or a reset, but
            // the answer already sits in the receive buffer. Read it, as curl does; if
            // there is none, the write error is the one to report.
            if matches!(
                write_error.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                if let Ok(response) = read_response(&mut self.reader) {
                    return Ok(response);
                }
            }
            return Err(write_error);
        }
        read_response(&mut self.reader).map_err(|e| io::Error::new(e.kind(), NoResponse(e)))
    }
}

/// The error of [`Connection::send`] when the request was written whole but no complete
/// response came back (the server closed, reset or stalled): a request dropped in flight, as
/// opposed to one that could not be sent at all. Test with [`is_no_response`].
#[derive(Debug)]
pub struct NoResponse(pub io::Error);

impl std::fmt::Display for NoResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sent, but no response: {}", self.0)
    }
}

impl std::error::Error for NoResponse {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `e`, from [`Connection::send`] or [`request`], means that the request was written
/// whole and no response came back.
pub fn is_no_response(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NoResponse>())
}

/// One request on a fresh connection.
pub fn request(
    target: &Target,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut c = Connection::open(target.addr, &target.host, Duration::from_secs(60))?;
    c.send(method, &target.path, headers, body)
}

/// Writes `bytes` as they are (from another thread, so that a server answering before the end
/// of an over-long body is still heard) and returns whatever the server sends back before it
/// closes the connection or `timeout` passes.
pub fn raw(addr: SocketAddr, bytes: Vec<u8>, timeout: Duration) -> io::Result<Vec<u8>> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
        let _ = writer.flush();
    });
    let mut out = Vec::new();
    let mut reader = stream;
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !out.is_empty() => break,
            Err(e) => {
                let _ = reader.shutdown(std::net::Shutdown::Both);
                let _ = sender.join();
                return Err(e);
            }
        }
    }
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    Ok(out)
}

/// Parses one response (status, headers, body) from raw bytes.
pub fn parse_response(bytes: &[u8]) -> io::Result<Response> {
    read_response(&mut BufReader::new(bytes))
}

fn bad(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

fn read_response<R: BufRead>(r: &mut R) -> io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("the headers end early"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
            if size == 0 {
                break;
            }
        }
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
