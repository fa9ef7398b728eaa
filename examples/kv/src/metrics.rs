//! What the kv server counts about its own work ([`KvMetrics`]): requests and their
//! latency by command, error replies by kind, proposal latency, per-shard load, and the
//! client connection counters INFO reports; and the `/metrics` page that adds the
//! engine's series ([`crate::engine_metrics`]) and encodes everything with the
//! `prometheus` crate ([`render`]).
//!
//! Owns the series of the `flotilla_kv_` prefix and their label sets, kept bounded:
//! commands outside the command table count as `other`, error kinds are the reply's
//! first word when it is a short upper-case word (else `OTHER`), shards are this
//! cluster's shard numbers. Never serves HTTP ([`crate::http`]) and never decides anything
//! about a request: recording is an atomic add (per-command series are looked up in a
//! table built once, without a lock, and each is created at its first use, so commands
//! never run do not show).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::logging::ClientErrorLog;
use crate::node::Node;
use crate::resp::Value;
use crate::sm::SHARD_BASE;

/// The label of commands outside the command table.
pub const OTHER_COMMAND: &str = "other";

/// The admin and internal commands, counted under their own names.
const FLOTILLA_COMMANDS: [&str; 7] = [
    "flotilla.status",
    "flotilla.register",
    "flotilla.unregister",
    "flotilla.member",
    "flotilla.transfer",
    "flotilla.reloadcerts",
    "flotilla.local",
];

/// One command's series.
#[derive(Debug, Clone)]
struct CommandSeries {
    requests: IntCounter,
    duration: Histogram,
}

/// One shard's load: reads served here, writes proposed here, and their bytes.
#[derive(Debug, Default)]
struct ShardLoad {
    reads: AtomicU64,
    writes: AtomicU64,
    written_bytes: AtomicU64,
}

/// A batch of commands being answered: their labels and when it was handed out.
#[derive(Debug)]
pub struct Batch {
    labels: Vec<&'static str>,
    started: Instant,
}

/// The client port's connection counters (as INFO's `clients` and `stats` report them).
#[derive(Debug, Default)]
pub struct ClientCounters {
    /// Connections open now.
    pub connected: AtomicU64,
    /// Connections accepted since start (`total_connections_received`).
    pub received: AtomicU64,
    /// Connections refused: `max_clients` reached or protected mode
    /// (`rejected_connections`).
    pub rejected: AtomicU64,
}

/// Samples of the processed-commands counter, for INFO's `instantaneous_ops_per_sec`.
#[derive(Debug)]
struct OpsSamples {
    /// (when, commands processed then), oldest first, one per `SAMPLE_EVERY` at most.
    samples: Mutex<std::collections::VecDeque<(Instant, u64)>>,
    /// When the last sample was taken, in ns since `KvMetrics::started`.
    last_nanos: AtomicU64,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const SAMPLES: usize = 32;

/// The kv server's metrics (one per node).
#[derive(Debug)]
pub struct KvMetrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    /// Each known command's series, made at its first use.
    commands: HashMap<&'static str, OnceLock<Option<CommandSeries>>>,
    errors: IntCounterVec,
    propose: Histogram,
    shards: Vec<ShardLoad>,
    processed: AtomicU64,
    error_replies: AtomicU64,
    ops: OpsSamples,
    /// Connection counters (kept by the server loop).
    pub clients: ClientCounters,
    /// Rate-limited warnings for failures answered to clients.
    pub error_log: ClientErrorLog,
    /// When the node started (INFO's `uptime_in_seconds`).
    pub started: Instant,
}

/// The request latency buckets, in seconds: 50 µs to about 6.5 s, doubling.
fn request_buckets() -> Vec<f64> {
    (0..18).map(|i| 50e-6 * f64::from(1u32 << i)).collect()
}

/// The label of an error reply: its first word if that is 1..=32 bytes of `A-Z`, `.`
/// and `_`, else `OTHER`.
pub fn error_kind(e: &str) -> &str {
    let w = e.split(' ').next().unwrap_or("");
    let ok =
        !w.is_empty() && w.len() <= 32 && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'.' || b == b'_');
    if ok {
        w
    } else {
        "OTHER"
    }
}

impl KvMetrics {
    /// The metrics of a node serving `shards` shards. Fails only if the `prometheus` crate
    /// refuses a series definition (a fixed set, tested).
    pub fn new(shards: u32) -> Result<KvMetrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("flotilla_kv_requests_total", "Requests answered, by command"),
            &["command"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "flotilla_kv_request_duration_seconds",
                "Time from a request's batch being dispatched (parsed and handed out) to its replies, by command",
            )
            .buckets(request_buckets()),
            &["command"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("flotilla_kv_errors_total", "Error replies, by kind (the reply's first word)"),
            &["kind"],
        )?;
        let propose = Histogram::with_opts(
            HistogramOpts::new(
                "flotilla_kv_propose_duration_seconds",
                "Time from a write's proposal to its result on this node",
            )
            .buckets(request_buckets()),
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(propose.clone()))?;
        let commands = crate::command_table::names()
            .chain(FLOTILLA_COMMANDS)
            .chain([OTHER_COMMAND])
            .map(|name| (name, OnceLock::new()))
            .collect();
        let shards = (0..shards).map(|_| ShardLoad::default()).collect();
        let started = Instant::now();
        Ok(KvMetrics {
            registry,
            requests,
            durations: duration,
            commands,
            errors,
            propose,
            shards,
            processed: AtomicU64::new(0),
            error_replies: AtomicU64::new(0),
            ops: OpsSamples { samples: Mutex::new(Default::default()), last_nanos: AtomicU64::new(0) },
            clients: ClientCounters::default(),
            error_log: ClientErrorLog::default(),
            started,
        })
    }

    /// The label of the command named `name`: its lower-case name if the table knows it,
    /// else `other`.
    fn label(&self, name: &[u8]) -> &'static str {
        // Lower-cased on the stack: no allocation per command.
        let mut buf = [0u8; 32];
        let lower = match buf.get_mut(..name.len()) {
            Some(b) => {
                b.copy_from_slice(name);
                b.make_ascii_lowercase();
                std::str::from_utf8(b).unwrap_or("")
            }
            None => "",
        };
        self.commands.get_key_value(lower).map_or(OTHER_COMMAND, |(k, _)| k)
    }

    /// The series of `label` (made at its first use); `None` if the `prometheus` crate
    /// refused to make them.
    fn series(&self, label: &'static str) -> Option<&CommandSeries> {
        let cell = self.commands.get(label)?;
        cell.get_or_init(|| {
            Some(CommandSeries {
                requests: self.requests.get_metric_with_label_values(&[label]).ok()?,
                duration: self.durations.get_metric_with_label_values(&[label]).ok()?,
            })
        })
        .as_ref()
    }

    /// A batch of commands handed out now (to the loop's in-flight path or an
    /// executor): finish it with [`KvMetrics::end_batch`] when its replies are written.
    pub fn start_batch(&self, cmds: &[Vec<Vec<u8>>]) -> Batch {
        Batch {
            labels: cmds.iter().map(|c| self.label(c.first().map_or(&[][..], |n| &n[..]))).collect(),
            started: Instant::now(),
        }
    }

    /// Records a batch's replies: see [`KvMetrics::observe_batch`].
    pub fn end_batch(&self, b: Batch, replies: &[Value]) {
        self.observe(&b.labels, replies, b.started.elapsed());
    }

    /// Records a batch of commands answered together after `elapsed`: each command's
    /// count and latency, each error reply's kind, and a rate-limited warning for each
    /// failure.
    pub fn observe_batch(&self, cmds: &[Vec<Vec<u8>>], replies: &[Value], elapsed: Duration) {
        let b = self.start_batch(cmds);
        self.observe(&b.labels, replies, elapsed);
    }

    fn observe(&self, labels: &[&'static str], replies: &[Value], elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (&label, reply) in labels.iter().zip(replies) {
            if let Some(s) = self.series(label) {
                s.requests.inc();
                s.duration.observe(secs);
            }
            if let Value::Error(e) = reply {
                self.error_replies.fetch_add(1, Ordering::Relaxed);
                if let Ok(c) = self.errors.get_metric_with_label_values(&[error_kind(e)]) {
                    c.inc();
                }
                self.error_log.report(label, e);
            }
        }
        let n = labels.len().min(replies.len()) as u64;
        let total = self.processed.fetch_add(n, Ordering::Relaxed) + n;
        self.sample_ops(total);
    }

    /// Takes a sample of the processed counter if the last is `SAMPLE_EVERY` old (and no
    /// other thread is taking one).
    fn sample_ops(&self, total: u64) {
        let now = Instant::now();
        let at = u64::try_from(now.duration_since(self.started).as_nanos()).unwrap_or(u64::MAX);
        let last = self.ops.last_nanos.load(Ordering::Relaxed);
        if at.saturating_sub(last) < SAMPLE_EVERY.as_nanos() as u64
            || self.ops.last_nanos.compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        if let Ok(mut s) = self.ops.samples.try_lock() {
            if s.len() == SAMPLES {
                s.pop_front();
            }
            s.push_back((now, total));
        }
    }

    /// Commands processed since start (`total_commands_processed`).
    pub fn commands_processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Error replies since start (`total_error_replies`).
    pub fn error_replies(&self) -> u64 {
        self.error_replies.load(Ordering::Relaxed)
    }

    /// Commands per second over about the last second (`instantaneous_ops_per_sec`):
    /// measured from the newest sample at least a second old (or the oldest one).
    pub fn ops_per_sec(&self) -> u64 {
        let now = Instant::now();
        let total = self.commands_processed();
        let s = self.ops.samples.lock().unwrap_or_else(|e| e.into_inner());
        let base = s
            .iter()
            .rev()
            .find(|(t, _)| now.duration_since(*t) >= Duration::from_secs(1))
            .or_else(|| s.front())
            .copied();
        match base {
            Some((t, c)) if now.duration_since(t) >= SAMPLE_EVERY => {
                (total.saturating_sub(c) as f64 / now.duration_since(t).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }

    /// Records the time from a write's proposal to its result.
    pub fn observe_propose(&self, elapsed: Duration) {
        self.propose.observe(elapsed.as_secs_f64());
    }

    fn shard(&self, group: u64) -> Option<&ShardLoad> {
        self.shards.get(usize::try_from(group.checked_sub(SHARD_BASE)?).ok()?)
    }

    /// Counts a write of `bytes` proposed to `group` here (the meta group is not counted).
    pub fn count_write(&self, group: u64, bytes: usize) {
        if let Some(s) = self.shard(group) {
            s.writes.fetch_add(1, Ordering::Relaxed);
            s.written_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// Counts a read of `group` served here.
    pub fn count_read(&self, group: u64) {
        if let Some(s) = self.shard(group) {
            s.reads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The kv server's families: the registry's and the per-shard and connection series.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = self.registry.gather();
        type Pick = fn(&ShardLoad) -> &AtomicU64;
        let per_shard: [(&str, &str, Pick); 3] = [
            ("flotilla_kv_shard_reads_total", "Reads served here, by shard", |s| &s.reads),
            ("flotilla_kv_shard_writes_total", "Writes proposed here, by shard", |s| &s.writes),
            ("flotilla_kv_shard_written_bytes_total", "Bytes of the writes proposed here, by shard", |s| {
                &s.written_bytes
            }),
        ];
        for (name, help, pick) in per_shard {
            let metrics: Vec<proto::Metric> = self
                .shards
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let v = pick(s).load(Ordering::Relaxed);
                    (v > 0).then(|| counter_metric(&[("shard", i.to_string())], v))
                })
                .collect();
            if !metrics.is_empty() {
                out.push(family(name, help, MetricType::COUNTER, metrics));
            }
        }
        let c = &self.clients;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push(family(
            "flotilla_kv_connected_clients",
            "Client connections open now",
            MetricType::GAUGE,
            vec![gauge_metric(l(&c.connected))],
        ));
        out.push(family(
            "flotilla_kv_connections_received_total",
            "Client connections accepted",
            MetricType::COUNTER,
            vec![counter_metric(&[], l(&c.received))],
        ));
        out.push(family(
            "flotilla_kv_connections_rejected_total",
            "Client connections refused (max_clients, protected mode)",
            MetricType::COUNTER,
            vec![counter_metric(&[], l(&c.rejected))],
        ));
        out
    }
}

fn counter_metric(labels: &[(&str, String)], v: u64) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut p = proto::LabelPair::default();
                p.set_name(k.to_string());
                p.set_value(v.clone());
                p
            })
            .collect(),
    );
    let mut c = proto::Counter::default();
    c.set_value(v as f64);
    m.set_counter(c);
    m
}

fn gauge_metric(v: u64) -> proto::Metric {
    let mut m = proto::Metric::default();
    let mut g = proto::Gauge::default();
    g.set_value(v as f64);
    m.set_gauge(g);
    m
}

fn family(name: &str, help: &str, t: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(t);
    f.set_metric(metrics.into());
    f
}

/// The `/metrics` page of `node`: the kv server's series and the engine's, in the
/// Prometheus text format (written by the `prometheus` crate's encoder).
pub fn render(node: &Node) -> Result<String, prometheus::Error> {
    let mut families = node.kv_metrics().families();
    let e = node.engine();
    families.extend(crate::engine_metrics::families(&e.metrics(), &e.latency_histograms()));
    families.extend(crate::engine_metrics::group_load_families(&e.group_loads()));
    prometheus::TextEncoder::new().encode_to_string(&families)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn requests_errors_and_shards_are_counted_with_bounded_labels() {
        let m = KvMetrics::new(4).unwrap();
        let cmds = vec![cmd(&["set", "k", "v"]), cmd(&["GET", "k"]), cmd(&["NOSUCH"]), cmd(&["get", "x"])];
        let replies = vec![
            Value::ok(),
            Value::Error("TRYAGAIN group busy".into()),
            Value::Error("ERR unknown command 'NOSUCH'".into()),
            Value::Bulk(None),
        ];
        m.observe_batch(&cmds, &replies, Duration::from_millis(3));
        m.count_write(SHARD_BASE + 2, 10);
        m.count_write(SHARD_BASE + 2, 5);
        m.count_read(SHARD_BASE + 3);
        m.count_read(1); // the meta group: not a shard
        m.count_write(SHARD_BASE + 99, 1); // not a shard of this cluster
        m.observe_propose(Duration::from_millis(1));
        let text = prometheus::TextEncoder::new().encode_to_string(&m.families()).unwrap();
        for want in [
            "flotilla_kv_requests_total{command=\"set\"} 1",
            "flotilla_kv_requests_total{command=\"get\"} 2",
            "flotilla_kv_requests_total{command=\"other\"} 1",
            "flotilla_kv_request_duration_seconds_count{command=\"get\"} 2",
            "flotilla_kv_request_duration_seconds_bucket{command=\"set\",le=\"0.0016\"} 0",
            "flotilla_kv_request_duration_seconds_bucket{command=\"set\",le=\"0.0032\"} 1",
            "flotilla_kv_errors_total{kind=\"TRYAGAIN\"} 1",
            "flotilla_kv_errors_total{kind=\"ERR\"} 1",
            "flotilla_kv_shard_writes_total{shard=\"2\"} 2",
            "flotilla_kv_shard_written_bytes_total{shard=\"2\"} 15",
            "flotilla_kv_shard_reads_total{shard=\"3\"} 1",
            "flotilla_kv_propose_duration_seconds_count 1",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
        assert!(!text.contains("command=\"nosuch\""));
        assert!(!text.contains("command=\"del\""), "no series for commands never run");
        assert!(!text.contains("shard=\"99\""));
        assert_eq!(m.commands_processed(), 4);
    }

    #[test]
    fn error_kinds_are_short_upper_case_words() {
        assert_eq!(error_kind("MOVED 1 127.0.0.1:1"), "MOVED");
        assert_eq!(error_kind("FLOTILLA.REDIRECT 2"), "FLOTILLA.REDIRECT");
        assert_eq!(error_kind("weird lower case"), "OTHER");
        assert_eq!(error_kind(&"A".repeat(40)), "OTHER");
        assert_eq!(error_kind(""), "OTHER");
    }

    #[test]
    fn ops_per_sec_follows_the_processed_counter() {
        let m = KvMetrics::new(1).unwrap();
        assert_eq!(m.ops_per_sec(), 0);
        let cmds = vec![cmd(&["PING"]); 100];
        let replies = vec![Value::ok(); 100];
        m.observe_batch(&cmds, &replies, Duration::ZERO);
        // Bounded: about 1.5 s of batches, one every 20 ms.
        for _ in 0..75 {
            std::thread::sleep(Duration::from_millis(20));
            m.observe_batch(&cmds, &replies, Duration::ZERO);
        }
        let rate = m.ops_per_sec();
        // 100 commands every 20 ms or more: at most 5000/s, and on a busy machine well
        // above nothing.
        assert!(rate > 100 && rate <= 5_500, "{rate}");
    }
}
