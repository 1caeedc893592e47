//! Jobs and CronJobs end to end on a real server: a Job of 5 completions with parallelism 2
//! completes with exactly 5 successes and, as a watch on its pods shows, never more than 2
//! pods active at once; a Job whose pod exits 1 fails with BackoffLimitExceeded once its
//! backoffLimit is used up; a `*/1 * * * *` CronJob with concurrencyPolicy Forbid creates
//! exactly one Job per minute, named after its schedule time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::BufReader;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_tests::{capstan_bin, must_eventually, Server};

const MANIFEST: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: work
spec:
  completions: 5
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: work
          image: busybox:latest
          imagePullPolicy: IfNotPresent
          command: ["sh", "-c", "sleep 1"]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: doomed
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: doomed
          image: busybox:latest
          imagePullPolicy: IfNotPresent
          command: ["sh", "-c", "exit 1"]
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: "*/1 * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: tick
              image: busybox:latest
              imagePullPolicy: IfNotPresent
              command: ["sh", "-c", "true"]
"#;

fn json(server: &Server, args: &[&str]) -> Option<serde_json::Value> {
    let out = server.cli(args);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn items(server: &Server, args: &[&str]) -> Vec<serde_json::Value> {
    json(server, args)
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn condition<'a>(job: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

/// `capstan get pods -l SELECTOR -w -o json` in the server's namespace, recording the most
/// pods seen active at once. The watch process is killed on drop.
struct PodWatch {
    child: Child,
    max_active: Arc<Mutex<usize>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl PodWatch {
    fn start(server: &Server, selector: &str) -> PodWatch {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", server.host_netns()))
            .arg("--")
            .arg(capstan_bin())
            .args(["get", "pods", "-l", selector, "-w", "-o", "json"])
            .env("CAPSTAN_SERVER", server.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let max_active = Arc::new(Mutex::new(0));
        let max = max_active.clone();
        let reader = std::thread::spawn(move || {
            let mut pods: HashMap<String, serde_json::Value> = HashMap::new();
            let docs = serde_json::Deserializer::from_reader(BufReader::new(stdout))
                .into_iter::<serde_json::Value>();
            // Ends when the watch process is killed (a cut-off last document is an error).
            for doc in docs.map_while(Result::ok) {
                observe(&mut pods, &max, doc);
            }
        });
        PodWatch {
            child,
            max_active,
            reader: Some(reader),
        }
    }

    /// Stops the watch and returns the most pods it saw active at once.
    fn finish(mut self) -> usize {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        *self.max_active.lock().unwrap()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Folds one watch document (the initial list or one pod) into `pods` and updates `max`.
fn observe(
    pods: &mut HashMap<String, serde_json::Value>,
    max: &Mutex<usize>,
    doc: serde_json::Value,
) {
    let list = doc["items"].as_array().cloned();
    for pod in list.unwrap_or_else(|| vec![doc]) {
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        pods.insert(name, pod);
    }
    let active = pods
        .values()
        .filter(|p| {
            let phase = p["status"]["phase"].as_str().unwrap_or("");
            phase != "Succeeded"
                && phase != "Failed"
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count();
    let mut m = max.lock().unwrap();
    *m = (*m).max(active);
}

#[test]
fn jobs_run_to_completion_or_failure_and_a_cronjob_starts_one_job_per_minute() {
    let server = Server::start(false);
    let watch = PodWatch::start(&server, "job-name=work");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    server.must_cli(&["apply", "-f", file.to_str().unwrap()]);

    // completions 5, parallelism 2.
    let work = must_eventually(Duration::from_secs(120), "job work to complete", || {
        json(&server, &["get", "job", "work", "-o", "json"])
            .filter(|j| condition(j, "Complete").is_some())
    });
    assert_eq!(
        work["status"]["succeeded"],
        5,
        "server log:\n{}",
        server.log()
    );
    assert!(work["status"]["completionTime"].is_string());
    assert!(work["status"]["startTime"].is_string());
    let pods = items(
        &server,
        &["get", "pods", "-l", "job-name=work", "-o", "json"],
    );
    let succeeded = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .count();
    assert_eq!(succeeded, 5, "never more successes than completions");
    for p in &pods {
        let m = &p["metadata"];
        assert_eq!(m["ownerReferences"][0]["kind"], "Job");
        assert_eq!(m["ownerReferences"][0]["controller"], true);
        assert_eq!(m["labels"]["batch.kubernetes.io/job-name"], "work");
        assert_eq!(
            m["labels"]["controller-uid"], work["metadata"]["uid"],
            "pods carry the Job's uid"
        );
    }
    let table = server.must_cli(&["get", "jobs"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("work") && l.contains("Complete") && l.contains("5/5")),
        "get jobs:\n{table}"
    );

    // backoffLimit 1: the second failure fails the Job (after a 10 s back-off).
    let doomed = must_eventually(Duration::from_secs(90), "job doomed to fail", || {
        json(&server, &["get", "job", "doomed", "-o", "json"])
            .filter(|j| condition(j, "Failed").is_some())
    });
    assert_eq!(
        condition(&doomed, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(doomed["status"]["failed"], 2);
    assert!(condition(&doomed, "Complete").is_none());

    // The CronJob fires at the next minute boundaries, one Job each.
    let jobs_of_tick = || {
        let mut names: Vec<String> = items(&server, &["get", "jobs", "-o", "json"])
            .iter()
            .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == "tick")
            .filter_map(|j| j["metadata"]["name"].as_str().map(String::from))
            .collect();
        names.sort();
        names
    };
    let two = must_eventually(Duration::from_secs(150), "two runs of cronjob tick", || {
        let names = jobs_of_tick();
        (names.len() >= 2).then_some(names)
    });
    assert_eq!(two.len(), 2, "one job per minute: {two:?}");
    let minutes: Vec<i64> = two
        .iter()
        .map(|n| n.strip_prefix("tick-").unwrap().parse().unwrap())
        .collect();
    assert_eq!(minutes[1], minutes[0] + 1, "consecutive minutes: {two:?}");
    let cj = json(&server, &["get", "cronjob", "tick", "-o", "json"]).unwrap();
    let last = cj["status"]["lastScheduleTime"]
        .as_str()
        .unwrap()
        .to_string();
    let scheduled = json(&server, &["get", "job", &two[1], "-o", "json"]).unwrap()["metadata"]
        ["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(last, scheduled);
    let table = server.must_cli(&["get", "cronjobs"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("tick") && l.contains("*/1 * * * *")),
        "get cronjobs:\n{table}"
    );

    let max_active = watch.finish();
    // The first pass starts parallelism pods at once, and no pass ever runs more.
    assert_eq!(
        max_active, 2,
        "most pods of job work seen active at once (parallelism 2)"
    );
}
