//! Issue 6's network benchmark in one run, as root: the Service data path against the pod IP
//! (TCP throughput and connection rate), programming 10,000 Services and one change with them
//! all present, and cluster DNS queries per second on one core. Each part is also a bench of
//! its own (`service_path`, `services_sync`, `dns_qps`) and cleans up after itself.
//! Run: `cargo bench -p net --bench network`.

#[path = "dns_qps.rs"]
mod dns_qps;
#[path = "service_path.rs"]
mod service_path;
#[path = "services_sync.rs"]
mod services_sync;

fn main() {
    service_path::main();
    println!();
    services_sync::main();
    println!();
    dns_qps::main();
}
