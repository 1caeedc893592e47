//! A `capstan agent` process: another node that joins a test [`Server`](crate::Server), with its
//! own data dir, netns dir, node-service port and bridge (`capstan1`), either in the server's
//! network namespace (both nodes share one "host", [`Agent::join`]) or in a namespace of its
//! own routed through the server's ([`Agent::join_routed`]).

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use std::net::Ipv4Addr;

use crate::{
    busybox_archive, in_netns, make_host_netns, must_eventually, must_ip, remove_node_leftovers,
    spawn_until_ready, terminate, Server,
};

/// One agent process; stopped and cleaned up on drop.
pub struct Agent {
    dir: tempfile::TempDir,
    netns_dir: PathBuf,
    child: Option<Child>,
    /// The agent's own network namespace, when it has one (deleted on drop).
    own_netns: Option<String>,
    /// Node name of this agent.
    pub node: String,
    /// The agent's address: 127.0.0.1 beside the server, its uplink's address when routed.
    pub ip: Ipv4Addr,
}

impl Agent {
    /// Starts an agent named `node` joining `server`, with the busybox image imported, and
    /// waits until its Node is Ready.
    pub fn join(server: &Server, node: &str) -> Agent {
        Agent::spawn(server, node, None, &[])
    }

    /// Starts an agent named `node` in a network namespace of its own, linked to the server's
    /// by a veth pair on 10.99.`i`.0/24 (the server side .1, the agent's `uplink` .2 and its
    /// default route via .1), so nodes share no segment and reach each other only through the
    /// server's namespace. `server` must have been started with a
    /// [`crate::ServerOptions::uplink`] at `server_ip`. `args` are more agent flags.
    pub fn join_routed(
        server: &Server,
        server_ip: Ipv4Addr,
        node: &str,
        i: u8,
        args: &[&str],
    ) -> Agent {
        // Unique per process and call: tests of one process run in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000;
        let own = make_host_netns(&format!("{}{n:03}", std::process::id()));
        let (outside, inside) = (format!("ag{i}"), format!("ag{i}-in"));
        let host = server.host_netns();
        must_ip(&[
            "-n", host, "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        must_ip(&[
            "-n", host, "link", "set", &inside, "netns", &own, "name", "uplink",
        ]);
        must_ip(&[
            "-n",
            host,
            "addr",
            "add",
            &format!("10.99.{i}.1/24"),
            "dev",
            &outside,
        ]);
        must_ip(&["-n", host, "link", "set", &outside, "up"]);
        let ip = Ipv4Addr::new(10, 99, i, 2);
        must_ip(&[
            "-n",
            &own,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "uplink",
        ]);
        must_ip(&["-n", &own, "link", "set", "uplink", "up"]);
        must_ip(&[
            "-n",
            &own,
            "route",
            "add",
            "default",
            "via",
            &format!("10.99.{i}.1"),
        ]);
        let listen = format!("{ip}:0");
        let mut flags = vec![
            "--server".to_string(),
            server.url_at(server_ip),
            "--listen".to_string(),
            listen,
            "--host-ip".to_string(),
            ip.to_string(),
        ];
        flags.extend(args.iter().map(|a| a.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut agent = Agent::spawn(server, node, Some(own), &flags);
        agent.ip = ip;
        agent
    }

    /// The agent's network namespace (its own, or the server's).
    pub fn netns<'a>(&'a self, server: &'a Server) -> &'a str {
        self.own_netns.as_deref().unwrap_or(server.host_netns())
    }

    fn spawn(server: &Server, node: &str, own_netns: Option<String>, args: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("capstan-test-agent-")
            .tempdir()
            .unwrap();
        let tag = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let netns_dir = PathBuf::from(format!("/run/{tag}/netns"));
        let data = dir.path().join("data");
        let out = server.cli(&[
            "image",
            "import",
            busybox_archive().to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log_path = dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = in_netns(own_netns.as_deref().unwrap_or(server.host_netns()));
        cmd.arg("agent")
            .args(["--bridge", "capstan1", "--proxy-table", "capstan1"]);
        if own_netns.is_none() {
            cmd.args(["--server", &server.url(), "--listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .args(["--node-name", node])
            .arg("--data-dir")
            .arg(&data)
            .arg("--netns-dir")
            .arg(&netns_dir)
            .args(["--log", "info,actors=debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let (child, _port) = spawn_until_ready(cmd, &log_path, 0, "capstan agent ready");
        let agent = Agent {
            dir,
            netns_dir,
            child: Some(child),
            own_netns,
            node: node.to_string(),
            ip: Ipv4Addr::LOCALHOST,
        };
        must_eventually(
            Duration::from_secs(30),
            "the agent's node to be Ready",
            || {
                let out = server.cli(&["get", "nodes"]);
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                text.lines()
                    .any(|l| l.starts_with(&format!("{node} ")) && l.contains(" Ready"))
                    .then_some(())
            },
        );
        agent
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Stops the agent (SIGTERM); its containers keep running.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        remove_node_leftovers(&self.dir.path().join("data"), &self.netns_dir);
        if let Some(own) = self.own_netns.take() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &own])
                .status();
        }
    }
}
