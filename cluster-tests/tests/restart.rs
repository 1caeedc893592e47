//! Stopping the server and starting it again keeps every object, and a running container
//! survives the agent's restart and is re-adopted (not restarted, not duplicated).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{alive, example, must_eventually, Server};

#[test]
fn objects_survive_a_server_restart_and_the_running_container_is_readopted() {
    let mut server = Server::start(false);
    server.must_cli(&["apply", "-f", &example("sleeper-pod.yaml")]);
    let pod = server.must_pod_phase("sleeper", "Running", Duration::from_secs(90));
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let rv_before: i64 = pod["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let containers = server.containers_of(&uid);
    assert_eq!(containers.len(), 1);
    let runtime::ContainerState::Running { pid, .. } = containers[0].state.clone() else {
        panic!("not running: {containers:?}")
    };

    server.stop();
    assert!(alive(pid), "the container must outlive the server");
    server.restart();

    let pod = server.pod_json("sleeper").expect("the pod is still stored");
    assert_eq!(pod["metadata"]["uid"], uid.as_str());
    let rv_after: i64 = pod["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_after >= rv_before);
    let ns = server.must_cli(&["get", "namespaces"]);
    assert!(
        ns.lines().any(|l| l.starts_with("default ")),
        "namespaces: {ns}"
    );

    // Give the new agent time to sync, then check it adopted the container.
    std::thread::sleep(Duration::from_secs(3));
    let pod = server.must_pod_phase("sleeper", "Running", Duration::from_secs(30));
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "status: {pod}"
    );
    let containers = server.containers_of(&uid);
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert!(
        matches!(containers[0].state, runtime::ContainerState::Running { pid: p, .. } if p == pid)
    );

    // The re-adopted container is still managed: deleting the pod stops it.
    server.must_cli(&["delete", "pod", "sleeper", "--timeout", "60"]);
    must_eventually(Duration::from_secs(30), "the container to stop", || {
        (!alive(pid)).then_some(())
    });
    assert!(server.pod_json("sleeper").is_none());
    assert!(server.containers_of(&uid).is_empty());
}
