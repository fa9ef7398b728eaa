//! A small blocking RESP client over TCP (plain, for the admin and rebalance tools on the
//! client port), or over any [`Transport`] (the node channel's TLS stream, see
//! [`crate::node_channel`], used to forward requests to the node that leads a shard).
//!
//! Owns one connection: send a command, read its reply, with timeouts. Never retries; the
//! caller decides (an I/O error after sending means the outcome is unknown).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use thiserror::Error;

use crate::resp::{encode_command, parse_value, Value};

/// Largest reply accepted.
const MAX_REPLY: usize = 512 << 20;

/// Why a request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Could not connect (nothing was sent).
    #[error("connect {addr}: {error}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The connection failed after the request may have been sent.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The reply was not valid RESP.
    #[error("bad reply: {0}")]
    Protocol(String),
}

/// A byte stream a [`Client`] talks over: a TCP socket, or a protocol (TLS) on one.
pub trait Transport: Read + Write + Send {
    /// The TCP socket underneath (timeouts, staleness checks).
    fn socket(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// A TCP connection to `addr` (the first address it resolves to) within `timeout`, with
/// `timeout` for each read and write and Nagle off: what every client of this crate dials
/// with, plain or under TLS. Every failure is a [`ClientError::Connect`] (nothing sent).
pub fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let cerr = |error| ClientError::Connect { addr: addr.to_string(), error };
    let sa: SocketAddr = addr
        .to_socket_addrs()
        .map_err(cerr)?
        .next()
        .ok_or_else(|| cerr(std::io::Error::other("no address")))?;
    let stream = TcpStream::connect_timeout(&sa, timeout).map_err(cerr)?;
    stream.set_read_timeout(Some(timeout)).map_err(cerr)?;
    stream.set_write_timeout(Some(timeout)).map_err(cerr)?;
    stream.set_nodelay(true).map_err(cerr)?;
    Ok(stream)
}

/// One RESP connection.
pub struct Client {
    stream: Box<dyn Transport>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("peer", &self.stream.socket().peer_addr().ok()).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr` with `timeout` for the connect and for each read and write.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        Ok(Client::from_transport(Box::new(tcp_connect(addr, timeout)?)))
    }

    /// A client over an established transport (timeouts already set on its socket).
    pub fn from_transport(stream: Box<dyn Transport>) -> Client {
        Client { stream, buf: Vec::new() }
    }

    /// Sets the read timeout (how long one reply may take).
    pub fn set_timeout(&self, t: Duration) -> Result<(), ClientError> {
        Ok(self.stream.socket().set_read_timeout(Some(t))?)
    }

    /// Sends one command and reads its reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, ClientError> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        self.stream.write_all(&out)?;
        self.stream.flush()?;
        self.read_reply()
    }

    /// Whether the server closed this (idle) connection or sent something unasked: a pooled
    /// connection is checked before reuse, so a request is never written into a connection
    /// already dead (whose failure would leave its outcome unknown).
    pub fn is_stale(&self) -> bool {
        let sock = self.stream.socket();
        if !self.buf.is_empty() || sock.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let stale = !matches!(sock.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        sock.set_nonblocking(false).is_err() || stale
    }

    /// Writes already encoded commands (pipelining); read their replies with
    /// [`Client::read_reply`].
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(self.stream.flush()?)
    }

    /// Reads one reply.
    pub fn read_reply(&mut self) -> Result<Value, ClientError> {
        let mut chunk = [0u8; 16 << 10];
        loop {
            match parse_value(&self.buf, MAX_REPLY, 16) {
                Ok(Some((v, used))) => {
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
