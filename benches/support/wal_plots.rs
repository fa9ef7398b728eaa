//! The WAL bench's two pictures (benches/wal.rs, summary pass), drawn with
//! [`super::plot`]: per-batch write latency by percentile of every one-writer variant
//! (flotilla-wal beside raft-engine and the raw limits), and entries/s against writers
//! (batches in flight) with one line per system. It only reshapes the summary's figures;
//! it never measures.

use super::plot;

/// One variant of the summary: its figures over the whole interleaved pass.
pub struct Row<'a> {
    /// The variant's name, ending in " x<writers>" (e.g. "raft-engine 0.4 x2").
    pub name: &'a str,
    /// Writer threads, each with one batch in flight.
    pub writers: usize,
    /// Entries per second over the pass.
    pub entries_per_s: f64,
    /// Each batch's write + sync latency, microseconds, in any order.
    pub lat_us: Vec<u32>,
}

/// The system a variant measures: its name without the " x<writers>" suffix.
fn system(name: &str) -> &str {
    name.rsplit_once(" x").map_or(name, |(s, _)| s)
}

/// Writes `wal-latency.svg` and `wal-throughput.svg` into [`plot::out_dir`] and prints
/// their paths (or why not: a picture is never worth failing the bench).
pub fn write(mut rows: Vec<Row<'_>>, bytes_per_batch: usize) {
    let dir = match plot::out_dir() {
        Ok(d) => d,
        Err(e) => return eprintln!("plots not written: {e}"),
    };
    for r in &mut rows {
        r.lat_us.sort_unstable();
    }
    let reference = |name: &str| !name.starts_with("flotilla");
    let lat: Vec<plot::LatencySeries> = rows
        .iter()
        .filter(|r| r.writers == 1)
        .map(|r| plot::LatencySeries {
            name: system(r.name),
            sorted_us: &r.lat_us,
            reference: reference(r.name),
        })
        .collect();
    let mut systems: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for r in &rows {
        let point = (r.writers as f64, r.entries_per_s);
        match systems.iter_mut().find(|(s, _)| *s == system(r.name)) {
            Some((_, v)) => v.push(point),
            None => systems.push((system(r.name), vec![point])),
        }
    }
    let tput: Vec<plot::ThroughputSeries> = systems
        .iter()
        .map(|(s, v)| plot::ThroughputSeries { name: s, points: v, reference: reference(s) })
        .collect();
    let files = [
        (
            "wal-latency.svg",
            plot::latency_svg(
                &dir.join("wal-latency.svg"),
                &format!("WAL batch latency, one writer ({bytes_per_batch} B batches, fsync each)"),
                &lat,
            ),
        ),
        (
            "wal-throughput.svg",
            plot::throughput_svg(
                &dir.join("wal-throughput.svg"),
                "WAL throughput against writers (1,000 groups, 256 x 128 B per batch)",
                "writers, one batch in flight each (log scale)",
                "entries/s",
                &tput,
            ),
        ),
    ];
    for (f, res) in files {
        match res {
            Ok(()) => println!("plot: {}", dir.join(f).display()),
            Err(e) => eprintln!("plot {f} not written: {e}"),
        }
    }
}
