//! The live counters in the Prometheus text format (version 0.0.4), by
//! the `prometheus-client` crate: a collector reads [`Counters`] at each
//! scrape, so nothing on the VM's paths knows about Prometheus.
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::counters::Counters;
use store::clock::rss_kib;

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug)]
struct Live(Arc<Counters>);

/// One counter without labels.
fn counter<N>(e: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> std::fmt::Result
where
    ConstCounter<N>: EncodeMetric,
{
    let c = ConstCounter::new(v);
    let m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

impl Collector for Live {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let c = &*self.0;
        let get = Counters::get;
        {
            let exits = ConstCounter::new(0u64);
            let mut m = e.encode_descriptor(
                "vcpu_exits",
                "VM exits the VMM handled, by kind",
                None,
                exits.metric_type(),
            )?;
            for (kind, n) in [
                ("pio", get(&c.pio_exits)),
                ("mmio", get(&c.mmio_exits)),
                ("other", c.other_exits()),
            ] {
                let labels = [("kind", kind)];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        let secs = |ns: u64| ns as f64 / 1e9;
        counter(
            &mut e,
            "vcpu_cpu_seconds",
            "CPU time of the vCPU thread(s)",
            secs(c.vcpu_cpu.total_ns()),
        )?;
        counter(
            &mut e,
            "guest_read_bytes",
            "Bytes the guest read through virtio-blk",
            get(&c.guest_read_bytes),
        )?;
        counter(
            &mut e,
            "guest_written_bytes",
            "Bytes the guest wrote through virtio-blk",
            get(&c.guest_written_bytes),
        )?;
        counter(
            &mut e,
            "barriers",
            "Flush barriers recorded in the change log",
            get(&c.barriers),
        )?;
        counter(
            &mut e,
            "logged_bytes",
            "Bytes of guest writes logged (whole 4 KiB blocks), counted at barriers",
            get(&c.logged_bytes),
        )?;
        counter(
            &mut e,
            "store_new_objects",
            "Blocks the content store did not have yet (after dedup), counted at barriers",
            get(&c.new_objects),
        )?;
        counter(
            &mut e,
            "store_bytes",
            "Bytes added to the content store after dedup and compression, counted at barriers",
            get(&c.stored_bytes),
        )?;
        counter(
            &mut e,
            "recorder_cpu_seconds",
            "CPU time of the recording thread",
            secs(c.recorder_cpu.total_ns()),
        )?;
        let rss = ConstGauge::new((rss_kib() * 1024) as i64);
        let m = e.encode_descriptor(
            "rss_bytes",
            "Resident memory of the VMM process",
            None,
            rss.metric_type(),
        )?;
        rss.encode(m)
    }
}

/// A registry that exposes `counters` under the `vmm_` prefix.
pub fn registry(counters: Arc<Counters>) -> Registry {
    let mut r = Registry::with_prefix("vmm");
    r.register_collector(Box::new(Live(counters)));
    r
}

/// The text a scrape gets.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("writing to a String does not fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_their_values() {
        let c = Arc::new(Counters::default());
        Counters::add(&c.exits, 10);
        Counters::add(&c.pio_exits, 3);
        Counters::add(&c.mmio_exits, 6);
        Counters::add(&c.guest_written_bytes, 8192);
        Counters::add(&c.barriers, 2);
        let text = render(&registry(c));
        for line in [
            "vmm_vcpu_exits_total{kind=\"pio\"} 3",
            "vmm_vcpu_exits_total{kind=\"mmio\"} 6",
            "vmm_vcpu_exits_total{kind=\"other\"} 1",
            "vmm_guest_written_bytes_total 8192",
            "vmm_barriers_total 2",
            "# TYPE vmm_rss_bytes gauge",
            "vmm_recorder_cpu_seconds_total 0",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
