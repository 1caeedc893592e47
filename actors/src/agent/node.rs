//! The Node object this agent registers and heartbeats: identity, capacity, Ready condition.
//! Building it is pure; the agent writes it.

use std::collections::BTreeMap;

use api::v1;

/// Facts about the machine, gathered once at start.
#[derive(Debug, Clone, Default)]
pub struct MachineInfo {
    /// Number of CPUs.
    pub cpus: usize,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// `uname -r`.
    pub kernel_version: String,
    /// PRETTY_NAME of /etc/os-release.
    pub os_image: String,
    /// /etc/machine-id.
    pub machine_id: String,
}

impl MachineInfo {
    /// Reads the facts from /proc and /etc; missing ones stay empty.
    pub fn gather() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        MachineInfo {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_bytes: memory_kib * 1024,
            kernel_version: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os_image,
            machine_id: read("/etc/machine-id").trim().to_string(),
        }
    }
}

/// The status this node reports at `now`.
pub fn node_status(
    info: &MachineInfo,
    host_ip: &str,
    hostname: &str,
    now: &str,
    previous: Option<&v1::NodeStatus>,
) -> v1::NodeStatus {
    let capacity: BTreeMap<String, String> = BTreeMap::from([
        ("cpu".to_string(), info.cpus.to_string()),
        (
            "memory".to_string(),
            format!("{}Ki", info.memory_bytes / 1024),
        ),
        ("pods".to_string(), "110".to_string()),
    ]);
    let was_ready = previous
        .and_then(|p| p.conditions.iter().find(|c| c.r#type == "Ready"))
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.clone());
    v1::NodeStatus {
        allocatable: capacity.clone(),
        capacity,
        conditions: vec![v1::NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            reason: "KubeletReady".into(),
            message: "capstan node agent is posting ready status".into(),
            last_heartbeat_time: now.to_string(),
            last_transition_time: was_ready.unwrap_or_else(|| now.to_string()),
        }],
        addresses: vec![
            v1::NodeAddress {
                r#type: "InternalIP".into(),
                address: host_ip.to_string(),
            },
            v1::NodeAddress {
                r#type: "Hostname".into(),
                address: hostname.to_string(),
            },
        ],
        node_info: Some(v1::NodeSystemInfo {
            machine_id: info.machine_id.clone(),
            kernel_version: info.kernel_version.clone(),
            os_image: info.os_image.clone(),
            architecture: std::env::consts::ARCH.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_transition_time_is_kept_across_heartbeats() {
        let info = MachineInfo {
            cpus: 2,
            memory_bytes: 2048 * 1024,
            ..Default::default()
        };
        let first = node_status(&info, "127.0.0.1", "n1", "2026-01-01T00:00:00Z", None);
        let second = node_status(
            &info,
            "127.0.0.1",
            "n1",
            "2026-01-01T00:00:10Z",
            Some(&first),
        );
        let c = &second.conditions[0];
        assert_eq!(
            (
                c.last_transition_time.as_str(),
                c.last_heartbeat_time.as_str()
            ),
            ("2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z")
        );
        assert_eq!(
            second.capacity.get("memory").map(String::as_str),
            Some("2048Ki")
        );
    }
}
