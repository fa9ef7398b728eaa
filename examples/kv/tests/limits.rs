//! The client limits of the kv server (issue 12 point 8), each against a hostile client:
//! real node processes on loopback (raw TCP for what no well-behaved client sends), and
//! the request parser itself for its work on a request read in pieces.
//!
//! Owns these tests only; never reaches into the server's internals.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Cluster;
use flotilla_kv::resp::{encode_command, Limits, RequestLimits, RequestParser, DEFAULT_MAX_INLINE};
use redis::Commands;

/// Reads until the server closes the connection (EOF or reset) or `within` passes; returns
/// the bytes and whether the server closed it.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (out, false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (out, true),
        }
    }
}

/// Sends `bytes`, then reads until the server closes the connection (10 s at most).
fn exchange(addr: &str, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    let (out, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    encode_command(args, &mut b);
    b
}

/// Before AUTH only small requests, as in Redis (CVE-2021-32675): `*11` and a `$16385`
/// bulk get Redis's replies and the connection is closed; at the bounds (10 arguments of
/// 16384 bytes) a request is parsed and answered (NOAUTH). AUTH lifts the bounds for the
/// very next request of the same write; after AUTH a 1,000,000-argument request sent in
/// 64 KiB pieces is answered. An authenticated connection idle past `idle_timeout_ms` is
/// closed, one that keeps talking is not.
#[test]
fn unauthenticated_requests_are_small_auth_lifts_the_bounds_idle_connections_close() {
    let mut c = Cluster::new(Some("s3cret"), "shards = 1\nidle_timeout_ms = 1500");
    c.start(1, true);
    c.wait_writable(1, "k");
    let addr = c.addr(1);

    let (out, closed) = exchange(&addr, b"*11\r\n");
    assert_eq!(out, "-ERR Protocol error: unauthenticated multibulk length\r\n");
    assert!(closed, "the connection is closed after *11 before AUTH");
    let (out, closed) = exchange(&addr, b"*1\r\n$16385\r\n");
    assert_eq!(out, "-ERR Protocol error: unauthenticated bulk length\r\n");
    assert!(closed, "the connection is closed after $16385 before AUTH");
    // A pipeline before AUTH: the small request is answered, the next one refused.
    let mut b = command(&[b"GET", b"k"]);
    b.extend_from_slice(b"*11\r\n");
    let (out, closed) = exchange(&addr, &b);
    assert_eq!(
        out,
        "-NOAUTH Authentication required.\r\n-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert!(closed);

    // At the bounds: parsed, answered NOAUTH, the connection stays usable.
    let big = vec![b'x'; 16384];
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat(big.as_slice()).take(9));
    let mut b = command(&args);
    b.extend(command(&[b"QUIT"]));
    let (out, closed) = exchange(&addr, &b);
    assert_eq!(out, "-NOAUTH Authentication required.\r\n+OK\r\n");
    assert!(closed, "QUIT closes");

    // AUTH lifts the bounds for the next request of the same write.
    let mut b = command(&[b"AUTH", b"s3cret"]);
    let mut args: Vec<&[u8]> = vec![b"ECHO"];
    args.extend(std::iter::repeat(big.as_slice()).take(10));
    args.push(&[b'y'; 20_000]);
    b.extend(command(&args));
    b.extend(command(&[b"QUIT"]));
    let (out, _) = exchange(&addr, &b);
    assert_eq!(out, "+OK\r\n-ERR wrong number of arguments for 'echo' command\r\n+OK\r\n");

    // After AUTH: a 1,000,000-argument request in 64 KiB pieces.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&command(&[b"AUTH", b"s3cret"])).unwrap();
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let mut args: Vec<&[u8]> = vec![b"PING"];
    args.extend(std::iter::repeat(b"a".as_slice()).take(999_999));
    let req = command(&args);
    let t = Instant::now();
    for piece in req.chunks(64 << 10) {
        s.write_all(piece).unwrap();
    }
    let want = b"-ERR wrong number of arguments for 'ping' command\r\n";
    let mut got = vec![0u8; want.len()];
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    eprintln!("1,000,000 arguments ({} bytes) in 64 KiB pieces answered in {:?}", req.len(), t.elapsed());
    drop(s);

    // Idle timeout: the quiet connection is closed, the talking one is not.
    let mut quiet = c.redis(1);
    let mut talking = c.redis(1);
    let _: String = redis::cmd("PING").query(&mut quiet).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let _: String = redis::cmd("PING").query(&mut talking).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let r: redis::RedisResult<String> = redis::cmd("PING").query(&mut quiet);
    assert!(r.is_err(), "a connection idle for 2.5 s (timeout 1.5 s) is closed: {r:?}");
    let v: String = talking.get("k").unwrap();
    assert_eq!(v, "x");
}

/// A client that pipelines GETs of a 256 KiB value and never reads is closed once the
/// replies it leaves unread pass `client_output_buffer_bytes` (1 MiB here), while another
/// client is served meanwhile and after; a pipeline whose replies fit in the limit is
/// served in full.
#[test]
fn a_client_that_does_not_read_is_closed_at_its_output_limit_others_are_served() {
    let mut c = Cluster::new(Some("pw"), "shards = 1\nclient_output_buffer_bytes = 1048576");
    c.start(1, true);
    c.wait_writable(1, "k");
    let addr = c.addr(1);
    let value = vec![b'v'; 256 << 10];
    let mut con = c.redis(1);
    let _: () = con.set("big", value.as_slice()).unwrap();

    // A pipeline whose replies fit in the limit is served in full, however late it reads.
    let mut p = redis::pipe();
    for _ in 0..3 {
        p.cmd("GET").arg("big");
    }
    let r: Vec<Vec<u8>> = p.query(&mut con).unwrap();
    assert!(r.len() == 3 && r.iter().all(|v| *v == value), "every reply arrives");

    // The hog: 400 GETs (100 MiB of replies), never read.
    let mut hog = TcpStream::connect(&addr).unwrap();
    hog.write_all(&command(&[b"AUTH", b"pw"])).unwrap();
    let mut ok = [0u8; 5];
    hog.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let mut b = Vec::new();
    for _ in 0..400 {
        encode_command(&["GET", "big"], &mut b);
    }
    hog.write_all(&b).unwrap();
    // Another client is served while the hog's replies pile up; the hog's connection is
    // probed with a small write: once the server closed it, the write is answered with a
    // reset and a later write fails.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut served = 0u32;
    let closed = loop {
        let n: i64 = con.incr("served", 1).unwrap();
        served += 1;
        assert_eq!(n, i64::from(served));
        if hog.write_all(b"PING\r\n").is_err() || hog.take_error().ok().flatten().is_some() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(closed, "the client that never reads was not closed (100 MiB of replies unread, limit 1 MiB)");
    // Served meanwhile and after.
    let v: Vec<u8> = con.get("big").unwrap();
    assert_eq!(v.len(), value.len());
    let v: Vec<u8> = c.redis(1).get("big").unwrap();
    assert_eq!(v.len(), value.len());
    eprintln!("other client served {served} requests while the hog was being closed");
}

/// Raises this process's open-file soft limit to its hard limit (the node process started
/// afterwards inherits it). Returns the limit now in force.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        }
    }
    r.rlim_cur
}

/// 10,000 sockets that connect and never authenticate are all closed after the AUTH
/// deadline (3 s here), and a real client connects and works while they are open and
/// after they are gone.
#[test]
fn ten_thousand_idle_unauthenticated_sockets_are_closed_after_the_auth_deadline() {
    const SOCKETS: usize = 10_000;
    let limit = raise_nofile();
    if limit < SOCKETS as u64 + 1024 {
        eprintln!(
            "SKIPPED: the open-file hard limit is {limit}; this test needs {} (10,000 sockets + 1024)",
            SOCKETS + 1024
        );
        return;
    }
    let deadline_ms = 3000;
    let mut c = Cluster::new(
        Some("pw"),
        &format!("shards = 1\nmax_clients = {}\nauth_timeout_ms = {deadline_ms}", SOCKETS + 100),
    );
    c.start(1, true);
    c.wait_writable(1, "k");
    let addr = c.addr(1);
    let t0 = Instant::now();
    // Eight connecting threads, so a connect that waits on a full accept queue does not
    // hold up the others.
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                (0..SOCKETS / 8).map(|_| TcpStream::connect(&addr).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    // During: a real client connects and works while the idle sockets pile up.
    let mut during = 0;
    while during == 0 || !openers.iter().all(|h| h.is_finished()) {
        let mut con = c.redis(1);
        let _: () = con.set("during", during).unwrap();
        let v: usize = con.get("during").unwrap();
        assert_eq!(v, during);
        during += 1;
        assert!(t0.elapsed() < Duration::from_secs(120), "10,000 connects still not done after 2 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut idle: Vec<TcpStream> = openers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(idle.len(), SOCKETS);
    let opened = t0.elapsed();
    // And with all of them open.
    let mut con = c.redis(1);
    let _: () = con.set("during", during).unwrap();
    // Every idle socket is closed by the server: EOF within the deadline plus a margin.
    let until = t0 + opened + Duration::from_millis(deadline_ms) + Duration::from_secs(10);
    for (i, s) in idle.iter_mut().enumerate() {
        let left = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let (out, closed) = read_until_closed(s, left);
        assert!(
            closed && out.is_empty(),
            "idle socket {i} still open {:?} after the first connect",
            t0.elapsed()
        );
    }
    let all_closed = t0.elapsed();
    assert!(all_closed >= Duration::from_millis(deadline_ms), "closed before the deadline ({all_closed:?})");
    drop(idle);
    // After: connections still work.
    let v: usize = c.redis(1).get("during").unwrap();
    assert_eq!(v, during);
    eprintln!(
        "{SOCKETS} sockets opened in {opened:?} (a real client served {during} times meanwhile), \
         all closed by {all_closed:?} (deadline {deadline_ms} ms)"
    );
}

/// Thread CPU time (clock_gettime of this thread).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the struct passed.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Parses `req` fed in `piece`-byte pieces; returns the parser's work (bytes examined)
/// and the thread CPU time it took.
fn parse_in_pieces(req: &[u8], piece: usize, lim: &RequestLimits) -> (u64, Duration) {
    let mut p = RequestParser::new();
    let t = thread_cpu();
    let mut got = None;
    for mut chunk in req.chunks(piece) {
        while !chunk.is_empty() {
            let (used, cmd) = p.feed(chunk, lim).unwrap();
            chunk = &chunk[used..];
            if cmd.is_some() {
                got = cmd;
            }
        }
    }
    let cpu = thread_cpu() - t;
    assert_eq!(got.map(|a| a.len()), Some(1_000_000));
    (p.examined(), cpu)
}

/// After AUTH, a 1,000,000-argument request sent in 64 KiB pieces parses with the same
/// work as one write of it: the parser examines each byte once (its counter of bytes
/// examined is deterministic) and the thread CPU time is within 2x (plus 20 ms for the
/// clock's jitter).
#[test]
fn a_million_argument_request_in_64k_pieces_parses_with_the_work_of_one_write() {
    let mut args: Vec<Vec<u8>> = vec![b"DEL".to_vec()];
    args.extend((0..999_999u32).map(|i| format!("k{i}").into_bytes()));
    let mut req = Vec::new();
    encode_command(&args, &mut req);
    let lim = RequestLimits {
        request: Limits { max_request: 32 << 20, max_args: 1 << 20 },
        max_inline: DEFAULT_MAX_INLINE,
        unauthenticated: None,
    };
    // Best of three each: CPU time on a shared machine only ever comes out too high.
    let best = |piece| (0..3).map(|_| parse_in_pieces(&req, piece, &lim)).min_by_key(|r| r.1).unwrap();
    let (whole_work, whole_cpu) = best(req.len());
    let (pieces_work, pieces_cpu) = best(64 << 10);
    eprintln!(
        "{} bytes: one write {whole_work} bytes examined, {whole_cpu:?} CPU; 64 KiB pieces \
         {pieces_work} bytes examined, {pieces_cpu:?} CPU",
        req.len()
    );
    assert!(pieces_work <= 2 * whole_work, "work in pieces {pieces_work} > 2 x {whole_work}");
    assert!(
        pieces_cpu <= 2 * whole_cpu + Duration::from_millis(20),
        "CPU in pieces {pieces_cpu:?} > 2 x {whole_cpu:?}"
    );
}

/// The server process's resident memory: (now, peak), bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A client that floods large requests faster than they run is pushed back at
/// `client_query_buffer_bytes` (1 MiB here): the server stops reading from it, so its
/// resident memory stays flat while the client tries to send 100 MiB of requests (each
/// ~256 KiB of wire bytes, ~5x that once parsed); another client is served meanwhile.
/// Peak growth must stay under 128 MiB: what the executor threads' allocator arenas touch
/// (~45 MiB measured), far from the ~500 MiB a server that reads everything holds.
#[test]
fn a_client_flooding_requests_is_pushed_back_at_its_query_buffer_limit() {
    let mut c = Cluster::new(
        Some("pw"),
        "shards = 1\nmax_request_bytes = 524288\nclient_query_buffer_bytes = 1048576",
    );
    c.start(1, true);
    c.wait_writable(1, "k");
    let pid = c.nodes[&1].child.as_ref().unwrap().id();
    let addr = c.addr(1);
    let mut hog = TcpStream::connect(&addr).unwrap();
    hog.write_all(&command(&[b"AUTH", b"pw"])).unwrap();
    let mut ok = [0u8; 5];
    hog.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let keys: Vec<String> = (0..25_000).map(|i| format!("f{i:05}")).collect();
    let mut args: Vec<&str> = vec!["EXISTS"];
    args.extend(keys.iter().map(String::as_str));
    let mut req = Vec::new();
    encode_command(&args, &mut req);
    let (before, _) = rss(pid);
    let mut writer = hog.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let mut sent = 0usize;
        for _ in 0..400 {
            if writer.write_all(&req).is_err() {
                break;
            }
            sent += req.len();
        }
        sent
    });
    // Served meanwhile.
    let mut con = c.redis(1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !flood.is_finished() {
        let _: i64 = con.incr("served", 1).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, peak) = rss(pid);
    hog.shutdown(std::net::Shutdown::Both).unwrap();
    let sent = flood.join().unwrap();
    let grew = peak.saturating_sub(before);
    eprintln!("flood: {} MiB written by the client, server peak RSS grew {} MiB", sent >> 20, grew >> 20);
    assert!(grew < 128 << 20, "server memory grew {} MiB under a 1 MiB query buffer limit", grew >> 20);
    let _: i64 = con.incr("served", 1).unwrap();
}

/// A TCP connection to `addr` (IPv4) whose receive buffer is set to `rcvbuf` bytes before
/// it connects, so the window it offers stays small from the handshake on.
fn connect_small_window(addr: &str, rcvbuf: libc::c_int) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sa: std::net::SocketAddrV4 = addr.parse().unwrap();
    // SAFETY: plain socket calls on a descriptor this function owns until it is handed to
    // TcpStream; every pointer passed points at a live value of the size given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&rcvbuf as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: sa.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*sa.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0);
        TcpStream::from_raw_fd(fd)
    }
}

/// Before AUTH the replies a client may leave unread are capped far lower (as Redis does
/// since CVE-2025-21605): a client that neither authenticates nor reads, pipelining PINGs
/// (each answered NOAUTH) through a small receive window, is closed once more than
/// `unauthenticated_output_buffer_bytes` (1024) of replies wait beyond what the kernel
/// buffers hold (the server's send buffer may grow to MiBs on loopback, hence 300,000
/// PINGs offered), long before the AUTH deadline (60 s here).
#[test]
fn an_unauthenticated_client_that_does_not_read_is_closed_at_its_small_output_limit() {
    let mut c = Cluster::new(Some("pw"), "shards = 1\nauth_timeout_ms = 60000");
    c.start(1, true);
    c.wait_writable(1, "k");
    let mut hog = connect_small_window(&c.addr(1), 2048);
    let mut writer = hog.try_clone().unwrap();
    let flood = std::thread::spawn(move || writer.write_all(&b"PING\r\n".repeat(300_000)).is_ok());
    let t = Instant::now();
    let deadline = t + Duration::from_secs(30);
    let closed = loop {
        if hog.write_all(b"PING\r\n").is_err() || hog.take_error().ok().flatten().is_some() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(closed, "an unauthenticated client leaving NOAUTH replies unread was not closed within 30 s");
    let _ = flood.join();
    eprintln!("unauthenticated non-reader closed after {:?}", t.elapsed());
    let v: String = c.redis(1).get("k").unwrap();
    assert_eq!(v, "x");
}

/// A transaction is bounded by the largest entry the server proposes (the engine's
/// `max_entry_bytes`, 4 MiB by default), not held whole until EXEC: a client opens MULTI
/// and queues 256 MiB of SETs (4,096 of 64 KiB). The command that passes the bound gets an
/// error and the queue is dropped at once; every other SET is answered `+QUEUED`; EXEC
/// answers Redis's EXECABORT. The server's peak resident memory grows by less than 128
/// MiB (a server that queues everything holds the 256 MiB).
#[test]
fn a_transaction_is_bounded_by_the_largest_entry_not_held_until_exec() {
    const SETS: usize = 4096;
    let mut c = Cluster::new(Some("pw"), "shards = 1");
    c.start(1, true);
    c.wait_writable(1, "k");
    let pid = c.nodes[&1].child.as_ref().unwrap().id();
    let mut s = TcpStream::connect(c.addr(1)).unwrap();
    let (before, _) = rss(pid);
    let mut writer = s.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let value = vec![b'v'; 64 << 10];
        writer.write_all(&command(&[b"AUTH", b"pw"])).unwrap();
        writer.write_all(&command(&[b"MULTI"])).unwrap();
        let set = command(&[b"SET", b"tx-key", &value]);
        for _ in 0..SETS {
            writer.write_all(&set).unwrap();
        }
        writer.write_all(&command(&[b"EXEC"])).unwrap();
    });
    let abort = b"-EXECABORT Transaction discarded because of previous errors.\r\n";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    let mut peak = 0;
    while !out.ends_with(abort) {
        assert!(Instant::now() < deadline, "no EXEC reply; read {} bytes", out.len());
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => panic!("closed; read {:?}", String::from_utf8_lossy(&out)),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
        peak = peak.max(rss(pid).1);
    }
    flood.join().unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("+OK\r\n+OK\r\n"), "{}", &text[..text.len().min(200)]);
    assert_eq!(text.matches("+QUEUED\r\n").count(), SETS - 1);
    assert_eq!(text.matches("-ERR transaction too large").count(), 1);
    let grew = peak.saturating_sub(before);
    eprintln!("MULTI flood: 256 MiB queued by the client, server peak RSS grew {} MiB", grew >> 20);
    assert!(grew < 128 << 20, "server memory grew {} MiB for one transaction", grew >> 20);
    // The connection and the server still serve.
    let mut con = c.redis(1);
    let v: Option<String> = con.get("tx-key").unwrap();
    assert_eq!(v, None, "the aborted transaction wrote nothing");
    // Watched keys count against the same bound: 70 keys of 64 KiB are refused whole.
    let keys: Vec<Vec<u8>> = (0..70u8).map(|i| vec![i; 64 << 10]).collect();
    let r: redis::RedisResult<()> = redis::cmd("WATCH").arg(&keys).query(&mut con);
    let e = r.expect_err("a WATCH past the bound");
    assert!(e.to_string().contains("too many watched keys"), "{e}");
    let r: redis::RedisResult<()> = redis::cmd("WATCH").arg(&keys[..8]).query(&mut con);
    r.expect("a WATCH within the bound");
}

/// Abusive glob patterns (Redis's CVE-2022-36021 and CVE-2024-31228) cost a node neither
/// its process nor hours: against a 40,000-byte key, a KEYS pattern of 40,000 stars
/// (which recursed once per star, past a thread's stack) and `*a` thirty times then `b`
/// (exponential with plain backtracking) are answered, empty, and the node serves on.
#[test]
fn abusive_glob_patterns_are_answered_at_once() {
    let mut c = Cluster::new(None, "shards = 2");
    c.start(1, true);
    c.wait_writable(1, "k");
    let mut con = c.redis(1);
    let key = "a".repeat(40_000);
    let _: () = con.set(&key, "v").unwrap();
    let t = Instant::now();
    let deep: Vec<String> = con.keys("*a".repeat(40_000)).unwrap();
    assert!(deep.is_empty(), "deeper than Redis's nesting limit: no match");
    let slow: Vec<String> = con.keys(format!("{}b", "*a".repeat(30))).unwrap();
    assert!(slow.is_empty());
    let (_, found): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(format!("{}b", "*a".repeat(30)))
        .arg("COUNT")
        .arg(1000)
        .query(&mut con)
        .unwrap();
    assert!(found.is_empty());
    eprintln!("abusive patterns answered in {:?}", t.elapsed());
    let hit: Vec<String> = con.keys("*a".repeat(100)).unwrap();
    assert_eq!(hit, vec![key]);
    let _: i64 = con.incr("served", 1).unwrap();
}

/// Connections that close with a job still queued for the executors keep counting against
/// `max_clients` until the job is done: with one executor kept busy by `KEYS *` over
/// 200,000 keys, clients that send it and reset their connections at once cannot pile up
/// jobs (each holding up to a query buffer); once 8 (`max_clients`) are held, a new
/// connection is refused with Redis's error, and once the jobs are done one is served.
#[test]
fn closed_connections_with_queued_jobs_count_against_max_clients() {
    let mut c = Cluster::new(None, "shards = 1\nexecutor_threads = 1\nmax_clients = 8");
    c.start(1, true);
    c.wait_writable(1, "k");
    let mut con = c.redis(1);
    for b in 0..200 {
        let mut cmd = redis::cmd("MSET");
        for i in 0..1000 {
            cmd.arg(format!("key:{b}:{i}")).arg("v");
        }
        let _: () = cmd.query(&mut con).unwrap();
    }
    drop(con);
    let keys = command(&[b"KEYS", b"*"]);
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused == 0 && Instant::now() < deadline {
        for _ in 0..16 {
            let s = TcpStream::connect(c.addr(1)).unwrap();
            let _ = (&s).write_all(&keys);
            // Closed with a reset: the server sees it gone at once.
            reset_on_close(&s);
            drop(s);
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut probe = TcpStream::connect(c.addr(1)).unwrap();
        probe.write_all(&command(&[b"PING"])).unwrap();
        let (out, _) = read_until_closed(&mut probe, Duration::from_millis(500));
        if String::from_utf8_lossy(&out).starts_with("-ERR max number of clients reached") {
            refused += 1;
        }
    }
    assert!(refused > 0, "gone connections' queued jobs never counted against max_clients");
    wait_until_served(&c.addr(1), Duration::from_secs(60));
}

/// Waits until a new connection is answered PONG (at most `within`).
fn wait_until_served(addr: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&command(&[b"PING"])).unwrap();
        let (out, _) = read_until_closed(&mut s, Duration::from_millis(300));
        if out.starts_with(b"+PONG\r\n") {
            return;
        }
        assert!(Instant::now() < deadline, "never served again: {:?}", String::from_utf8_lossy(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Makes closing `s` send a reset (SO_LINGER with a zero timeout).
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket `s` owns and keeps open for the call, with a pointer
    // to a `linger` value and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// The open-file limit process `pid` runs with (soft).
fn open_file_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// A node started with the usual soft limit of 1,024 open files raises it to fit its
/// connections (`max_clients` 10,000, the node channel's 1,024 and a reserve of 1,024 for
/// its own files), as Redis does; under a hard limit too low for that, it lowers
/// `max_clients` to what fits (CONFIG GET shows it) instead of letting a flood of clients
/// take the descriptors its write-ahead log needs for its next segment (which stops the
/// engine for good).
#[test]
fn the_open_file_limit_is_raised_to_fit_max_clients_or_max_clients_lowered_to_fit_it() {
    // The hard limit stays this process's (raising it takes a privilege).
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let hard = lim.rlim_max;
    assert!(hard >= 2100, "this test needs a hard limit of 2,100 open files at least");
    let mut c = Cluster::new(None, "shards = 1\n");
    c.nofile = Some((1024, hard));
    c.start(1, true);
    let pid = c.nodes[&1].child.as_ref().unwrap().id();
    let need = 10_000 + 1024 + 1024;
    assert_eq!(open_file_limit(pid), need.min(hard), "raised from 1,024");
    let mut con = redis::Client::open(c.url(1)).unwrap().get_connection().unwrap();
    let got: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("maxclients").query(&mut con).unwrap();
    let fits = if hard >= need { 10_000 } else { hard - 2048 };
    assert_eq!(got, ["maxclients", fits.to_string().as_str()]);
    drop(con);
    c.kill(1);

    let mut c = Cluster::new(None, "shards = 1\n");
    c.nofile = Some((2100, 2100));
    c.start(1, true);
    let pid = c.nodes[&1].child.as_ref().unwrap().id();
    assert_eq!(open_file_limit(pid), 2100);
    let mut con = redis::Client::open(c.url(1)).unwrap().get_connection().unwrap();
    let got: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("maxclients").query(&mut con).unwrap();
    assert_eq!(got, ["maxclients", (2100 - 1024 - 1024).to_string().as_str()]);
}
