//! The benches' plotting module (benches/support/plot.rs): it writes well-formed SVG with
//! one drawn line and one legend entry per non-empty series, leaves empty series out, and
//! says "no data" instead of failing when nothing was measured.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../benches/support/plot.rs"]
mod plot;

use plot::{LatencySeries, ThroughputSeries};

/// Checks that every tag is closed in order (the SVG plotters writes has no comments,
/// CDATA or doctype), and returns the element names seen.
fn well_formed(svg: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("unterminated tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched </{name}>");
        } else {
            let name = tag.split_whitespace().next().unwrap().trim_end_matches('/').to_string();
            seen.push(name.clone());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(seen.first().map(String::as_str), Some("svg"));
    seen
}

fn texts(svg: &str) -> Vec<&str> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| t.split_once('>'))
        .map(|(_, t)| t.split('<').next().unwrap().trim())
        .collect()
}

/// The stroke colours of the drawn polylines, with how many polylines each has.
fn polyline_colours(svg: &str) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for p in svg.split("<polyline").skip(1) {
        let tag = p.split('>').next().unwrap();
        if let Some(c) = tag.split("stroke=\"").nth(1).and_then(|s| s.split('"').next()) {
            *m.entry(c.to_string()).or_insert(0) += 1;
        }
    }
    m
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn latency_plot_has_every_series_and_stays_small() {
    let d = dir();
    let path = d.path().join("lat.svg");
    let a: Vec<u32> = (1..=100_000u32).map(|i| 500 + i / 10).collect();
    let b: Vec<u32> = (1..=2_000u32).map(|i| 100 + i).collect();
    let c: Vec<u32> = vec![7_000; 10];
    let series = [
        LatencySeries { name: "flotilla 16 B x 4096", sorted_us: &a, reference: false },
        LatencySeries { name: "raw pwrite+fdatasync", sorted_us: &b, reference: true },
        LatencySeries { name: "flotilla 256 B x 4096", sorted_us: &c, reference: false },
        LatencySeries { name: "empty one", sorted_us: &[], reference: false },
    ];
    plot::latency_svg(&path, "commit latency", &series).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    well_formed(&svg);
    let t = texts(&svg);
    assert!(t.contains(&"commit latency"), "{t:?}");
    assert!(t.contains(&"flotilla 16 B x 4096"), "{t:?}");
    assert!(t.contains(&"raw pwrite+fdatasync (reference)"), "{t:?}");
    assert!(t.contains(&"flotilla 256 B x 4096"), "{t:?}");
    assert!(!t.iter().any(|s| s.contains("empty one")), "an empty series is left out: {t:?}");
    // The nines axis reaches 99.99% (100,000 samples) and starts at 0%.
    assert!(t.contains(&"99.99%") && t.contains(&"0%"), "{t:?}");
    // Three drawn series, three colours: solid lines are one polyline each, the dashed
    // reference many; each colour also has its legend mark.
    let colours = polyline_colours(&svg);
    let series_colours: Vec<_> = colours.iter().filter(|(c, _)| c.as_str() != "#000000").collect();
    assert_eq!(series_colours.len(), 3, "{colours:?}");
    assert!(series_colours.iter().any(|(_, &n)| n > 10), "the reference is dashed: {colours:?}");
    assert!(svg.len() < 64 * 1024, "{} bytes", svg.len());
}

#[test]
fn throughput_plot_marks_every_point_of_every_series() {
    let d = dir();
    let path = d.path().join("tput.svg");
    let f = [(4.0, 3_000.0), (64.0, 30_000.0), (4096.0, 300_000.0), (256.0, 60_000.0)];
    let g = [(4096.0, 180_000.0)];
    let r = [(4.0, 900_000.0), (4096.0, 950_000.0), (f64::NAN, 1.0), (0.0, 5.0)];
    let series = [
        ThroughputSeries { name: "flotilla 16 B", points: &f, reference: false },
        ThroughputSeries { name: "flotilla 256 B", points: &g, reference: false },
        ThroughputSeries { name: "raw fsync limit", points: &r, reference: true },
    ];
    plot::throughput_svg(&path, "throughput", "in flight", "writes/s", &series).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let tags = well_formed(&svg);
    let t = texts(&svg);
    for name in [
        "throughput",
        "in flight",
        "writes/s",
        "flotilla 16 B",
        "flotilla 256 B",
        "raw fsync limit (reference)",
    ] {
        assert!(t.contains(&name), "{name} missing from {t:?}");
    }
    // One marker per usable point (the NaN and zero in-flight points are dropped).
    assert_eq!(tags.iter().filter(|t| t.as_str() == "circle").count(), 4 + 1 + 2);
    assert!(svg.len() < 64 * 1024, "{} bytes", svg.len());
}

#[test]
fn nothing_measured_gives_a_no_data_picture() {
    let d = dir();
    let p1 = d.path().join("a.svg");
    let p2 = d.path().join("b.svg");
    plot::latency_svg(&p1, "lat", &[LatencySeries { name: "x", sorted_us: &[], reference: false }]).unwrap();
    plot::throughput_svg(&p2, "tput", "n", "ops/s", &[]).unwrap();
    for (p, title) in [(p1, "lat: no data"), (p2, "tput: no data")] {
        let svg = std::fs::read_to_string(p).unwrap();
        well_formed(&svg);
        assert_eq!(texts(&svg), vec![title]);
    }
}

#[test]
fn out_dir_honours_the_override() {
    let d = dir();
    let want = d.path().join("plots");
    std::env::set_var("FLOTILLA_PLOTS_DIR", &want);
    let got = plot::out_dir().unwrap();
    std::env::remove_var("FLOTILLA_PLOTS_DIR");
    assert_eq!(got, want);
    assert!(want.is_dir());
}
