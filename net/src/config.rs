//! The transport's configuration and its validation into a checked [`ValidNetConfig`].
//!
//! Owns the knobs, their defaults and bounds, and one [`NetConfigError`] variant per rule.
//! Never opens sockets or reads files.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

/// Transport settings. Build with [`NetConfig::new`], adjust fields, then
/// [`NetConfig::validate`].
///
/// With the default `serde` feature it reads from and writes to configuration files
/// (missing fields take their defaults; sizes as integers or strings such as `"16MiB"`,
/// durations as strings such as `"5s"`: see [`crate::units`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct NetConfig {
    /// This node's id. Required; never 0. Must be the id named by the node's certificate.
    pub node_id: u64,
    /// UDP address to listen on (dials also leave from it). Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// This process's incarnation, reported to peers so they can tell a restart. Default
    /// `None`: derived from the wall clock at start (nanoseconds), so it changes on restart.
    /// Bounds: any non-zero value.
    pub incarnation: Option<u64>,
    /// Largest frame payload accepted or sent, in bytes. Default 16 MiB; bounds 4 KiB ..=
    /// 256 MiB.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_usize"))]
    pub max_frame_size: usize,
    /// Frames queued per peer before `send` reports `QueueFull`. Default 8192; bounds 1 ..=
    /// 1,048,576.
    pub queue_frames: usize,
    /// Bytes queued per peer before `send` reports `QueueFull`. Default 64 MiB; bounds
    /// `max_frame_size` ..= 4 GiB.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_usize"))]
    pub queue_bytes: usize,
    /// Inbound message-lane frames and peer events buffered before readers stop reading
    /// (QUIC flow control then pushes back on senders). Bulk events have their own channel
    /// of twice `max_bulk_streams`, control-lane frames one of `inbox_capacity / 16`
    /// (at least 16). Default 65,536; bounds 16 ..= 16,777,216. Bytes are bounded by the
    /// per-peer budgets below, not by this count.
    pub inbox_capacity: usize,
    /// Bytes of one peer's message-lane frames and bulk chunks this node holds at once: a
    /// frame is charged (its payload, at least 256 bytes) before its payload is read, and
    /// released only when its consumer drops the frame's
    /// [`InboundPermit`](crate::InboundPermit). While a peer's budget is spent its streams
    /// are not read, so QUIC flow control stops the sender. Default 64 MiB; bounds
    /// `max_frame_size` ..= 2 GiB.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_usize"))]
    pub peer_inbound_bytes: usize,
    /// The same for one peer's control lane (heartbeats, votes, their answers, tombstones:
    /// see [`Endpoint::send_control`](crate::Endpoint::send_control)), which is exempt from
    /// `peer_inbound_bytes`; a control frame is at most this long (and at most
    /// `max_frame_size`). Default 16 MiB; bounds 64 KiB ..= 1 GiB.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_usize"))]
    pub control_inbound_bytes: usize,
    /// Keep-alive ping interval on an idle connection. Default 1 s; bounds 10 ms ..= 60 s and
    /// below `idle_timeout`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub keep_alive: Duration,
    /// A connection with no traffic for this long is declared lost (peer down). Default 5 s;
    /// bounds 100 ms ..= 600 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub idle_timeout: Duration,
    /// Longest a dial (QUIC + TLS handshake + hello) may take. Default 3 s; bounds 10 ms ..=
    /// 60 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub connect_timeout: Duration,
    /// First reconnect delay after a failed dial or a lost connection (each delay is a
    /// random point between half and all of the current step, which doubles per failure).
    /// Default 50 ms; bounds 1 ms ..= `backoff_max`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub backoff_initial: Duration,
    /// Cap of the exponential reconnect delay. Also how long a connection must stay up
    /// before its loss resets the delay to `backoff_initial`: a peer that admits and drops
    /// connections at once is redialed on the growing schedule. Default 5 s; bounds
    /// `backoff_initial` ..= 300 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub backoff_max: Duration,
    /// Largest bulk (snapshot) chunk; bigger chunks are refused, by the sender when given
    /// and by the receiver when announced (it refuses the stream: a peer with a larger
    /// setting gets [`crate::BulkError::Refused`]). Default 1 MiB; bounds 1 KiB ..=
    /// `max_frame_size`.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_usize"))]
    pub bulk_chunk_size: usize,
    /// Concurrent bulk streams a peer may open towards this node. Default 8; bounds 1 ..=
    /// 1024.
    pub max_bulk_streams: u32,
    /// A bulk stream this node sends fails when the receiver has let no byte of it through
    /// (no stream granted, no flow-control credit) for this long: a peer that withholds
    /// credit cannot keep a sender, and the thread feeding it, forever. Default 60 s;
    /// bounds 1 s ..= 3600 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub bulk_stall_timeout: Duration,
    /// Threads of the transport's own tokio runtime. Default 1; bounds 1 ..= 16.
    pub threads: usize,
    /// Largest UDP payload this node sends or accepts: the upper bound of path MTU discovery
    /// (QUIC starts at 1200 bytes and probes up to it; lost probes cost nothing but the
    /// probe). Default 1452 (Ethernet MTU 1500 minus IPv6/UDP headers, safe on any LAN); on
    /// loopback or jumbo-frame networks raise it (loopback: 65527) for far fewer packets,
    /// hence far less CPU per byte. Above 16 KiB, UDP segmentation offload is turned off:
    /// one datagram then already amortises a send call, and a GSO batch of such datagrams
    /// would exceed the kernel's 64 KiB limit. Bounds 1200 ..= 65527.
    pub max_udp_payload: u16,
    /// Requested size of the UDP socket's kernel send and receive buffers (the kernel
    /// clamps it to `net.core.{w,r}mem_max`; best effort). Large buffers keep bursts from
    /// overflowing the receive queue, which QUIC would treat as congestion. Default 4 MiB;
    /// bounds 64 KiB ..= 256 MiB.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_usize"))]
    pub udp_buffer_bytes: usize,
    /// Flow-control window of each QUIC stream (the message lane and each bulk stream),
    /// in bytes; the connection's window is twice it. Default 4 MiB; bounds 64 KiB ..=
    /// 256 MiB, and at least twice `bulk_chunk_size`. Keep the connection window within
    /// what the receiver's socket buffer holds, or a slow receiver drops datagrams.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::bytes_usize"))]
    pub stream_window: usize,
    /// Address validation: a connection attempt from an address that has not proven it
    /// receives this node's packets (no retry token in its first packet) is answered with a
    /// stateless QUIC Retry, so a forged source address costs this node no connection
    /// state. Each new connection then takes one more round trip (quinn is built without
    /// its `bloom` feature, so no NEW_TOKEN token lets a returning peer skip it): on a LAN
    /// well under a millisecond, for long-lived connections. Default `true`.
    pub address_validation: bool,
    /// Inbound connections in admission at once (from the first packet through the TLS
    /// handshake to the hello); further attempts are refused at once, before any TLS work.
    /// Default 64; bounds 1 ..= 65,536.
    pub max_handshakes: usize,
    /// Of those, at most this many from one source address (IP and port), so one flooding
    /// socket cannot take every slot from real peers. Default 8; bounds 1 ..=
    /// `max_handshakes`.
    pub max_handshakes_per_address: usize,
    /// Ack-eliciting packets a peer may receive from this node before it must send an
    /// acknowledgement (requested from the peer with QUIC's ACK frequency extension,
    /// draft-ietf-quic-ack-frequency, which quinn speaks; a peer without it keeps QUIC's
    /// default of one acknowledgement every two packets). Raft's traffic is request and
    /// answer: most acknowledgements can ride the answer, and an acknowledgement sent on
    /// its own costs a datagram, a wake-up and a decryption at each end. Default 8; bounds
    /// 0 (acknowledge every packet at once) ..= 1,024.
    pub ack_eliciting_threshold: u32,
    /// Longest a peer may hold back an acknowledgement of this node's packets (same
    /// extension; QUIC's default is 25 ms). It also delays loss detection by up to as
    /// much. Default 5 ms; bounds 1 ms ..= 25 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_ack_delay: Duration,
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

impl Default for NetConfig {
    /// Every default, with node id 0 (which [`NetConfig::validate`] refuses until one is set).
    fn default() -> NetConfig {
        NetConfig::new(0)
    }
}

impl NetConfig {
    /// Defaults for node `node_id`.
    pub fn new(node_id: u64) -> NetConfig {
        NetConfig {
            node_id,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            incarnation: None,
            max_frame_size: 16 * MIB,
            queue_frames: 8192,
            queue_bytes: 64 * MIB,
            inbox_capacity: 65_536,
            peer_inbound_bytes: 64 * MIB,
            control_inbound_bytes: 16 * MIB,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            bulk_chunk_size: MIB,
            max_bulk_streams: 8,
            bulk_stall_timeout: Duration::from_secs(60),
            threads: 1,
            max_udp_payload: 1452,
            udp_buffer_bytes: 4 * MIB,
            stream_window: 4 * MIB,
            address_validation: true,
            max_handshakes: 64,
            max_handshakes_per_address: 8,
            ack_eliciting_threshold: 8,
            max_ack_delay: Duration::from_millis(5),
        }
    }

    /// Checks every rule once.
    pub fn validate(self) -> Result<ValidNetConfig, NetConfigError> {
        use NetConfigError as E;
        let c = &self;
        if c.node_id == 0 {
            return Err(E::ZeroNodeId);
        }
        if c.incarnation == Some(0) {
            return Err(E::ZeroIncarnation);
        }
        if !(4 * KIB..=256 * MIB).contains(&c.max_frame_size) {
            return Err(E::MaxFrameSize(c.max_frame_size));
        }
        if !(1..=1_048_576).contains(&c.queue_frames) {
            return Err(E::QueueFrames(c.queue_frames));
        }
        if !(c.max_frame_size..=4096 * MIB).contains(&c.queue_bytes) {
            return Err(E::QueueBytes(c.queue_bytes));
        }
        if !(16..=16_777_216).contains(&c.inbox_capacity) {
            return Err(E::InboxCapacity(c.inbox_capacity));
        }
        if !(c.max_frame_size..=2048 * MIB).contains(&c.peer_inbound_bytes) {
            return Err(E::PeerInboundBytes(c.peer_inbound_bytes));
        }
        if !(64 * KIB..=1024 * MIB).contains(&c.control_inbound_bytes) {
            return Err(E::ControlInboundBytes(c.control_inbound_bytes));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&c.idle_timeout) {
            return Err(E::IdleTimeout(c.idle_timeout));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&c.keep_alive)
            || c.keep_alive >= c.idle_timeout
        {
            return Err(E::KeepAlive(c.keep_alive));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&c.connect_timeout) {
            return Err(E::ConnectTimeout(c.connect_timeout));
        }
        if c.backoff_initial < Duration::from_millis(1) || c.backoff_initial > c.backoff_max {
            return Err(E::BackoffInitial(c.backoff_initial));
        }
        if c.backoff_max > Duration::from_secs(300) {
            return Err(E::BackoffMax(c.backoff_max));
        }
        if !(KIB..=c.max_frame_size).contains(&c.bulk_chunk_size) {
            return Err(E::BulkChunkSize(c.bulk_chunk_size));
        }
        if !(1..=1024).contains(&c.max_bulk_streams) {
            return Err(E::MaxBulkStreams(c.max_bulk_streams));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&c.bulk_stall_timeout) {
            return Err(E::BulkStallTimeout(c.bulk_stall_timeout));
        }
        if !(1..=16).contains(&c.threads) {
            return Err(E::Threads(c.threads));
        }
        if !(1200..=65527).contains(&c.max_udp_payload) {
            return Err(E::MaxUdpPayload(c.max_udp_payload));
        }
        if !(64 * KIB..=256 * MIB).contains(&c.udp_buffer_bytes) {
            return Err(E::UdpBufferBytes(c.udp_buffer_bytes));
        }
        if !(64 * KIB..=256 * MIB).contains(&c.stream_window) || c.stream_window < 2 * c.bulk_chunk_size {
            return Err(E::StreamWindow(c.stream_window));
        }
        if !(1..=65_536).contains(&c.max_handshakes) {
            return Err(E::MaxHandshakes(c.max_handshakes));
        }
        if !(1..=c.max_handshakes).contains(&c.max_handshakes_per_address) {
            return Err(E::MaxHandshakesPerAddress(c.max_handshakes_per_address));
        }
        if c.ack_eliciting_threshold > 1024 {
            return Err(E::AckElicitingThreshold(c.ack_eliciting_threshold));
        }
        if !(Duration::from_millis(1)..=Duration::from_millis(25)).contains(&c.max_ack_delay) {
            return Err(E::MaxAckDelay(c.max_ack_delay));
        }
        Ok(ValidNetConfig(self))
    }
}

/// A [`NetConfig`] that passed [`NetConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidNetConfig(NetConfig);

impl std::ops::Deref for ValidNetConfig {
    type Target = NetConfig;
    fn deref(&self) -> &NetConfig {
        &self.0
    }
}

/// A broken rule of [`NetConfig`]; one variant per rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NetConfigError {
    /// `node_id` is 0.
    #[error("node_id must not be 0")]
    ZeroNodeId,
    /// `incarnation` is `Some(0)`.
    #[error("incarnation must not be 0")]
    ZeroIncarnation,
    /// `max_frame_size` is outside 4 KiB ..= 256 MiB.
    #[error("max_frame_size {0} outside 4 KiB ..= 256 MiB")]
    MaxFrameSize(usize),
    /// `queue_frames` is outside 1 ..= 1,048,576.
    #[error("queue_frames {0} outside 1 ..= 1048576")]
    QueueFrames(usize),
    /// `queue_bytes` is outside `max_frame_size` ..= 4 GiB.
    #[error("queue_bytes {0} outside max_frame_size ..= 4 GiB")]
    QueueBytes(usize),
    /// `inbox_capacity` is outside 16 ..= 16,777,216.
    #[error("inbox_capacity {0} outside 16 ..= 16777216")]
    InboxCapacity(usize),
    /// `peer_inbound_bytes` is outside `max_frame_size` ..= 2 GiB.
    #[error("peer_inbound_bytes {0} outside max_frame_size ..= 2 GiB")]
    PeerInboundBytes(usize),
    /// `control_inbound_bytes` is outside 64 KiB ..= 1 GiB.
    #[error("control_inbound_bytes {0} outside 64 KiB ..= 1 GiB")]
    ControlInboundBytes(usize),
    /// `idle_timeout` is outside 100 ms ..= 600 s.
    #[error("idle_timeout {0:?} outside 100 ms ..= 600 s")]
    IdleTimeout(Duration),
    /// `keep_alive` is outside 10 ms ..= 60 s or not below `idle_timeout`.
    #[error("keep_alive {0:?} outside 10 ms ..= 60 s or not below idle_timeout")]
    KeepAlive(Duration),
    /// `connect_timeout` is outside 10 ms ..= 60 s.
    #[error("connect_timeout {0:?} outside 10 ms ..= 60 s")]
    ConnectTimeout(Duration),
    /// `backoff_initial` is below 1 ms or above `backoff_max`.
    #[error("backoff_initial {0:?} below 1 ms or above backoff_max")]
    BackoffInitial(Duration),
    /// `backoff_max` is above 300 s.
    #[error("backoff_max {0:?} above 300 s")]
    BackoffMax(Duration),
    /// `bulk_chunk_size` is outside 1 KiB ..= `max_frame_size`.
    #[error("bulk_chunk_size {0} outside 1 KiB ..= max_frame_size")]
    BulkChunkSize(usize),
    /// `max_bulk_streams` is outside 1 ..= 1024.
    #[error("max_bulk_streams {0} outside 1 ..= 1024")]
    MaxBulkStreams(u32),
    /// `bulk_stall_timeout` is outside 1 s ..= 3600 s.
    #[error("bulk_stall_timeout {0:?} outside 1 s ..= 3600 s")]
    BulkStallTimeout(Duration),
    /// `threads` is outside 1 ..= 16.
    #[error("threads {0} outside 1 ..= 16")]
    Threads(usize),
    /// `max_udp_payload` is outside 1200 ..= 65527.
    #[error("max_udp_payload {0} outside 1200 ..= 65527")]
    MaxUdpPayload(u16),
    /// `udp_buffer_bytes` is outside 64 KiB ..= 256 MiB.
    #[error("udp_buffer_bytes {0} outside 64 KiB ..= 256 MiB")]
    UdpBufferBytes(usize),
    /// `stream_window` is outside 64 KiB ..= 256 MiB or below twice `bulk_chunk_size`.
    #[error("stream_window {0} outside 64 KiB ..= 256 MiB or below twice bulk_chunk_size")]
    StreamWindow(usize),
    /// `max_handshakes` is outside 1 ..= 65,536.
    #[error("max_handshakes {0} outside 1 ..= 65536")]
    MaxHandshakes(usize),
    /// `max_handshakes_per_address` is outside 1 ..= `max_handshakes`.
    #[error("max_handshakes_per_address {0} outside 1 ..= max_handshakes")]
    MaxHandshakesPerAddress(usize),
    /// `ack_eliciting_threshold` is above 1,024.
    #[error("ack_eliciting_threshold {0} above 1024")]
    AckElicitingThreshold(u32),
    /// `max_ack_delay` is outside 1 ms ..= 25 ms.
    #[error("max_ack_delay {0:?} outside 1 ms ..= 25 ms")]
    MaxAckDelay(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_each_rule_fires() {
        assert!(NetConfig::new(1).validate().is_ok());
        assert_eq!(NetConfig::new(0).validate(), Err(NetConfigError::ZeroNodeId));
        let mut c = NetConfig::new(1);
        c.keep_alive = c.idle_timeout;
        assert_eq!(c.validate(), Err(NetConfigError::KeepAlive(Duration::from_secs(5))));
        let mut c = NetConfig::new(1);
        c.bulk_chunk_size = c.max_frame_size + 1;
        assert!(matches!(c.validate(), Err(NetConfigError::BulkChunkSize(_))));
        let mut c = NetConfig::new(1);
        c.backoff_initial = Duration::from_secs(10);
        assert!(matches!(c.validate(), Err(NetConfigError::BackoffInitial(_))));
        let mut c = NetConfig::new(1);
        c.queue_frames = 0;
        assert!(matches!(c.validate(), Err(NetConfigError::QueueFrames(0))));
        let mut c = NetConfig::new(1);
        c.max_udp_payload = 1199;
        assert!(matches!(c.validate(), Err(NetConfigError::MaxUdpPayload(1199))));
        let mut c = NetConfig::new(1);
        c.udp_buffer_bytes = 1024;
        assert!(matches!(c.validate(), Err(NetConfigError::UdpBufferBytes(1024))));
        let mut c = NetConfig::new(1);
        c.stream_window = c.bulk_chunk_size;
        assert!(matches!(c.validate(), Err(NetConfigError::StreamWindow(_))));
        let mut c = NetConfig::new(1);
        c.peer_inbound_bytes = c.max_frame_size - 1;
        assert!(matches!(c.validate(), Err(NetConfigError::PeerInboundBytes(_))));
        let mut c = NetConfig::new(1);
        c.peer_inbound_bytes = 2048 * MIB + 1;
        assert!(matches!(c.validate(), Err(NetConfigError::PeerInboundBytes(_))));
        let mut c = NetConfig::new(1);
        c.control_inbound_bytes = 64 * KIB - 1;
        assert!(matches!(c.validate(), Err(NetConfigError::ControlInboundBytes(_))));
        let mut c = NetConfig::new(1);
        c.max_handshakes = 0;
        assert!(matches!(c.validate(), Err(NetConfigError::MaxHandshakes(0))));
        let mut c = NetConfig::new(1);
        c.max_handshakes_per_address = c.max_handshakes + 1;
        assert!(matches!(c.validate(), Err(NetConfigError::MaxHandshakesPerAddress(65))));
        let mut c = NetConfig::new(1);
        c.ack_eliciting_threshold = 1025;
        assert_eq!(c.clone().validate(), Err(NetConfigError::AckElicitingThreshold(1025)));
        c.ack_eliciting_threshold = 0;
        assert!(c.clone().validate().is_ok(), "0: acknowledge every packet");
        for bad in [Duration::from_micros(999), Duration::from_millis(26)] {
            c.max_ack_delay = bad;
            assert_eq!(c.clone().validate(), Err(NetConfigError::MaxAckDelay(bad)));
        }
    }
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;

    #[test]
    fn reads_human_units_and_defaults_from_toml() {
        let c: NetConfig = toml::from_str(
            "node_id = 7\nlisten = \"127.0.0.1:7000\"\nmax_frame_size = \"8MiB\"\nqueue_bytes = 33554432\n\
             idle_timeout = \"10s\"\nbackoff_initial = \"20ms\"\n",
        )
        .unwrap();
        assert_eq!(c.node_id, 7);
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(c.max_frame_size, 8 << 20);
        assert_eq!(c.queue_bytes, 32 << 20);
        assert_eq!(c.idle_timeout, Duration::from_secs(10));
        assert_eq!(c.backoff_initial, Duration::from_millis(20));
        let d = NetConfig::new(7);
        assert_eq!((c.stream_window, c.keep_alive), (d.stream_window, d.keep_alive), "defaults kept");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn round_trips_and_still_validates() {
        let mut c = NetConfig::new(3);
        c.bulk_chunk_size = 12_345;
        c.connect_timeout = Duration::from_millis(1500);
        let back: NetConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let zero: NetConfig = toml::from_str("").unwrap();
        assert_eq!(zero.validate(), Err(NetConfigError::ZeroNodeId));
        let small: NetConfig = toml::from_str("node_id = 1\nmax_frame_size = \"1KiB\"\n").unwrap();
        assert!(small.validate().is_err(), "deserializing never bypasses the bounds");
        assert!(
            toml::from_str::<NetConfig>("node_id = 1\nidle_timeout = 5\n").is_err(),
            "durations need a unit"
        );
    }
}
