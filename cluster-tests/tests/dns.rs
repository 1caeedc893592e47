//! Cluster DNS end to end on a real node: the agent serves DNS on its bridge gateway from the
//! Services and Endpoints it watches and writes each pod's `/etc/resolv.conf`, `/etc/hosts`
//! and `/etc/hostname`. A busybox client pod resolves a ClusterIP Service by its full and its
//! short name (through the search list), a headless Service to its ready pods only, a pod by
//! `<hostname>.<subdomain>`, SRV records of named ports, and NXDOMAIN for a missing Service. The node runs in a
//! network namespace the harness made, with no route out: nothing reaches a real upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{must_eventually, Server};

const MANIFEST: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - {name: pg, port: 5432}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  labels: {app: db}
spec:
  hostname: db-0
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: db
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: db-1
  labels: {app: db}
spec:
  hostname: db-1
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: db
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    # Nothing listens on 5432: never ready, so never in the headless answer.
    readinessProbe:
      tcpSocket: {port: 5432}
      periodSeconds: 1
"#;

const CLIENT: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  restartPolicy: Never
  hostAliases:
  - {ip: 192.0.2.10, hostnames: [foo.local, bar.local]}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    command:
    - sh
    - -c
    - |
      echo '--- resolv.conf'; cat /etc/resolv.conf
      echo '--- hosts'; cat /etc/hosts
      echo '--- hostname'; cat /etc/hostname
      for n in web.default.svc.cluster.local web db db-0.db.default.svc.cluster.local nope; do
        echo "--- nslookup $n"; nslookup -type=a $n; echo "exit $?"
      done
      for n in _http._tcp.web.default.svc.cluster.local _pg._tcp.db.default.svc.cluster.local; do
        echo "--- srv $n"; nslookup -type=srv $n; echo "exit $?"
      done
      true
"#;

/// The lines of `log` after the `--- <section>` marker, up to the next marker.
fn section<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    log.lines()
        .skip_while(|l| *l != format!("--- {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with("--- "))
        .collect()
}

/// The addresses an nslookup section printed for `name` (busybox prints `Name:` then
/// `Address: <ip>` lines per answer; the server's own `Address:` line comes before any `Name:`).
fn answers(lines: &[&str], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_answer = false;
    for l in lines {
        if let Some(n) = l.strip_prefix("Name:") {
            in_answer = n.trim() == name;
        } else if let Some(a) = l.strip_prefix("Address:") {
            if in_answer {
                out.push(a.trim().to_string());
            }
        }
    }
    out.sort();
    out
}

fn pod_ip(server: &Server, name: &str) -> String {
    let p = server.must_pod_phase(name, "Running", Duration::from_secs(90));
    p["status"]["podIP"].as_str().unwrap().to_string()
}

#[test]
fn a_pod_resolves_services_headless_pods_and_short_names_through_the_node_dns() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dns.yaml");
    std::fs::write(&path, MANIFEST).unwrap();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);

    let svc: serde_json::Value =
        serde_json::from_str(&server.must_cli(&["get", "service", "web", "-o", "json"])).unwrap();
    let web_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let db0 = pod_ip(&server, "db-0");
    let db1 = pod_ip(&server, "db-1");
    must_eventually(
        Duration::from_secs(60),
        "db-0 as the one ready endpoint of db, with its hostname",
        || {
            let out = server.cli(&["get", "endpoints", "db", "-o", "json"]);
            let ep: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let ready = ep["subsets"][0]["addresses"].as_array()?.clone();
            let not_ready = ep["subsets"][0]["notReadyAddresses"].as_array()?.clone();
            (ready.len() == 1
                && ready[0]["hostname"] == "db-0"
                && not_ready.len() == 1
                && not_ready[0]["ip"] == db1.as_str())
            .then_some(())
        },
    );

    let cpath = dir.path().join("client.yaml");
    std::fs::write(&cpath, CLIENT).unwrap();
    server.must_cli(&["apply", "-f", cpath.to_str().unwrap()]);
    let client = server.must_pod_phase("client", "Succeeded", Duration::from_secs(120));
    let client_ip = client["status"]["podIP"].as_str().unwrap().to_string();
    let log = server.must_cli(&["logs", "client"]);
    let context = || format!("client log:\n{log}\nserver log:\n{}", server.log());

    let resolv = section(&log, "resolv.conf");
    let gateway = {
        let mut octets: Vec<&str> = client_ip.split('.').collect();
        octets[3] = "1";
        octets.join(".")
    };
    assert_eq!(
        resolv.first().copied(),
        Some(format!("nameserver {gateway}").as_str()),
        "the node DNS on the pod's gateway; {}",
        context()
    );
    assert!(
        resolv
            .iter()
            .any(|l| l
                .starts_with("search default.svc.cluster.local svc.cluster.local cluster.local")),
        "the namespace's search list; {}",
        context()
    );
    assert!(resolv.contains(&"options ndots:5"), "{}", context());
    let hosts = section(&log, "hosts");
    assert!(
        hosts.contains(&format!("{client_ip}\tclient").as_str()),
        "{}",
        context()
    );
    assert!(
        hosts.contains(&"192.0.2.10\tfoo.local\tbar.local"),
        "hostAliases; {}",
        context()
    );
    assert_eq!(section(&log, "hostname"), ["client"], "{}", context());

    let full = section(&log, "nslookup web.default.svc.cluster.local");
    assert_eq!(
        answers(&full, "web.default.svc.cluster.local"),
        std::slice::from_ref(&web_ip),
        "{}",
        context()
    );
    let short = section(&log, "nslookup web");
    assert_eq!(
        answers(&short, "web.default.svc.cluster.local"),
        [web_ip],
        "a short name through the search list; {}",
        context()
    );
    let headless = section(&log, "nslookup db");
    assert_eq!(
        answers(&headless, "db.default.svc.cluster.local"),
        std::slice::from_ref(&db0),
        "only the ready pod; {}",
        context()
    );
    // busybox's nslookup only searches names without a dot, so the pod name is given whole.
    let pod = section(&log, "nslookup db-0.db.default.svc.cluster.local");
    assert_eq!(
        answers(&pod, "db-0.db.default.svc.cluster.local"),
        [db0],
        "{}",
        context()
    );
    let srv = section(&log, "srv _http._tcp.web.default.svc.cluster.local");
    assert!(
        srv.iter()
            .any(|l| l.trim_end().ends_with(" 80 web.default.svc.cluster.local")),
        "SRV of a named ClusterIP port; {}",
        context()
    );
    let srv = section(&log, "srv _pg._tcp.db.default.svc.cluster.local");
    let targets: Vec<&&str> = srv.iter().filter(|l| l.contains(" 5432 ")).collect();
    assert!(
        targets.len() == 1
            && targets[0]
                .trim_end()
                .ends_with(" 5432 db-0.db.default.svc.cluster.local"),
        "SRV of a headless port names the ready pod only; {}",
        context()
    );
    let nx = section(&log, "nslookup nope");
    assert!(
        nx.iter().any(|l| l.contains("NXDOMAIN")) && nx.contains(&"exit 1"),
        "a missing name fails; {}",
        context()
    );
}

fn actor_id(server: &Server, name: &str) -> Option<String> {
    let out = server.must_cli(&["debug", "actors"]);
    out.lines().find_map(|l| {
        let (n, id) = l.split_once('\t')?;
        (n == name).then(|| id.to_string())
    })
}

/// Regression guard for the agent's restart path: the killed agent's server must let go of
/// port 53 and the restarted agent must bind it again.
#[test]
fn cluster_dns_serves_again_after_the_node_agent_is_killed_and_restarted() {
    let server = Server::start(true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80}\n",
    )
    .unwrap();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);
    let svc: serde_json::Value =
        serde_json::from_str(&server.must_cli(&["get", "service", "web", "-o", "json"])).unwrap();
    let web_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();

    let listening = |s: &Server| s.log().matches("DNS server listening").count();
    must_eventually(Duration::from_secs(30), "the node DNS to serve", || {
        (listening(&server) == 1).then_some(())
    });
    let agent = format!("node-agent/{}", server.node);
    let before = actor_id(&server, &agent).expect("agent registered");
    server.must_cli(&["debug", "kill", &agent]);
    must_eventually(Duration::from_secs(30), "the agent to come back", || {
        actor_id(&server, &agent).filter(|id| *id != before)
    });

    let client = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: after\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"for i in $(seq 1 20); do nslookup -type=a web.default.svc.cluster.local > /tmp/out && break; sleep 1; done; cat /tmp/out\"]\n";
    let cpath = dir.path().join("after.yaml");
    std::fs::write(&cpath, client).unwrap();
    server.must_cli(&["apply", "-f", cpath.to_str().unwrap()]);
    server.must_pod_phase("after", "Succeeded", Duration::from_secs(120));
    assert_eq!(
        listening(&server),
        2,
        "the restarted agent started its own server"
    );
    let log = server.must_cli(&["logs", "after"]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        answers(&lines, "web.default.svc.cluster.local"),
        [web_ip],
        "log:\n{log}\nserver log:\n{}",
        server.log()
    );
}
