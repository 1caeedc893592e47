//! A `capstan agent` process: a second node that joins a test [`Server`](crate::Server), with its
//! own data dir, netns dir, node-service port and bridge (`capstan1`), in the server's network
//! namespace (both nodes share one "host").

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::{
    busybox_archive, in_netns, must_eventually, remove_node_leftovers, spawn_until_ready,
    terminate, Server,
};

/// One agent process; stopped and cleaned up on drop.
pub struct Agent {
    dir: tempfile::TempDir,
    netns_dir: PathBuf,
    child: Option<Child>,
    /// Node name of this agent.
    pub node: String,
}

impl Agent {
    /// Starts an agent named `node` joining `server`, with the busybox image imported, and
    /// waits until its Node is Ready.
    pub fn join(server: &Server, node: &str) -> Agent {
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
        let mut cmd = in_netns(server.host_netns());
        cmd.arg("agent")
            .args(["--bridge", "capstan1", "--proxy-table", "capstan1"])
            .args([
                "--server",
                &server.url(),
                "--listen",
                "127.0.0.1:0",
                "--node-name",
                node,
            ])
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
            node: node.to_string(),
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
    }
}
