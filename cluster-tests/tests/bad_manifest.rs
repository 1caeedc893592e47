//! Bad manifests are refused by the CLI with exit code 1 and a message naming the field, and
//! nothing is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cluster_tests::Server;

fn apply_text(server: &Server, text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let out = server.cli(&["apply", "-f", path.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_manifests_exit_1_name_the_field_and_store_nothing() {
    let server = Server::start(false);
    let cases = [
        (
            "missing image",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  containers:\n  - name: c\n",
            "spec.containers[0].image",
        ),
        (
            "invalid name",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Hello_World}\nspec:\n  containers:\n  - {name: c, image: busybox}\n",
            "metadata.name",
        ),
        ("unknown kind", "apiVersion: v1\nkind: Pood\nmetadata: {name: x}\n", "kind"),
        (
            "unknown field",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: typo}\nspec:\n  containers:\n  - {name: c, imagee: busybox}\n",
            "spec.containers[0].imagee",
        ),
        (
            "one bad document among good ones stores none of them",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec:\n  containers:\n  - {name: c, image: busybox}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - {name: c, image: busybox}\n",
            "spec.restartPolicy",
        ),
    ];
    for (what, text, field) in cases {
        let (code, stderr) = apply_text(&server, text);
        assert_eq!(code, 1, "{what}: exit code; stderr: {stderr}");
        assert!(
            stderr.contains(field),
            "{what}: stderr should name {field}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
    let out = server.cli(&["get", "pods", "-A", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing stored: {list}"
    );
}
