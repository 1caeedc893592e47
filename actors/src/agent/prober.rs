//! Runs one probe once, at the edge: a plain HTTP/1.1 GET or a TCP connect to the pod's own IP,
//! or a command run inside the container, bounded by `timeoutSeconds`. It connects from the
//! node's network namespace (the bridge routes to the pod) and never to any address but the
//! pod's. It decides nothing: the outcome goes to [`super::probe`]'s state machine. gRPC and
//! HTTPS probes are not supported yet and always fail, saying so.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use api::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::probe::ProbeOutcome;

/// Longest response head read before giving up on finding the status line.
const MAX_HEAD: usize = 4096;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe's action cannot be run by this node yet; change the probe.
    #[error("{0} probes are not supported yet")]
    Unsupported(&'static str),
    /// The probe names a port the container does not declare; fix the spec.
    #[error("port {0:?} is not a named port of the container")]
    UnknownPort(String),
    /// The port is out of range; fix the spec.
    #[error("invalid port {0}")]
    InvalidPort(i32),
    /// The probe asks for another host; only the pod's own IP is probed.
    #[error("probe host {0:?} is not supported: only the pod's own IP is probed")]
    ForeignHost(String),
    /// The pod has no IP yet (or runs without a pod network): nothing to connect to.
    #[error("the pod has no IP to probe")]
    NoPodIp,
    /// The probe did not finish within `timeoutSeconds`.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    /// Connecting, writing or reading failed.
    #[error("{op} {addr}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The server answered with something that is not an HTTP status line.
    #[error("malformed HTTP response from {0}")]
    BadResponse(SocketAddr),
    /// The probe's command exited non-zero (output cut to [`EXEC_OUTPUT`] bytes).
    #[error("command {command:?} exited with {code}: {output}")]
    ExecFailed {
        /// argv.
        command: Vec<String>,
        /// Its exit code.
        code: i32,
        /// Its stdout and stderr.
        output: String,
    },
    /// The command could not be run in the container.
    #[error("exec: {0}")]
    Exec(String),
    /// The server answered outside 200–399.
    #[error("HTTP probe failed with statuscode: {0}")]
    Status(u16),
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, ProbeError>;

/// Output an exec probe keeps (the kubelet's limit).
pub const EXEC_OUTPUT: usize = 10 * 1024;

/// Where a container's probes connect: the pod's IP and the container's declared ports, and
/// the container exec probes run in.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The pod's IP; `None` while it has none.
    pub pod_ip: Option<IpAddr>,
    /// The container's ports (for named probe ports).
    pub ports: Vec<v1::ContainerPort>,
    /// The runtime and the container's runtime id, for exec probes (`None`: not supported).
    pub exec: Option<(std::sync::Arc<runtime::Runtime>, String)>,
}

/// Runs `probe` once against `target` and reports the outcome (never an error: a failure is
/// an outcome).
pub async fn run(probe: &v1::Probe, target: &ProbeTarget) -> ProbeOutcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.max(1) as u64);
    let res = match tokio::time::timeout(timeout, attempt(probe, target)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    };
    match res {
        Ok(()) => ProbeOutcome::Success,
        Err(e) => ProbeOutcome::Failure {
            message: e.to_string(),
        },
    }
}

async fn attempt(probe: &v1::Probe, target: &ProbeTarget) -> Result<()> {
    if let Some(h) = &probe.http_get {
        if h.scheme.eq_ignore_ascii_case("HTTPS") {
            return Err(ProbeError::Unsupported("HTTPS"));
        }
        let addr = address(target, &h.host, h.port.as_ref())?;
        return http_get(addr, h).await;
    }
    if let Some(t) = &probe.tcp_socket {
        let addr = address(target, &t.host, t.port.as_ref())?;
        connect(addr).await.map(drop)
    } else if let Some(e) = &probe.exec {
        let Some((rt, id)) = target.exec.clone() else {
            return Err(ProbeError::Unsupported("exec"));
        };
        let timeout = Duration::from_secs(probe.timeout_seconds.max(1) as u64);
        let command = e.command.clone();
        let argv = command.clone();
        let out = tokio::task::spawn_blocking(move || rt.exec(&id, &argv, timeout, EXEC_OUTPUT))
            .await
            .map_err(|e| ProbeError::Exec(e.to_string()))?
            .map_err(|e| ProbeError::Exec(e.to_string()))?;
        if out.exit_code == 0 {
            return Ok(());
        }
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        Err(ProbeError::ExecFailed {
            command,
            code: out.exit_code,
            output: output.trim_end().to_owned(),
        })
    } else if probe.grpc.is_some() {
        Err(ProbeError::Unsupported("gRPC"))
    } else {
        Err(ProbeError::Unsupported("empty"))
    }
}

/// The socket address to probe: the pod's IP (a `host` other than it is refused) and the port
/// by number or by the container's port name.
pub fn address(
    target: &ProbeTarget,
    host: &str,
    port: Option<&v1::IntOrString>,
) -> Result<SocketAddr> {
    let ip = target.pod_ip.ok_or(ProbeError::NoPodIp)?;
    if !host.is_empty() && host.parse::<IpAddr>().ok() != Some(ip) {
        return Err(ProbeError::ForeignHost(host.to_string()));
    }
    let number = match port.and_then(|p| p.value.as_ref()) {
        Some(v1::int_or_string::Value::IntVal(n)) => *n,
        Some(v1::int_or_string::Value::StrVal(s)) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => target
                .ports
                .iter()
                .find(|p| &p.name == s)
                .map(|p| p.container_port)
                .ok_or_else(|| ProbeError::UnknownPort(s.clone()))?,
        },
        None => 0,
    };
    let port = u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(ProbeError::InvalidPort(number))?;
    Ok(SocketAddr::new(ip, port))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Io {
            op: "dial",
            addr,
            source,
        })
}

/// The request line and headers of a probe's GET (kubelet sends the same defaults).
pub fn request(addr: SocketAddr, h: &v1::HttpGetAction) -> String {
    let path = if h.path.is_empty() { "/" } else { &h.path };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    let custom = |name: &str| {
        h.http_headers
            .iter()
            .any(|x| x.name.eq_ignore_ascii_case(name))
    };
    if !custom("user-agent") {
        req.push_str("User-Agent: capstan-probe/1.0\r\n");
    }
    if !custom("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for x in h
        .http_headers
        .iter()
        .filter(|x| !x.name.contains(['\r', '\n']))
    {
        let value: String = x
            .value
            .chars()
            .filter(|c| *c != '\r' && *c != '\n')
            .collect();
        req.push_str(&format!("{}: {value}\r\n", x.name));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// The status code of a response head, once its first line is complete.
pub fn status_code(head: &[u8]) -> Option<std::result::Result<u16, ()>> {
    let end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..end]).map_err(|_| ());
    Some(line.and_then(|l| {
        let mut parts = l.split(' ');
        match (parts.next(), parts.next()) {
            (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code.parse().map_err(|_| ()),
            _ => Err(()),
        }
    }))
}

async fn http_get(addr: SocketAddr, h: &v1::HttpGetAction) -> Result<()> {
    let mut stream = connect(addr).await?;
    let io = |op| move |source| ProbeError::Io { op, addr, source };
    stream
        .write_all(request(addr, h).as_bytes())
        .await
        .map_err(io("write"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    let code = loop {
        if let Some(code) = status_code(&head) {
            break code.map_err(|_| ProbeError::BadResponse(addr))?;
        }
        if head.len() >= MAX_HEAD {
            return Err(ProbeError::BadResponse(addr));
        }
        let n = stream.read(&mut buf).await.map_err(io("read"))?;
        if n == 0 {
            return Err(ProbeError::BadResponse(addr));
        }
        head.extend_from_slice(&buf[..n]);
    };
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(ProbeError::Status(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn target(ip: &str) -> ProbeTarget {
        ProbeTarget {
            pod_ip: ip.parse().ok(),
            ports: vec![v1::ContainerPort {
                name: "http".into(),
                container_port: 8080,
                ..Default::default()
            }],
            exec: None,
        }
    }

    fn port(v: v1::int_or_string::Value) -> Option<v1::IntOrString> {
        Some(v1::IntOrString { value: Some(v) })
    }

    #[test]
    fn ports_resolve_by_number_or_name_and_only_the_pod_ip_is_probed() {
        use v1::int_or_string::Value::{IntVal, StrVal};
        let t = target("10.244.0.5");
        let a = address(&t, "", port(StrVal("http".into())).as_ref()).unwrap();
        assert_eq!(a.to_string(), "10.244.0.5:8080");
        let a = address(&t, "10.244.0.5", port(IntVal(81)).as_ref()).unwrap();
        assert_eq!(a.to_string(), "10.244.0.5:81");
        assert!(matches!(
            address(&t, "", port(StrVal("metrics".into())).as_ref()),
            Err(ProbeError::UnknownPort(_))
        ));
        assert!(matches!(
            address(&t, "192.168.1.1", port(IntVal(81)).as_ref()),
            Err(ProbeError::ForeignHost(_))
        ));
        assert!(matches!(
            address(&t, "", port(IntVal(70000)).as_ref()),
            Err(ProbeError::InvalidPort(70000))
        ));
        assert!(matches!(
            address(&target(""), "", port(IntVal(80)).as_ref()),
            Err(ProbeError::NoPodIp)
        ));
    }

    #[test]
    fn status_lines_parse_once_complete() {
        assert_eq!(status_code(b"HTTP/1.1 20"), None);
        assert_eq!(status_code(b"HTTP/1.0 302 Found\r\n"), Some(Ok(302)));
        assert_eq!(status_code(b"SSH-2.0-x\r\n"), Some(Err(())));
        let req = request(
            "10.0.0.1:80".parse().unwrap(),
            &v1::HttpGetAction {
                path: "/healthz".into(),
                http_headers: vec![v1::HttpHeader {
                    name: "X-A".into(),
                    value: "b\r\nEvil: 1".into(),
                }],
                ..Default::default()
            },
        );
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.0.0.1:80\r\n"));
        assert!(req.contains("X-A: bEvil: 1\r\n"), "{req}");
        assert!(req.ends_with("Connection: close\r\n\r\n"));
    }

    async fn serve_once(answer: &'static [u8]) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            if !answer.is_empty() {
                s.write_all(answer).await.unwrap();
            }
            // Hold the connection open so a silent server shows up as a timeout.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        port
    }

    fn http_probe(port: u16) -> v1::Probe {
        v1::Probe {
            timeout_seconds: 1,
            http_get: Some(v1::HttpGetAction {
                path: "/".into(),
                port: Some(v1::IntOrString {
                    value: Some(v1::int_or_string::Value::IntVal(port.into())),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn http_probes_succeed_on_2xx_and_3xx_and_fail_otherwise() {
        let t = target("127.0.0.1");
        let ok = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(run(&http_probe(ok), &t).await, ProbeOutcome::Success);
        let moved = serve_once(b"HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n").await;
        assert_eq!(run(&http_probe(moved), &t).await, ProbeOutcome::Success);
        let missing = serve_once(b"HTTP/1.1 404 Not Found\r\n\r\n").await;
        assert_eq!(
            run(&http_probe(missing), &t).await,
            ProbeOutcome::Failure {
                message: "HTTP probe failed with statuscode: 404".into()
            }
        );
        let silent = serve_once(b"").await;
        assert_eq!(
            run(&http_probe(silent), &t).await,
            ProbeOutcome::Failure {
                message: "timeout after 1s".into()
            }
        );
    }

    #[tokio::test]
    async fn tcp_probes_need_a_listener_and_exec_probes_need_a_container() {
        let t = target("127.0.0.1");
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = l.local_addr().unwrap().port();
        let tcp = |p: u16| v1::Probe {
            timeout_seconds: 1,
            tcp_socket: Some(v1::TcpSocketAction {
                port: Some(v1::IntOrString {
                    value: Some(v1::int_or_string::Value::IntVal(p.into())),
                }),
                host: String::new(),
            }),
            ..Default::default()
        };
        assert_eq!(run(&tcp(open), &t).await, ProbeOutcome::Success);
        drop(l);
        assert!(matches!(
            run(&tcp(open), &t).await,
            ProbeOutcome::Failure { .. }
        ));
        let exec = v1::Probe {
            exec: Some(v1::ExecAction {
                command: vec!["true".into()],
            }),
            ..Default::default()
        };
        assert_eq!(
            run(&exec, &t).await,
            ProbeOutcome::Failure {
                message: "exec probes are not supported yet".into()
            }
        );
    }
}
