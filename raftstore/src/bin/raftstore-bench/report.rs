//! The side-by-side table, the ratios and the targets of issue 3. Pure: it only formats
//! [`Figures`], so the rules for "met" are unit-tested here.

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::LoadSummary;
use crate::workload::{Figures, WatchSummary, READ_CLIENTS, VALUE_SIZE, WATCHERS};

/// One line of the targets list.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// What is required.
    pub what: &'static str,
    /// The figure, as shown.
    pub figure: String,
    /// Whether it is met; `None` when a side was not measured.
    pub met: Option<bool>,
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn mib(kib: &[u64]) -> Option<f64> {
    (!kib.is_empty()).then(|| kib.iter().sum::<u64>() as f64 / kib.len() as f64 / 1024.0)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn median(ds: &[Duration]) -> Option<Duration> {
    let mut v = ds.to_vec();
    v.sort();
    v.get(v.len().checked_sub(1)? / 2).copied()
}

struct Row {
    metric: String,
    ours: String,
    theirs: String,
    ratio: String,
}

fn row(
    metric: impl Into<String>,
    ours: Option<String>,
    theirs: Option<String>,
    r: Option<f64>,
) -> Row {
    let dash = || "-".to_string();
    Row {
        metric: metric.into(),
        ours: ours.unwrap_or_else(dash),
        theirs: theirs.unwrap_or_else(dash),
        ratio: r.map_or_else(dash, |r| format!("{r:.2}x")),
    }
}

fn load_rows(
    rows: &mut Vec<Row>,
    name: &str,
    ours: Option<&LoadSummary>,
    theirs: Option<&LoadSummary>,
) {
    let ops = |s: Option<&LoadSummary>| s.map(|s| s.ops_per_sec);
    let errors = |s: Option<&LoadSummary>| match s {
        Some(s) if s.errors > 0 => format!(" ({} errors)", s.errors),
        _ => String::new(),
    };
    rows.push(row(
        format!("{name}: ops/s"),
        ours.map(|s| format!("{:.0}{}", s.ops_per_sec, errors(ours))),
        theirs.map(|s| format!("{:.0}{}", s.ops_per_sec, errors(theirs))),
        ratio(ops(ours), ops(theirs)),
    ));
    let p = |s: &LoadSummary| format!("{} / {}", ms(s.p50), ms(s.p99));
    rows.push(row(
        format!("{name}: p50 / p99 ms"),
        ours.map(p),
        theirs.map(p),
        ratio(
            ours.map(|s| s.p99.as_secs_f64()),
            theirs.map(|s| s.p99.as_secs_f64()),
        ),
    ));
}

fn watch_cell(w: &WatchSummary) -> String {
    let lost = if w.delivered < w.expected {
        format!(" ({} of {} delivered)", w.delivered, w.expected)
    } else {
        String::new()
    };
    format!("{} / {}{lost}", ms(w.p50), ms(w.p99))
}

fn failover_cell(f: &[Duration]) -> Option<String> {
    let med = median(f)?;
    let max = f.iter().max().copied().unwrap_or(med);
    Some(format!(
        "{:.2} (max {:.2})",
        med.as_secs_f64(),
        max.as_secs_f64()
    ))
}

/// The table rows, both systems side by side (`-` where a side was not measured).
fn rows(ours: Option<&Figures>, theirs: Option<&Figures>) -> Vec<Row> {
    let mut rows = Vec::new();
    let clients: Vec<usize> = ours
        .or(theirs)
        .map_or_else(Vec::new, |f| f.put.iter().map(|(c, _)| *c).collect());
    for c in clients {
        let find = |f: Option<&Figures>| {
            f.and_then(|f| f.put.iter().find(|(n, _)| *n == c).map(|(_, s)| s.clone()))
        };
        let (o, t) = (find(ours), find(theirs));
        load_rows(
            &mut rows,
            &format!("put, {c} clients"),
            o.as_ref(),
            t.as_ref(),
        );
    }
    load_rows(
        &mut rows,
        &format!("linearizable get, {READ_CLIENTS} clients"),
        ours.and_then(|f| f.get.as_ref()),
        theirs.and_then(|f| f.get.as_ref()),
    );
    let txn = |f: Option<&Figures>| f.and_then(|f| f.txn.as_ref()).map(|(s, _)| s.clone());
    load_rows(
        &mut rows,
        &format!("txn CAS, {READ_CLIENTS} clients"),
        txn(ours).as_ref(),
        txn(theirs).as_ref(),
    );
    let swapped = |f: Option<&Figures>| {
        f.and_then(|f| f.txn.as_ref())
            .map(|(_, s)| format!("{:.1}%", s * 100.0))
    };
    rows.push(row(
        "txn CAS: swapped",
        swapped(ours),
        swapped(theirs),
        None,
    ));
    fn watch(f: Option<&Figures>) -> Option<&WatchSummary> {
        f.and_then(|f| f.watch.as_ref())
    }
    rows.push(row(
        format!("watch delivery, {WATCHERS} watchers: p50 / p99 ms"),
        watch(ours).map(watch_cell),
        watch(theirs).map(watch_cell),
        ratio(
            watch(ours).map(|w| w.p99.as_secs_f64()),
            watch(theirs).map(|w| w.p99.as_secs_f64()),
        ),
    ));
    let fo = |f: Option<&Figures>| f.map(|f| f.failover.as_slice()).and_then(median);
    rows.push(row(
        "leader fail-over: s, median (max)",
        ours.and_then(|f| failover_cell(&f.failover)),
        theirs.and_then(|f| failover_cell(&f.failover)),
        ratio(
            fo(ours).map(|d| d.as_secs_f64()),
            fo(theirs).map(|d| d.as_secs_f64()),
        ),
    ));
    let rss = |f: Option<&Figures>, loaded: bool| {
        f.and_then(|f| mib(if loaded { &f.rss_loaded } else { &f.rss_idle }))
    };
    for (label, loaded) in [
        ("RSS idle: MiB per member", false),
        ("RSS after load: MiB per member", true),
    ] {
        rows.push(row(
            label,
            rss(ours, loaded).map(|m| format!("{m:.1}")),
            rss(theirs, loaded).map(|m| format!("{m:.1}")),
            ratio(rss(ours, loaded), rss(theirs, loaded)),
        ));
    }
    rows
}

/// Issue 3's targets, judged on this run.
pub fn targets(ours: Option<&Figures>, theirs: Option<&Figures>) -> Vec<Target> {
    let put64 = |f: Option<&Figures>| {
        f.and_then(|f| f.put.iter().find(|(c, _)| *c == 64).map(|(_, s)| s.clone()))
    };
    let (o, t) = (put64(ours), put64(theirs));
    let mut out = Vec::new();
    let tput = ratio(
        o.as_ref().map(|s| s.ops_per_sec),
        t.as_ref().map(|s| s.ops_per_sec),
    );
    out.push(Target {
        what: "put throughput, 64 clients >= 2x etcd",
        figure: tput.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
        met: tput.map(|r| r >= 2.0),
    });
    let p99 = ratio(
        o.as_ref().map(|s| s.p99.as_secs_f64()),
        t.as_ref().map(|s| s.p99.as_secs_f64()),
    );
    out.push(Target {
        what: "put p99, 64 clients <= etcd's",
        figure: p99.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
        met: p99.map(|r| r <= 1.0),
    });
    let get = ratio(
        ours.and_then(|f| f.get.as_ref()).map(|s| s.ops_per_sec),
        theirs.and_then(|f| f.get.as_ref()).map(|s| s.ops_per_sec),
    );
    out.push(Target {
        what: "linearizable get >= 1.5x etcd",
        figure: get.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
        met: get.map(|r| r >= 1.5),
    });
    let worst = ours.and_then(|f| f.failover.iter().max().copied());
    out.push(Target {
        what: "fail-over < 1 s (every kill)",
        figure: worst.map_or_else(|| "-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
        met: worst.map(|d| d < Duration::from_secs(1)),
    });
    let idle = ratio(
        ours.and_then(|f| mib(&f.rss_idle)),
        theirs.and_then(|f| mib(&f.rss_idle)),
    );
    out.push(Target {
        what: "idle RSS per member <= 0.5x etcd",
        figure: idle.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
        met: idle.map(|r| r <= 0.5),
    });
    out
}

/// The whole report: header, table, targets.
pub fn render(
    ours: Option<&Figures>,
    theirs: Option<&Figures>,
    etcd_version: &str,
    phase: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "raftstore-bench: 3 members each on 127.0.0.1, {VALUE_SIZE}-byte values, {:.0} s per load phase",
        phase.as_secs_f64()
    );
    let rows = rows(ours, theirs);
    let etcd = format!("etcd {etcd_version}");
    let w0 = rows
        .iter()
        .map(|r| r.metric.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let w1 = rows.iter().map(|r| r.ours.len()).max().unwrap_or(0).max(9);
    let w2 = rows
        .iter()
        .map(|r| r.theirs.len())
        .max()
        .unwrap_or(0)
        .max(etcd.len());
    let _ = writeln!(
        out,
        "{:w0$}  {:>w1$}  {:>w2$}  {:>9}",
        "metric", "raftstore", etcd, "ratio"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:w0$}  {:>w1$}  {:>w2$}  {:>9}",
            r.metric, r.ours, r.theirs, r.ratio
        );
    }
    let _ = writeln!(out, "\ntargets (raftstore vs etcd, this run):");
    for t in targets(ours, theirs) {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(out, "  {:40} {:>10}  {verdict}", t.what, t.figure);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(ops: f64, p99_ms: u64) -> LoadSummary {
        LoadSummary {
            ops_per_sec: ops,
            p50: Duration::from_millis(1),
            p99: Duration::from_millis(p99_ms),
            errors: 0,
        }
    }

    fn figures(put64: f64, p99: u64, get: f64, failover_ms: u64, idle_kib: u64) -> Figures {
        Figures {
            put: vec![(64, load(put64, p99))],
            get: Some(load(get, 1)),
            failover: vec![Duration::from_millis(failover_ms)],
            rss_idle: vec![idle_kib; 3],
            ..Figures::default()
        }
    }

    #[test]
    fn targets_are_judged_as_ratios_against_etcd() {
        let ours = figures(2000.0, 10, 3000.0, 800, 10_000);
        let theirs = figures(1000.0, 12, 2000.0, 1500, 40_000);
        let met: Vec<_> = targets(Some(&ours), Some(&theirs))
            .iter()
            .map(|t| t.met)
            .collect();
        assert_eq!(
            met,
            vec![Some(true), Some(true), Some(true), Some(true), Some(true)]
        );
        let slow = figures(1900.0, 13, 2900.0, 1000, 30_000);
        let met: Vec<_> = targets(Some(&slow), Some(&theirs))
            .iter()
            .map(|t| t.met)
            .collect();
        assert_eq!(
            met,
            vec![
                Some(false),
                Some(false),
                Some(false),
                Some(false),
                Some(false)
            ]
        );
    }

    #[test]
    fn a_side_that_was_not_measured_shows_dashes_and_no_verdict() {
        let theirs = figures(1000.0, 12, 2000.0, 1500, 40_000);
        let text = render(None, Some(&theirs), "3.4", Duration::from_secs(1));
        assert!(text.contains("not measured"));
        assert!(targets(None, Some(&theirs)).iter().all(|t| t.met.is_none()));
    }
}
