//! Killing a pod's worker actor while its container runs: the node agent restarts the worker,
//! the pod's status stays correct, and no second container is started.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{example, must_eventually, Server};

fn actor_id(server: &Server, name: &str) -> Option<String> {
    let out = server.must_cli(&["debug", "actors"]);
    out.lines().find_map(|l| {
        let (n, id) = l.split_once('\t')?;
        (n == name).then(|| id.to_string())
    })
}

#[test]
fn a_killed_pod_worker_is_restarted_and_adopts_its_running_container() {
    let server = Server::start(true);
    server.must_cli(&["apply", "-f", &example("sleeper-pod.yaml")]);
    let pod = server.must_pod_phase("sleeper", "Running", Duration::from_secs(90));
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let container_id = pod["status"]["containerStatuses"][0]["containerID"].clone();
    assert_eq!(server.containers_of(&uid).len(), 1);

    let worker = "pod-worker/default/sleeper";
    let before = actor_id(&server, worker).expect("worker registered");
    server.must_cli(&["debug", "kill", worker]);
    let after = must_eventually(Duration::from_secs(20), "the worker to come back", || {
        actor_id(&server, worker).filter(|id| *id != before)
    });
    assert_ne!(before, after);

    // Let the new worker run several syncs, then check nothing was duplicated or restarted.
    std::thread::sleep(Duration::from_secs(4));
    let pod = server.pod_json("sleeper").unwrap();
    assert_eq!(pod["status"]["phase"], "Running", "status: {pod}");
    let cs = &pod["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["containerID"], container_id);
    assert!(cs["state"]["running"].is_object(), "status: {pod}");
    let containers = server.containers_of(&uid);
    assert_eq!(
        containers.len(),
        1,
        "exactly one container for the pod: {containers:?}"
    );
    assert!(matches!(
        containers[0].state,
        runtime::ContainerState::Running { .. }
    ));
}
