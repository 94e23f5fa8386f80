//! A minimal HTTP/1.1 client over one keep-alive `TcpStream`, for the
//! benchmark's hot loops.
//!
//! Why not ureq or curl: curl forks a process per request (milliseconds),
//! and the point here is to time the master, so the client should cost as
//! little as possible and add no hidden work (no pooling, no redirects, no
//! TLS layer). `client_overhead` in the bench compares it with ureq so the
//! choice is measured, not assumed. No threads, no channels: one `Conn` is
//! used by one thread.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Conn {
    addr: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(port: u16) -> Conn {
        Conn {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            reader: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// A new connection; `Err` while nothing listens yet.
    fn connect(&self) -> Result<BufReader<TcpStream>> {
        let s = TcpStream::connect(self.addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(BufReader::with_capacity(64 * 1024, s))
    }

    pub fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>)> {
        self.request("GET", path, &[], &[])
    }

    /// One request and its whole response. The connection is taken out for
    /// the exchange and put back only after a whole response, so after any
    /// error the next call starts on a new one.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let mut r = match self.reader.take() {
            Some(r) => r,
            None => self.connect()?,
        };
        // One write per request: headers and body leave in the same segment.
        self.buf.clear();
        write!(
            self.buf,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        )?;
        for (k, v) in headers {
            write!(self.buf, "{k}: {v}\r\n")?;
        }
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(body);
        r.get_mut().write_all(&self.buf)?;
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed before the status line");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut len, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => len = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16)
                    .with_context(|| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = len {
            out.resize(n, 0);
            r.read_exact(&mut out)?;
        } else {
            r.read_to_end(&mut out)?;
            close = true;
        }
        if !close {
            self.reader = Some(r);
        }
        Ok((status, out))
    }
}
