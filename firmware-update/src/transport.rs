//! Where bytes come from: the file system by default, plain HTTP/1.1 behind
//! the `http` feature. Every fetch is bounded: the caller passes the most
//! bytes it will accept and a transport stops reading one byte past it.

use std::io::Read;

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// The repository does not have the file (HTTP 403/404, no such file).
    NotFound,
    /// More than the allowed number of bytes (endless data).
    TooLarge,
    /// Anything else (connection, I/O, protocol).
    Other(String),
}

/// A body being read in pieces (see [`Transport::open`]).
pub type Body = Box<dyn Read + Send + Sync>;

/// A source of repository files.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Reads `url` completely, refusing more than `max_len` bytes.
    fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError>;

    /// Opens `url` to be read in pieces (targets, which may be larger than
    /// memory). The body yields at most `max_len + 1` bytes, so a reader
    /// can tell a body that is too long; the reader checks length and
    /// hashes. The default reads the whole body with [`Self::fetch`].
    fn open(&self, url: &str, max_len: u64) -> Result<Body, FetchError> {
        Ok(Box::new(std::io::Cursor::new(self.fetch(url, max_len)?)))
    }

    /// An owned copy, handed to tough (its transports are `'static`).
    fn clone_box(&self) -> Box<dyn Transport>;
}

/// Reads a stream to its end, refusing more than `max_len` bytes.
pub fn read_bounded(mut r: impl Read, max_len: u64) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    let n = r
        .by_ref()
        .take(max_len.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| FetchError::Other(e.to_string()))?;
    if n as u64 > max_len {
        return Err(FetchError::TooLarge);
    }
    Ok(out)
}

/// `file://` URLs or plain paths.
///
/// A request names a file as the URL spells it (`3.%3F.json`, as our
/// repository tooling stores role files) or, failing that, decoded
/// (`3.?.json`, as a static HTTP server would map the URL). The decoded
/// form is tried only when decoding adds no `/`: an escaped separator in a
/// role or target name never reaches another directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileTransport;

impl FileTransport {
    /// The file a URL names: as spelled, or decoded when that adds no `/`.
    fn resolve(url: &str) -> Result<std::fs::File, FetchError> {
        let path = url.strip_prefix("file://").unwrap_or(url);
        match Self::open_file(path) {
            Err(FetchError::NotFound) if path.contains('%') => {
                let decoded = percent_decode(path);
                if decoded.matches('/').count() != path.matches('/').count() {
                    return Err(FetchError::NotFound);
                }
                Self::open_file(&decoded)
            }
            other => other,
        }
    }

    fn open_file(path: &str) -> Result<std::fs::File, FetchError> {
        let failed = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => FetchError::NotFound,
            _ => FetchError::Other(format!("{path}: {e}")),
        };
        // Only regular files: opening a FIFO blocks and a device may act on
        // it, so the kind is checked before the open, and again after it.
        if !std::fs::metadata(path).map_err(failed)?.is_file() {
            return Err(FetchError::Other(format!("{path}: not a regular file")));
        }
        let file = std::fs::File::open(path).map_err(failed)?;
        match file.metadata() {
            Ok(m) if m.is_file() => Ok(file),
            Ok(_) => Err(FetchError::Other(format!("{path}: not a regular file"))),
            Err(e) => Err(FetchError::Other(format!("{path}: {e}"))),
        }
    }
}

impl Transport for FileTransport {
    fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        read_bounded(Self::resolve(url)?, max_len)
    }

    fn open(&self, url: &str, max_len: u64) -> Result<Body, FetchError> {
        Ok(Box::new(
            Self::resolve(url)?.take(max_len.saturating_add(1)),
        ))
    }

    fn clone_box(&self) -> Box<dyn Transport> {
        Box::new(*self)
    }
}

/// Decodes `%XX` escapes (file URLs built with [`crate::updater::quote`]).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hexval = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                // Two hex digits: at most 0xff.
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Chooses the transport for a URL: `http://` (with the `http` feature) or
/// the file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultTransport;

impl Transport for DefaultTransport {
    fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        if url.starts_with("http://") {
            #[cfg(feature = "http")]
            return http::HttpTransport::default().fetch(url, max_len);
            #[cfg(not(feature = "http"))]
            return Err(FetchError::Other("built without the `http` feature".into()));
        }
        if url.starts_with("https://") {
            return Err(FetchError::Other(
                "https is not built in; serve the repository over http (metadata is signed) or mirror it to disk".into(),
            ));
        }
        FileTransport.fetch(url, max_len)
    }

    fn open(&self, url: &str, max_len: u64) -> Result<Body, FetchError> {
        #[cfg(feature = "http")]
        if url.starts_with("http://") {
            return http::HttpTransport::default().open(url, max_len);
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            // The same refusals as `fetch`.
            return self
                .fetch(url, max_len)
                .map(|b| Box::new(std::io::Cursor::new(b)) as Body);
        }
        FileTransport.open(url, max_len)
    }

    fn clone_box(&self) -> Box<dyn Transport> {
        Box::new(*self)
    }
}

#[cfg(feature = "http")]
pub mod http {
    //! A small blocking HTTP/1.1 GET client over `std::net`: no TLS (TUF
    //! metadata carries its own signatures), bounded headers and bodies,
    //! timeouts on connect and every read.

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::{Duration, Instant};

    use super::{FetchError, Transport, read_bounded};

    const MAX_HEADER_BYTES: usize = 64 * 1024;

    /// Plain HTTP transport.
    #[derive(Debug, Clone, Copy)]
    pub struct HttpTransport {
        /// Connect and per-read timeout.
        pub timeout: Duration,
        /// The slowest transfer accepted: a fetch of at most `max_len`
        /// bytes must end within `timeout + max_len / min_bytes_per_sec`,
        /// so a server trickling bytes (TUF's slow retrieval attack)
        /// cannot hold an update open for ever.
        pub min_bytes_per_sec: u64,
    }

    impl Default for HttpTransport {
        fn default() -> Self {
            Self {
                timeout: Duration::from_secs(30),
                min_bytes_per_sec: 16 * 1024,
            }
        }
    }

    impl HttpTransport {
        fn deadline(&self, max_len: u64) -> Instant {
            let slack = Duration::from_secs(max_len / self.min_bytes_per_sec.max(1));
            let now = Instant::now();
            now.checked_add(self.timeout.saturating_add(slack))
                .unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
        }
    }

    /// A socket whose reads fail once the fetch's deadline has passed; each
    /// read waits at most the time left (or the per-read timeout).
    struct Deadlined {
        stream: TcpStream,
        deadline: Instant,
        timeout: Duration,
    }

    impl Read for Deadlined {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let too_slow = || {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "transfer too slow: fetch deadline passed (slow retrieval)",
                )
            };
            let left = self
                .deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(too_slow)?;
            self.stream.set_read_timeout(Some(left.min(self.timeout)))?;
            match self.stream.read(buf) {
                // A read cut short by the deadline says so, not EAGAIN.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) && (left < self.timeout || Instant::now() >= self.deadline) =>
                {
                    Err(too_slow())
                }
                r => r,
            }
        }
    }

    fn other(e: impl std::fmt::Display) -> FetchError {
        FetchError::Other(e.to_string())
    }

    /// How a response body ends.
    enum BodyKind {
        Chunked,
        Length(u64),
        Close,
    }

    impl HttpTransport {
        /// Sends the request and reads the response head: the body's
        /// reader, and how it ends. Only 200 comes back here.
        fn request(
            &self,
            url: &str,
            max_len: u64,
        ) -> Result<(BufReader<Deadlined>, BodyKind), FetchError> {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| other("not an http:// URL"))?;
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            // Percent-encode what may not appear raw in a request line (as
            // HTTP clients such as Python's requests do); `%` escapes the
            // caller already made are kept.
            let mut encoded = String::with_capacity(path.len());
            for b in path.bytes() {
                if b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b) {
                    encoded.push(b as char);
                } else {
                    encoded.push_str(&format!("%{b:02X}"));
                }
            }
            let path = encoded.as_str();
            let hostport = if authority.contains(':') {
                authority.to_owned()
            } else {
                format!("{authority}:80")
            };
            let addr = hostport
                .to_socket_addrs()
                .map_err(other)?
                .next()
                .ok_or_else(|| other("no address"))?;
            let deadline = self.deadline(max_len);
            let mut stream = TcpStream::connect_timeout(&addr, self.timeout).map_err(other)?;
            stream.set_read_timeout(Some(self.timeout)).map_err(other)?;
            stream
                .set_write_timeout(Some(self.timeout))
                .map_err(other)?;
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: confidant-update\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
            )
            .map_err(other)?;
            let mut r = BufReader::new(Deadlined {
                stream,
                deadline,
                timeout: self.timeout,
            });
            let mut header_bytes = 0usize;
            let mut line = String::new();
            let mut read_line =
                |r: &mut BufReader<Deadlined>, line: &mut String| -> Result<(), FetchError> {
                    line.clear();
                    let n = r
                        .by_ref()
                        .take((MAX_HEADER_BYTES - header_bytes) as u64)
                        .read_line(line)
                        .map_err(other)?;
                    header_bytes += n;
                    if n == 0 || header_bytes >= MAX_HEADER_BYTES {
                        return Err(other("truncated or oversized response head"));
                    }
                    Ok(())
                };
            read_line(&mut r, &mut line)?;
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| other(format!("bad status line {:?}", line.trim_end())))?;
            let mut content_length: Option<u64> = None;
            let mut chunked = false;
            loop {
                read_line(&mut r, &mut line)?;
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    let v = v.trim();
                    if k.eq_ignore_ascii_case("content-length") {
                        content_length = Some(v.parse().map_err(|_| other("bad Content-Length"))?);
                    } else if k.eq_ignore_ascii_case("transfer-encoding")
                        && v.to_ascii_lowercase().contains("chunked")
                    {
                        chunked = true;
                    }
                }
            }
            match status {
                200 => {}
                403 | 404 => return Err(FetchError::NotFound),
                s => return Err(other(format!("HTTP status {s}"))),
            }
            let kind = match (chunked, content_length) {
                (true, _) => BodyKind::Chunked,
                (false, Some(len)) if len > max_len => return Err(FetchError::TooLarge),
                (false, Some(len)) => BodyKind::Length(len),
                (false, None) => BodyKind::Close,
            };
            Ok((r, kind))
        }
    }

    impl Transport for HttpTransport {
        fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
            let (r, kind) = self.request(url, max_len)?;
            match kind {
                BodyKind::Chunked => read_chunked(r, max_len),
                BodyKind::Length(len) => {
                    let body = read_bounded(r.take(len), len)?;
                    if (body.len() as u64) < len {
                        return Err(other("connection closed before Content-Length bytes"));
                    }
                    Ok(body)
                }
                BodyKind::Close => read_bounded(r, max_len),
            }
        }

        /// Bodies are read from the socket as they come (a short one fails
        /// the reader's length check); chunked ones are decoded as read.
        fn open(&self, url: &str, max_len: u64) -> Result<super::Body, FetchError> {
            let (r, kind) = self.request(url, max_len)?;
            Ok(match kind {
                BodyKind::Chunked => Box::new(
                    Chunked {
                        r,
                        left: 0,
                        started: false,
                        done: false,
                    }
                    .take(max_len.saturating_add(1)),
                ),
                BodyKind::Length(len) => Box::new(r.take(len)),
                BodyKind::Close => Box::new(r.take(max_len.saturating_add(1))),
            })
        }

        fn clone_box(&self) -> Box<dyn Transport> {
            Box::new(*self)
        }
    }

    /// A chunked body decoded as it is read (the caller bounds it).
    struct Chunked<R> {
        r: R,
        /// Bytes left in the current chunk.
        left: u64,
        /// A chunk was read (its data ends with CRLF).
        started: bool,
        /// The last chunk was read.
        done: bool,
    }

    impl<R: BufRead> Read for Chunked<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            use std::io::{Error, ErrorKind};
            let bad = |m: &str| Error::new(ErrorKind::InvalidData, m.to_owned());
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            if self.left == 0 {
                if self.started {
                    let mut crlf = [0u8; 2];
                    self.r.read_exact(&mut crlf)?;
                    if &crlf != b"\r\n" {
                        return Err(bad("chunk not followed by CRLF"));
                    }
                }
                self.started = true;
                let mut line = String::new();
                self.r.by_ref().take(1024).read_line(&mut line)?;
                let size = line.trim_end().split(';').next().unwrap_or("");
                let size =
                    u64::from_str_radix(size.trim(), 16).map_err(|_| bad("bad chunk size"))?;
                if size == 0 {
                    self.done = true;
                    return Ok(0);
                }
                self.left = size;
            }
            let want = usize::try_from(self.left)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self.r.read(&mut buf[..want])?;
            if n == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, "truncated chunk"));
            }
            self.left -= n as u64;
            Ok(n)
        }
    }

    fn read_chunked(mut r: impl BufRead, max_len: u64) -> Result<Vec<u8>, FetchError> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            r.by_ref().take(1024).read_line(&mut line).map_err(other)?;
            let size_str = line.trim_end().split(';').next().unwrap_or("");
            let size =
                u64::from_str_radix(size_str.trim(), 16).map_err(|_| other("bad chunk size"))?;
            if size == 0 {
                return Ok(out);
            }
            // Subtraction, not addition: an attacker picks `size`.
            if size > max_len.saturating_sub(out.len() as u64) {
                return Err(FetchError::TooLarge);
            }
            let chunk = read_bounded(r.by_ref().take(size), size)?;
            if chunk.len() as u64 != size {
                return Err(other("truncated chunk"));
            }
            out.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).map_err(other)?;
            if &crlf != b"\r\n" {
                return Err(other("chunk not followed by CRLF"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_read_refuses_one_byte_more() {
        assert_eq!(read_bounded(&[1u8, 2, 3][..], 3).unwrap(), vec![1, 2, 3]);
        assert!(matches!(
            read_bounded(&[1u8, 2, 3, 4][..], 3),
            Err(FetchError::TooLarge)
        ));
    }

    #[cfg(feature = "http")]
    fn serve_once(response: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/a b/%3F.json", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            // The request may arrive in several writes: read to its end.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") && req.len() < 16 * 1024 {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            c.write_all(response).unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        (url, h)
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_bodies_are_bounded_and_decoded() {
        use super::http::HttpTransport;
        let t = HttpTransport::default();
        let (url, h) = serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        assert_eq!(t.fetch(&url, 5).unwrap(), b"abcde");
        assert!(
            h.join()
                .unwrap()
                .starts_with("GET /a%20b/%3F.json HTTP/1.1\r\n")
        );
        let (url, _) = serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n");
        assert!(matches!(t.fetch(&url, 5), Err(FetchError::TooLarge)));
        let (url, _) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef");
        assert!(matches!(t.fetch(&url, 5), Err(FetchError::TooLarge)));
        let (url, _) = serve_once(b"HTTP/1.0 200 OK\r\n\r\nabcdef");
        assert!(matches!(t.fetch(&url, 5), Err(FetchError::TooLarge)));
        let (url, _) = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(t.fetch(&url, 5), Err(FetchError::NotFound)));
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_bodies_open_as_readers_bounded_by_the_caller() {
        use super::http::HttpTransport;
        let t = HttpTransport::default();
        let read = |mut b: Body| {
            let mut v = Vec::new();
            b.read_to_end(&mut v).unwrap();
            v
        };
        let (url, _) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde");
        assert_eq!(read(t.open(&url, 5).unwrap()), b"abcde");
        let (url, _) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef");
        assert!(matches!(t.open(&url, 5), Err(FetchError::TooLarge)));
        // Ended by the connection: one byte past the bound tells the reader.
        let (url, _) = serve_once(b"HTTP/1.0 200 OK\r\n\r\nabcdefgh");
        assert_eq!(read(t.open(&url, 5).unwrap()), b"abcdef");
        let (url, _) = serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n");
        assert_eq!(read(t.open(&url, 5).unwrap()), b"abcde");
        // Chunked bodies are decoded as read, and bounded the same way.
        let (url, _) = serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n");
        assert_eq!(read(t.open(&url, 5).unwrap()), b"abcdef");
        let (url, _) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY2\r\nde\r\n0\r\n\r\n",
        );
        let mut v = Vec::new();
        assert!(t.open(&url, 5).unwrap().read_to_end(&mut v).is_err());
        let (url, _) = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(t.open(&url, 5), Err(FetchError::NotFound)));
    }

    #[cfg(feature = "http")]
    #[test]
    fn a_chunk_size_near_u64_max_is_refused_not_wrapped() {
        use super::http::HttpTransport;
        let (url, _) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n",
        );
        assert!(matches!(
            HttpTransport::default().fetch(&url, 5),
            Err(FetchError::TooLarge)
        ));
    }

    #[cfg(feature = "http")]
    #[test]
    fn a_trickling_server_is_cut_off_at_the_deadline() {
        use super::http::HttpTransport;
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/timestamp.json", l.local_addr().unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            // One byte every 50 ms: never idle for the per-read timeout.
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                if c.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let t = HttpTransport {
            timeout: std::time::Duration::from_millis(300),
            min_bytes_per_sec: 1 << 20,
        };
        let err = t.fetch(&url, 1 << 20).unwrap_err();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
        assert!(
            matches!(&err, FetchError::Other(m) if m.contains("slow retrieval")),
            "{err:?}"
        );
    }

    #[test]
    fn files_are_found_as_spelled_or_decoded_never_across_an_escaped_slash() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("repo");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("3.%3F.json"), b"quoted").unwrap();
        std::fs::write(d.join("a b.json"), b"decoded").unwrap();
        std::fs::write(dir.path().join("secret.json"), b"secret").unwrap();
        let get = |name: &str| FileTransport.fetch(&format!("{}/{name}", d.display()), 100);
        assert_eq!(get("3.%3F.json").unwrap(), b"quoted");
        assert_eq!(get("a%20b.json").unwrap(), b"decoded");
        assert!(matches!(get("..%2Fsecret.json"), Err(FetchError::NotFound)));
        assert!(matches!(get("missing.json"), Err(FetchError::NotFound)));
        assert!(matches!(
            FileTransport.fetch(&d.display().to_string(), 100),
            Err(FetchError::Other(m)) if m.contains("not a regular file")
        ));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a/%3F.json"), "/a/?.json");
        assert_eq!(percent_decode("/a/%"), "/a/%");
    }
}
