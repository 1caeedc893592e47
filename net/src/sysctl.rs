//! The `net.ipv4.ip_forward` switch of the calling thread's network namespace. `/proc/sys/net`
//! resolves against the namespace of the thread that opens it, so a thread inside
//! [`crate::run_in_netns`] changes that namespace only. It must not touch other sysctls.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Reports whether IPv4 forwarding is on in the calling thread's network namespace.
pub fn ip_forward_enabled() -> Result<bool> {
    let text = std::fs::read_to_string(IP_FORWARD).map_err(|source| io("read sysctl", source))?;
    Ok(text.trim() == "1")
}

/// Turns IPv4 forwarding on in the calling thread's network namespace (a no-op when it is on).
pub fn enable_ip_forward() -> Result<()> {
    if ip_forward_enabled()? {
        return Ok(());
    }
    std::fs::write(Path::new(IP_FORWARD), b"1").map_err(|source| io("write sysctl", source))?;
    tracing::info!(
        message = "ip forwarding enabled",
        sysctl = "net.ipv4.ip_forward"
    );
    Ok(())
}

fn io(op: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: PathBuf::from(IP_FORWARD),
        source,
    }
}
