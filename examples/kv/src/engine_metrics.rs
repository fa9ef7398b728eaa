//! The engine's own metrics as Prometheus metric families: every field of
//! [`Metrics`] (counters as `flotilla_engine_<field>_total`, gauges as
//! `flotilla_engine_<field>`) and the engine's latency histograms
//! ([`LatencyHistograms`]: WAL sync and apply) in seconds.
//!
//! Owns the names, help texts and types of those series. Never reads the engine on its
//! own, never serves or encodes anything: [`crate::metrics`] gathers, the `prometheus`
//! crate's encoder writes the text.

use flotilla_engine::api::{GroupLoad, LatencyHistograms, LatencySnapshot, Metrics, LATENCY_BUCKETS};
use prometheus::proto::{self, MetricFamily, MetricType};

/// Whether a series is a counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}
use Kind::{Counter, Gauge};

/// Every field of `m`: (field name, value, kind, help).
fn fields(m: &Metrics) -> [(&'static str, u64, Kind, &'static str); 80] {
    [
        ("wal_batches", m.wal_batches, Counter, "WAL write batches submitted by the workers"),
        ("wal_batch_groups", m.wal_batch_groups, Counter, "Group writes carried by the WAL write batches"),
        ("wal_batch_bytes", m.wal_batch_bytes, Counter, "Encoded bytes of the WAL write batches"),
        ("wal_inline_writes", m.wal_inline_writes, Counter, "WAL write batches an idle worker wrote and synced on its own thread"),
        ("wal_syncs", m.wal_syncs, Counter, "Group-commit write+sync calls of the WAL (one covers the batches of all workers that were waiting)"),
        ("wal_sync_nanos_total", m.wal_sync_nanos_total, Counter, "Nanoseconds spent in WAL group-commit write+sync calls"),
        ("wal_sync_nanos_max", m.wal_sync_nanos_max, Gauge, "The longest WAL group-commit write+sync call, in nanoseconds"),
        ("wal_pending_bytes", m.wal_pending_bytes, Gauge, "Bytes of WAL batches submitted and not yet durable, over all workers"),
        ("wal_segments", m.wal_segments, Gauge, "Live WAL segments (see EngineConfig::max_wal_segments)"),
        ("wal_compaction_passes", m.wal_compaction_passes, Counter, "Compaction passes of the WAL's writer (rewriting sparse old segments, freeing dead ones)"),
        ("wal_compaction_bytes_rewritten", m.wal_compaction_bytes_rewritten, Counter, "Bytes of live records WAL compaction passes copied from sparse segments to the log's head"),
        ("wal_compaction_segments_freed", m.wal_compaction_segments_freed, Counter, "WAL segments compaction passes freed (deleted or recycled)"),
        ("wal_segments_created", m.wal_segments_created, Counter, "WAL segments created by zero-filling a new file (each writes the segment's size to the disk)"),
        ("wal_segments_recycled", m.wal_segments_recycled, Counter, "WAL segments recycled from freed ones (no zero-filling)"),
        ("applied_entries", m.applied_entries, Counter, "Entries applied by the state machines"),
        ("applied_inline", m.applied_inline, Counter, "Committed batches a worker applied on its own thread instead of its apply thread"),
        ("applied_inline_slow", m.applied_inline_slow, Counter, "Batches applied on a worker that took longer than inline_apply_slow (each sends its group's batches to the apply thread for a minute)"),
        ("apply_lag", m.apply_lag, Gauge, "Apply lag, in entries committed and handed to the apply threads but not yet applied, over all workers"),
        ("apply_lag_bytes", m.apply_lag_bytes, Gauge, "The bytes of those entries (bounded per worker by max_apply_backlog_bytes)"),
        ("uncommitted_bytes", m.uncommitted_bytes, Gauge, "Proposal bytes appended by leaders here and not handed out for apply (bounded per worker by max_worker_uncommitted_bytes)"),
        ("reads_held", m.reads_held, Gauge, "Reads held here waiting for their barrier or for confirmation (bounded per worker by max_worker_pending_reads)"),
        ("elections", m.elections, Counter, "Campaigns started by replicas here (PreVote rounds included)"),
        ("leaders_elected", m.leaders_elected, Counter, "Times a replica here became leader"),
        ("transfers_started", m.transfers_started, Counter, "Leadership transfers started by leaders here"),
        ("transfers_aborted", m.transfers_aborted, Counter, "Leadership transfers aborted (timeout, target left, superseded)"),
        ("membership_changes", m.membership_changes, Counter, "Membership changes applied by replicas here"),
        ("mailbox_depth", m.mailbox_depth, Gauge, "Commands queued in the workers' mailboxes"),
        ("net_queue_depth", m.net_queue_depth, Gauge, "Batches queued for the network thread"),
        ("compactions", m.compactions, Counter, "Snapshots taken and logs compacted"),
        ("forced_compactions", m.forced_compactions, Counter, "Snapshots asked because the group pinned old WAL segments"),
        ("snapshots_sent", m.snapshots_sent, Counter, "Snapshot streams started to followers"),
        ("snapshots_installed", m.snapshots_installed, Counter, "Snapshots received and installed"),
        ("refused_busy", m.refused_busy, Counter, "Proposals refused with Busy, all reasons (the sum of the refused_busy_*)"),
        ("refused_busy_mailbox", m.refused_busy_mailbox, Counter, "Proposals refused with Busy because the worker's mailbox was full"),
        ("refused_busy_group_uncommitted", m.refused_busy_group_uncommitted, Counter, "Proposals refused with Busy because of the group's unapplied bytes"),
        ("refused_busy_worker_pending", m.refused_busy_worker_pending, Counter, "Proposals refused with Busy because of the worker's pending proposals"),
        ("refused_busy_apply_backlog", m.refused_busy_apply_backlog, Counter, "Proposals refused with Busy because of the worker's apply backlog"),
        ("refused_busy_wal_pending", m.refused_busy_wal_pending, Counter, "Proposals refused with Busy because of the worker's pending WAL bytes"),
        ("refused_busy_worker_uncommitted", m.refused_busy_worker_uncommitted, Counter, "Proposals refused with Busy because of the uncommitted bytes of all the worker's groups"),
        ("reads_refused_busy", m.reads_refused_busy, Counter, "Reads refused with Busy because the group held max_pending_reads or the worker max_worker_pending_reads"),
        ("refused_not_leader", m.refused_not_leader, Counter, "Proposals refused with NotLeader or TransferInProgress"),
        ("replicas_created", m.replicas_created, Counter, "Replicas created on a leader's first message"),
        ("replicas_destroyed", m.replicas_destroyed, Counter, "Replicas destroyed after their removal (applied, or proven by a member's tombstone message)"),
        ("tombstones_sent", m.tombstones_sent, Counter, "Tombstone messages sent to replicas that a configuration here removed"),
        ("gc_probes_sent", m.gc_probes_sent, Counter, "Stale-peer probes sent by replicas that send nothing else (quiesced followers, learners), asking the other members whether they still belong to their group"),
        ("tombstones_resent", m.tombstones_resent, Counter, "Tombstones leaders re-sent to removed replicas that had not confirmed their destruction yet (every gc_interval_elections)"),
        ("removals_confirmed", m.removals_confirmed, Counter, "Removal records forgotten: a removed replica's node confirmed its destruction and the leader proposed ChangeKind::Forget"),
        ("effects_create_group", m.effects_create_group, Counter, "Groups created by Effect::CreateGroup"),
        ("split_children_created", m.split_children_created, Counter, "Split children founded here from an Effect::Split (durable before the parent applied on)"),
        ("split_children_kept", m.split_children_kept, Counter, "Split effects that found the child's replica already here and kept it (never overwritten, never created twice)"),
        ("messages_dropped", m.messages_dropped, Counter, "Network messages dropped because a mailbox was full"),
        ("raft_ticks", m.raft_ticks, Counter, "Raft ticks given to groups so far; quiesced groups get none, so with every group quiesced this stops growing"),
        ("worker_ticks", m.worker_ticks, Counter, "Worker ticks so far (summed over workers)"),
        ("worker_tick_wakes", m.worker_tick_wakes, Counter, "Worker clock wake-ups so far (summed over workers); an idle worker counts idle_wake_ticks ticks per wake-up"),
        ("quiesced_groups", m.quiesced_groups, Gauge, "Groups quiesced now"),
        ("liveness_wakes", m.liveness_wakes, Counter, "Quiesced groups woken because their leader's node went down or restarted (at most max_wakes_per_tick per worker tick)"),
        ("net_batches", m.net_batches, Counter, "Message batches sent (one frame per destination node per worker turn; heartbeats of all groups to one node share a batch)"),
        ("net_direct_sends", m.net_direct_sends, Counter, "Message batches a worker sent through the transport itself, not through the network thread"),
        ("acks_sent_when_durable", m.acks_sent_when_durable, Counter, "Append acknowledgements sent by the thread that made their WAL write durable, not by the worker after"),
        ("net_direct_receives", m.net_direct_receives, Counter, "Received batches the transport's threads handed straight to the workers"),
        ("dropped_wrong_sender", m.dropped_wrong_sender, Counter, "Messages dropped because their sender replica lives on another node than the one they came from (by the group's applied configuration, or the node it was first learnt from), or names an unknown replica while the group's table of learned peers is full (max_learned_peers)"),
        ("creates_refused", m.creates_refused, Counter, "Messages for groups not hosted here that would have created a replica (or recorded a removal) but were refused: by the CreatePolicy, by the per-tick caps (max_creates_per_tick, max_creates_per_node_per_tick) or by the caps on unconfirmed replicas"),
        ("unconfirmed_replicas", m.unconfirmed_replicas, Gauge, "Replicas created from messages that have not yet applied a configuration holding themselves, over all workers (bounded by max_unconfirmed_replicas per worker)"),
        ("unconfirmed_dropped", m.unconfirmed_dropped, Counter, "Unconfirmed replicas dropped: expired (unconfirmed_replica_ticks) or replaced by the group's founding create_group"),
        ("tombstones_unproven", m.tombstones_unproven, Counter, "Tombstones received from a node that hosts no voter of the named replica's applied configuration: not believed; the replica asked its members instead (a stale-peer probe)"),
        ("snapshot_streams_refused", m.snapshot_streams_refused, Counter, "Received snapshot streams refused because a chunk would end past max_snapshot_bytes (the partial file is deleted, the stream's further chunks dropped)"),
        ("snapshot_streams_failed", m.snapshot_streams_failed, Counter, "Received snapshot streams dropped on a write error, or after their leader went silent (their partial file is deleted)"),
        ("snapshot_chunks_dropped", m.snapshot_chunks_dropped, Counter, "Received snapshot chunks not written: held already, past a gap, of a refused stream, stale, or the snapshot I/O queue was full (the stream resumes)"),
        ("snapshot_progress_sent", m.snapshot_progress_sent, Counter, "Reports of a received snapshot's durable offset sent to its leader"),
        ("snapshot_progress_received", m.snapshot_progress_received, Counter, "Reports of a received snapshot's durable offset received from followers"),
        ("snapshot_streams_resumed", m.snapshot_streams_resumed, Counter, "Snapshot streams to followers started past offset 0 (where the follower reported it got)"),
        ("snapshot_resumed_bytes", m.snapshot_resumed_bytes, Counter, "Bytes resumed snapshot streams did not send again"),
        ("net_cert_not_after_unix", m.net_cert_not_after_unix, Gauge, "When this node's transport certificate expires, in seconds since the Unix epoch (0: unknown, or a transport without certificates)"),
        ("net_peer_cert_not_after_min_unix", m.net_peer_cert_not_after_min_unix, Gauge, "The earliest certificate expiry among the peers connected now, in seconds since the Unix epoch (0: none connected, or unknown)"),
        ("net_handshakes_refused", m.net_handshakes_refused, Counter, "Inbound connection attempts the transport refused at its handshake caps"),
        ("net_policy_refused", m.net_policy_refused, Counter, "Handshakes and connections the transport refused by its certificate policy (key usage, node not on the allow-list)"),
        ("load_proposals_per_sec", m.load_proposals_per_sec, Gauge, "Proposals per second appended by the replicas led here (exponentially weighted)"),
        ("load_write_bytes_per_sec", m.load_write_bytes_per_sec, Gauge, "Payload bytes per second of committed entries applied by this node's replicas (exponentially weighted)"),
        ("load_reads_per_sec", m.load_reads_per_sec, Gauge, "Reads per second served by this node's replicas (exponentially weighted)"),
        ("load_apply_micros_per_sec", m.load_apply_micros_per_sec, Gauge, "Microseconds of state machine apply per second on this node (1,000,000 is one apply thread fully busy)"),
    ]
}

/// The name of a field's series.
fn series_name(field: &str, kind: Kind) -> String {
    match kind {
        Counter if field.ends_with("_total") => format!("flotilla_engine_{field}"),
        Counter => format!("flotilla_engine_{field}_total"),
        Gauge => format!("flotilla_engine_{field}"),
    }
}

/// One family holding one unlabelled sample.
fn single(name: String, help: &str, kind: Kind, value: f64) -> MetricFamily {
    let mut m = proto::Metric::default();
    let field_type = match kind {
        Counter => {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
            MetricType::COUNTER
        }
        Gauge => {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
            MetricType::GAUGE
        }
    };
    let mut f = MetricFamily::default();
    f.set_name(name);
    f.set_help(help.to_string());
    f.set_field_type(field_type);
    f.set_metric(vec![m].into());
    f
}

/// Smallest bucket bound exported: 2^10 ns (about 1 µs).
const FIRST_BOUND: usize = 10;
/// Largest finite bucket bound exported: 2^36 ns (about 69 s); longer ones count in +Inf.
const LAST_BOUND: usize = 36;

/// A histogram family (seconds) from a snapshot of power-of-two nanosecond buckets:
/// bound `2^i` ns holds the count of durations shorter than it.
pub fn histogram_family(name: &str, help: &str, s: &LatencySnapshot) -> MetricFamily {
    let buckets = (FIRST_BOUND..=LAST_BOUND.min(LATENCY_BUCKETS - 2))
        .map(|i| {
            let mut b = proto::Bucket::default();
            b.set_upper_bound(LatencySnapshot::upper_bound_nanos(i) as f64 / 1e9);
            b.set_cumulative_count(s.count_below(i));
            b
        })
        .collect();
    let mut h = proto::Histogram::default();
    // The count from the buckets themselves, so +Inf is never below a finite bucket even
    // when a recording raced the snapshot.
    h.set_sample_count(s.buckets.iter().sum());
    h.set_sample_sum(s.sum_nanos as f64 / 1e9);
    h.set_bucket(buckets);
    let mut m = proto::Metric::default();
    m.set_histogram(h);
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(MetricType::HISTOGRAM);
    f.set_metric(vec![m].into());
    f
}

/// The engine's metric families.
pub fn families(m: &Metrics, h: &LatencyHistograms) -> Vec<MetricFamily> {
    let mut out: Vec<MetricFamily> = fields(m)
        .into_iter()
        .map(|(field, v, kind, help)| single(series_name(field, kind), help, kind, v as f64))
        .collect();
    out.push(histogram_family(
        "flotilla_engine_wal_sync_duration_seconds",
        "WAL group-commit write+sync calls (fsync latency)",
        &h.wal_sync,
    ));
    out.push(histogram_family(
        "flotilla_engine_wal_compaction_duration_seconds",
        "WAL compaction passes (no group-commit write is made while one runs)",
        &h.wal_compaction,
    ));
    out.push(histogram_family(
        "flotilla_engine_apply_duration_seconds",
        "State machine applies, one per entry applied",
        &h.apply,
    ));
    out
}

/// Per-group load of the groups led here ([`flotilla_engine::api::Engine::group_loads`]):
/// one gauge family per rate, labelled by group, exponentially weighted as the engine
/// measures them.
pub fn group_load_families(loads: &[(u64, GroupLoad)]) -> Vec<MetricFamily> {
    type Pick = fn(&GroupLoad) -> f64;
    let rates: [(&str, &str, Pick); 4] = [
        ("flotilla_group_proposals_per_second", "Proposals per second, by group led here", |l| {
            l.proposals_per_sec
        }),
        (
            "flotilla_group_write_bytes_per_second",
            "Payload bytes per second applied, by group led here",
            |l| l.write_bytes_per_sec,
        ),
        ("flotilla_group_reads_per_second", "Reads per second served, by group led here", |l| {
            l.reads_per_sec
        }),
        (
            "flotilla_group_apply_seconds_per_second",
            "Seconds of state machine apply per second, by group led here",
            |l| l.apply_secs_per_sec,
        ),
    ];
    if loads.is_empty() {
        return Vec::new();
    }
    rates
        .into_iter()
        .map(|(name, help, pick)| {
            let metrics = loads
                .iter()
                .map(|(group, load)| {
                    let mut label = proto::LabelPair::default();
                    label.set_name("group".into());
                    label.set_value(group.to_string());
                    let mut g = proto::Gauge::default();
                    g.set_value(pick(load));
                    let mut m = proto::Metric::default();
                    m.set_label(vec![label].into());
                    m.set_gauge(g);
                    m
                })
                .collect::<Vec<_>>();
            let mut f = MetricFamily::default();
            f.set_name(name.to_string());
            f.set_help(help.to_string());
            f.set_field_type(MetricType::GAUGE);
            f.set_metric(metrics.into());
            f
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_loads_are_gauges_labelled_by_group() {
        let mut load = GroupLoad::default();
        (load.proposals_per_sec, load.reads_per_sec) = (200.5, 3.0);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&group_load_families(&[(1000, load), (1003, GroupLoad::default())]))
            .unwrap();
        assert!(text.contains("# TYPE flotilla_group_proposals_per_second gauge"), "{text}");
        assert!(text.contains("flotilla_group_proposals_per_second{group=\"1000\"} 200.5"), "{text}");
        assert!(text.contains("flotilla_group_reads_per_second{group=\"1003\"} 0"), "{text}");
        assert!(group_load_families(&[]).is_empty());
    }

    #[test]
    fn every_engine_metric_is_exported_once() {
        let m = Metrics::default();
        // The engine's Debug lists every field: a new field not exported here fails this.
        let debug = format!("{m:?}");
        let listed: Vec<&str> = fields(&m).iter().map(|f| f.0).collect();
        assert_eq!(debug.matches(": ").count(), listed.len(), "{debug}");
        for f in &listed {
            assert!(debug.contains(&format!("{f}: ")), "{f}");
        }
        let mut names: Vec<String> =
            families(&m, &LatencyHistograms::default()).iter().map(|f| f.get_name().to_string()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a name is used twice");
        assert!(names.contains(&"flotilla_engine_wal_syncs_total".to_string()));
        assert!(names.contains(&"flotilla_engine_wal_sync_nanos_total".to_string()));
        assert!(names.contains(&"flotilla_engine_apply_lag".to_string()));
    }

    #[test]
    fn a_snapshot_becomes_a_cumulative_histogram_in_seconds() {
        let h = flotilla_engine::api::LatencyHistogram::default();
        h.record_nanos(500); // below the first exported bound (1024 ns)
        h.record_nanos(3_000_000); // 3 ms: under 2^22 ns
        h.record_nanos(1 << 40); // past the last finite bound
        let f = histogram_family("x_seconds", "x", &h.snapshot());
        let hist = f.get_metric()[0].get_histogram();
        assert_eq!(hist.get_sample_count(), 3);
        let b = hist.get_bucket();
        assert_eq!(b[0].get_upper_bound(), 1024e-9);
        assert_eq!(b[0].get_cumulative_count(), 1);
        let at = |ns: u64| b.iter().find(|b| b.get_upper_bound() == ns as f64 / 1e9).unwrap();
        assert_eq!(at(1 << 21).get_cumulative_count(), 1);
        assert_eq!(at(1 << 22).get_cumulative_count(), 2);
        assert_eq!(b.last().unwrap().get_cumulative_count(), 2);
        let text = prometheus::TextEncoder::new().encode_to_string(&[f]).unwrap();
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("x_seconds_count 3"), "{text}");
    }
}
