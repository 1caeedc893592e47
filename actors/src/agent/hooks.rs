//! Container lifecycle hooks at the edge: `postStart` right after a container started (a
//! failure gets the container stopped, and the restart policy takes over, as the kubelet
//! does) and `preStop` before a container is sent SIGTERM, within its grace period. A handler
//! is a command run in the container, an HTTP GET or TCP connect to the pod's own IP (through
//! the probe code), or a sleep.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use api::v1;

use super::prober::{self, ProbeTarget};
use super::AgentContext;

/// Longest a postStart hook may run before it counts as failed.
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `handler` for the container attempt `container_id`, within `timeout`.
pub async fn run(
    ctx: &AgentContext,
    handler: &v1::LifecycleHandler,
    c: &v1::Container,
    container_id: &str,
    pod_ip: Option<IpAddr>,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(sleep.seconds.max(0) as u64);
        tokio::time::sleep(wanted.min(timeout)).await;
        return Ok(());
    }
    if handler.exec.is_none() && handler.http_get.is_none() && handler.tcp_socket.is_none() {
        return Err("the handler sets no action".into());
    }
    // The probe code runs exec, httpGet and tcpSocket actions exactly as a probe would.
    let probe = v1::Probe {
        timeout_seconds: timeout.as_secs().clamp(1, i32::MAX as u64) as i32,
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        ..Default::default()
    };
    let target = ProbeTarget {
        pod_ip,
        ports: c.ports.clone(),
        exec: Some((ctx.runtime.clone(), container_id.to_owned())),
    };
    match prober::run(&probe, &target).await {
        super::probe::ProbeOutcome::Success => Ok(()),
        super::probe::ProbeOutcome::Failure { message } => Err(message),
    }
}

/// Runs the container's preStop hook, if it has one, within `grace`; returns the grace left
/// for SIGTERM (at least one second, so the container still gets its signal).
pub async fn pre_stop(
    ctx: &AgentContext,
    c: Option<&v1::Container>,
    container_id: &str,
    pod_ip: Option<IpAddr>,
    grace: Duration,
) -> Duration {
    let Some(handler) = c
        .and_then(|c| c.lifecycle.as_ref())
        .and_then(|l| l.pre_stop.as_ref())
    else {
        return grace;
    };
    let Some(c) = c else { return grace };
    let began = Instant::now();
    match run(ctx, handler, c, container_id, pod_ip, grace).await {
        Ok(()) => tracing::info!(container = %c.name, id = %container_id, "preStop hook ran"),
        Err(reason) => {
            tracing::warn!(container = %c.name, id = %container_id, reason = %reason, "preStop hook failed")
        }
    }
    grace
        .saturating_sub(began.elapsed())
        .max(Duration::from_secs(1))
}
