//! One self-contained HTML page of a record set: a timeline per VM
//! (writes per time bucket as bars, marks, snapshots and checkpoints on
//! it, semantic changes per table), storage growth with the forecast,
//! dedup, and the last drills. Charts are inline SVG, the style inline;
//! nothing is fetched. Everything from a guest or a log (VM ids, mark
//! names, table names) is HTML-escaped.
//!
//! Counts carry `data-*` attributes (`data-vm`, `data-count`) so that a
//! test (or a script) can read them off the rendered page; a small inline
//! script sets `data-rendered="yes"` on the root once every chart has a
//! size, which a headless browser's DOM dump shows.
use std::fmt::Write;

use crate::forecast::{Estimate, Forecast};
use crate::timeline::{Bucket, PointEvent, Timeline, VmTimeline};

/// What the page shows besides the timeline.
pub struct ReportInput<'a> {
    pub timeline: &'a Timeline,
    pub forecast: Option<&'a Forecast>,
    /// Why there is no forecast, when there is none.
    pub forecast_note: Option<String>,
    pub drills: &'a [serde_json::Value],
    /// Bytes of the store's files, when known.
    pub store_bytes: Option<u64>,
    /// When the page was made, ns since the Unix epoch.
    pub generated_ns: u64,
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 110.0;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `n` bytes for people: 1.5 KiB, 3.0 GiB.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn time(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn x_of(t: &Timeline, ts_ns: u64) -> f64 {
    let span = (t.bucket_ns * t.vms[0].buckets.len() as u64).max(1) as f64;
    WIDTH * (ts_ns.saturating_sub(t.t0_ns)) as f64 / span
}

fn vm_chart(t: &Timeline, vm: &VmTimeline, out: &mut String) {
    let n = vm.buckets.len().max(1) as f64;
    let w = WIDTH / n;
    let max = vm
        .buckets
        .iter()
        .map(|b| b.written_bytes)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {h}" width="{WIDTH}" height="{h}" role="img" aria-label="timeline of {vm}">"#,
        h = HEIGHT + 20.0,
        vm = escape(&vm.vm)
    );
    for (i, b) in vm.buckets.iter().enumerate() {
        if b.written_bytes == 0 {
            continue;
        }
        let h = (HEIGHT - 20.0) * b.written_bytes as f64 / max;
        let _ = write!(
            out,
            r#"<rect class="w" x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}"><title>{} writes, {}, {} barriers, {} semantic changes</title></rect>"#,
            i as f64 * w,
            HEIGHT - h,
            (w - 1.0).max(0.5),
            b.writes,
            bytes(b.written_bytes as f64),
            b.barriers,
            b.semantic
        );
    }
    let mut marker = |events: &[PointEvent], class: &str, y: f64, what: &str| {
        for e in events {
            let x = x_of(t, e.ts_ns);
            let _ = write!(
                out,
                r#"<line class="{class}" x1="{x:.1}" x2="{x:.1}" y1="{y}" y2="{HEIGHT}"/><circle class="{class}" cx="{x:.1}" cy="{y}" r="4"><title>{what} {} (seq {}, {})</title></circle>"#,
                escape(&e.name),
                e.seq,
                time(e.ts_ns)
            );
        }
    };
    marker(&vm.checkpoints, "cp", 8.0, "");
    marker(&vm.snapshots, "snap", 16.0, "snapshot");
    marker(&vm.marks, "mark", 24.0, "mark");
    let _ = write!(
        out,
        r#"<text x="0" y="{y}">{}</text><text x="{WIDTH}" y="{y}" text-anchor="end">{}</text></svg>"#,
        time(t.t0_ns),
        time(t.t1_ns),
        y = HEIGHT + 16.0
    );
}

fn count_row(out: &mut String, vm: &str, label: &str, key: &str, value: String) {
    let _ = write!(
        out,
        r#"<tr><th>{label}</th><td data-vm="{}" data-count="{key}">{value}</td></tr>"#,
        escape(vm)
    );
}

fn vm_section(t: &Timeline, vm: &VmTimeline, out: &mut String) {
    let _ = write!(out, "<section><h2>VM {}</h2>", escape(&vm.vm));
    vm_chart(t, vm, out);
    out.push_str(r#"<p class="legend"><span class="w">&#9632;</span> bytes written per bucket <span class="cp">&#9679;</span> checkpoint <span class="snap">&#9679;</span> snapshot <span class="mark">&#9679;</span> mark</p><table>"#);
    let b: &Bucket = &vm.totals;
    count_row(out, &vm.vm, "records", "records", b.records.to_string());
    count_row(
        out,
        &vm.vm,
        "seq",
        "seq",
        format!("{}..{}", vm.first_seq, vm.last_seq),
    );
    count_row(out, &vm.vm, "writes", "writes", b.writes.to_string());
    count_row(
        out,
        &vm.vm,
        "bytes written",
        "written_bytes",
        bytes(b.written_bytes as f64),
    );
    count_row(
        out,
        &vm.vm,
        "barriers (flushes)",
        "barriers",
        b.barriers.to_string(),
    );
    count_row(out, &vm.vm, "marks", "marks", vm.marks.len().to_string());
    count_row(
        out,
        &vm.vm,
        "snapshots",
        "snapshots",
        vm.snapshots.len().to_string(),
    );
    count_row(
        out,
        &vm.vm,
        "checkpoints",
        "checkpoints",
        vm.checkpoints.len().to_string(),
    );
    count_row(
        out,
        &vm.vm,
        "semantic changes",
        "semantic",
        b.semantic.to_string(),
    );
    out.push_str("</table>");
    if !vm.tables.is_empty() {
        out.push_str("<h3>Semantic changes per table</h3><table><tr><th>file: table</th><th>changes</th></tr>");
        for (table, n) in &vm.tables {
            let _ = write!(
                out,
                r#"<tr><td>{}</td><td data-vm="{}" data-table="{}">{n}</td></tr>"#,
                escape(table),
                escape(&vm.vm),
                escape(table)
            );
        }
        out.push_str("</table>");
    }
    if !vm.marks.is_empty() {
        out.push_str("<h3>Marks</h3><ul>");
        for m in &vm.marks {
            let _ = write!(
                out,
                "<li>{} at seq {} ({})</li>",
                escape(&m.name),
                m.seq,
                time(m.ts_ns)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
}

fn growth_chart(t: &Timeline, out: &mut String) {
    let buckets = t.combined();
    let mut logged = 0u64;
    let mut stored = 0u64;
    let points: Vec<(u64, u64)> = buckets
        .iter()
        .map(|b| {
            logged += b.logged_bytes;
            stored += b.stored_bytes;
            (logged, stored)
        })
        .collect();
    let max = logged.max(stored).max(1) as f64;
    let n = points.len().max(1) as f64;
    let line = |pick: fn(&(u64, u64)) -> u64| {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{:.1},{:.1}",
                    WIDTH * (i as f64 + 1.0) / n,
                    HEIGHT - (HEIGHT - 10.0) * pick(p) as f64 / max
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="storage growth"><polyline class="logged" points="0,{HEIGHT} {}"/><polyline class="stored" points="0,{HEIGHT} {}"/></svg><p class="legend"><span class="logged">&#9632;</span> bytes logged (cumulative, {}) <span class="stored">&#9632;</span> bytes stored after dedup and compression ({})</p>"#,
        line(|p| p.0),
        line(|p| p.1),
        bytes(logged as f64),
        bytes(stored as f64)
    );
}

fn estimate(e: &Estimate, f: fn(f64) -> String) -> String {
    format!("{} (95%: {} to {})", f(e.point), f(e.low), f(e.high))
}

fn forecast_section(input: &ReportInput, out: &mut String) {
    out.push_str("<section><h2>Storage and forecast</h2>");
    growth_chart(input.timeline, out);
    let totals = input.timeline.totals();
    out.push_str("<table>");
    if let Some(s) = input.store_bytes {
        count_row(out, "", "store (files)", "store_bytes", bytes(s as f64));
    }
    let dedup = if totals.stored_bytes > 0 {
        format!(
            "{:.2}",
            totals.logged_bytes as f64 / totals.stored_bytes as f64
        )
    } else {
        "n/a".into()
    };
    count_row(
        out,
        "",
        "bytes logged per byte stored",
        "store_ratio",
        dedup,
    );
    out.push_str("</table>");
    match input.forecast {
        Some(f) => {
            let _ = write!(
                out,
                "<h3>In {:.1} days</h3><table><tr><th>log</th><td>{}</td></tr><tr><th>store</th><td>{}</td></tr>",
                f.horizon_s / 86_400.0,
                estimate(&f.at_horizon.log_bytes, bytes),
                estimate(&f.at_horizon.store_bytes, bytes)
            );
            if let Some(r) = &f.at_horizon.full_replay_s {
                let _ = write!(
                    out,
                    "<tr><th>full replay</th><td>{}</td></tr>",
                    estimate(r, |s| format!("{s:.1} s"))
                );
            }
            out.push_str("</table>");
            match &f.backtest {
                Some(b) => {
                    let _ = write!(
                        out,
                        "<p>Back-test (fitted on {} buckets, scored on {}): mean absolute error {:.1}% (records), {:.1}% (bytes logged), {:.1}% (bytes stored).</p>",
                        b.train_buckets, b.test_buckets, b.records_mape, b.logged_bytes_mape, b.stored_bytes_mape
                    );
                }
                None => out.push_str("<p>No back-test: the history is too short.</p>"),
            }
            for w in &f.warnings {
                let _ = write!(out, r#"<p class="warn">{}</p>"#, escape(w));
            }
        }
        None => {
            let _ = write!(
                out,
                r#"<p class="warn">No forecast: {}</p>"#,
                escape(input.forecast_note.as_deref().unwrap_or("not asked for"))
            );
        }
    }
    out.push_str("</section>");
}

fn drills_section(drills: &[serde_json::Value], out: &mut String) {
    out.push_str("<section><h2>Last drills</h2>");
    if drills.is_empty() {
        out.push_str("<p>No drill has been run against this directory (<code>vmm drill</code>).</p></section>");
        return;
    }
    out.push_str("<table><tr><th>when</th><th>VM</th><th>at</th><th>result</th><th>restore</th><th>check</th></tr>");
    for d in drills.iter().rev() {
        let s = |k: &str| {
            escape(
                &d[k]
                    .as_str()
                    .map_or_else(|| d[k].to_string(), str::to_string),
            )
        };
        let pass = d["pass"].as_bool() == Some(true);
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="{}" data-drill="{}">{}</td><td>{} ms</td><td>{} ms</td></tr>"#,
            d["ts_ns"].as_u64().map_or("?".into(), time),
            s("vm"),
            s("at"),
            if pass { "pass" } else { "fail" },
            if pass { "pass" } else { "fail" },
            if pass { "PASS" } else { "FAIL" },
            d["restore_ms"]
                .as_f64()
                .map_or("?".into(), |v| format!("{v:.0}")),
            d["boot_and_check_ms"]
                .as_f64()
                .map_or("?".into(), |v| format!("{v:.0}")),
        );
    }
    out.push_str("</table></section>");
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}\
.chart{display:block;border:1px solid #ccc;background:#fafafa}rect.w{fill:#4a7ebb}\
.cp{stroke:#888;fill:#888}.snap{stroke:#d08020;fill:#d08020}.mark{stroke:#c03030;fill:#c03030}\
span.w{color:#4a7ebb}span.cp{color:#888}span.snap{color:#d08020}span.mark{color:#c03030}\
polyline{fill:none;stroke-width:2}.logged{stroke:#4a7ebb;color:#4a7ebb}.stored{stroke:#30a050;color:#30a050}\
.warn{color:#a04000}.pass{color:#207020;font-weight:bold}.fail{color:#b02020;font-weight:bold}text{font-size:11px}";

const SCRIPT: &str = "document.addEventListener('DOMContentLoaded',function(){\
var ok=Array.prototype.every.call(document.querySelectorAll('svg.chart'),function(s){var r=s.getBoundingClientRect();return r.width>0&&r.height>0;});\
document.documentElement.setAttribute('data-rendered',ok?'yes':'no');});";

/// The page.
pub fn render(input: &ReportInput) -> String {
    let t = input.timeline;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>vmm report: {loc}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body><h1>Record set {loc}</h1><p>{} VMs, history from {} to {} ({:.1} s), in {} buckets of {:.3} s; made {}.</p>"#,
        t.vms.len(),
        time(t.t0_ns),
        time(t.t1_ns),
        (t.t1_ns - t.t0_ns) as f64 / 1e9,
        t.vms.first().map_or(0, |v| v.buckets.len()),
        t.bucket_ns as f64 / 1e9,
        time(input.generated_ns),
        loc = escape(&t.location)
    );
    for vm in &t.vms {
        vm_section(t, vm, &mut out);
    }
    forecast_section(input, &mut out);
    drills_section(input.drills, &mut out);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(time(1_796_000_000_000_000_000), "2026-11-30T00:53:20Z");
        assert_eq!(bytes(1536.0), "1.5 KiB");
    }
}
