//! `capstan apply -f`: decode every manifest first (so a bad one stores nothing), validate,
//! then create or update each object.

use std::path::{Path, PathBuf};

use anyhow::Context;
use api::client::ClientError;
use api::v1::Object;
use clap::Args;

/// Flags of `capstan apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Manifest file or directory (`-` for standard input); repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

fn manifest_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("{}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        files.sort();
        return Ok(files);
    }
    Ok(vec![path.to_path_buf()])
}

fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Decodes, defaults and validates every object of every file; fails on the first bad one.
fn load(files: &[PathBuf]) -> anyhow::Result<Vec<Object>> {
    let mut objects = Vec::new();
    for f in files {
        for path in manifest_files(f)? {
            let text = read(&path)?;
            let decoded = api::manifest::decode(&text).map_err(|e| {
                anyhow::anyhow!("error validating {:?}: {e}", path.display().to_string())
            })?;
            for mut obj in decoded {
                api::defaults::apply(&mut obj);
                let errors = api::validation::validate(&obj);
                if !errors.is_empty() {
                    let kind = obj.kind().map(|k| k.as_str()).unwrap_or("Object");
                    let details: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    anyhow::bail!(
                        "The {kind} {:?} is invalid: {}",
                        obj.metadata().name,
                        details.join("; ")
                    );
                }
                objects.push(obj);
            }
        }
    }
    Ok(objects)
}

/// Runs `apply`.
pub async fn run(server: &str, a: ApplyArgs) -> anyhow::Result<()> {
    let objects = load(&a.files)?;
    if objects.is_empty() {
        anyhow::bail!("no objects passed to apply");
    }
    let client = super::connect(server).await?;
    for obj in objects {
        let kind = obj
            .kind()
            .ok_or_else(|| anyhow::anyhow!("kind: Required value"))?;
        let meta = obj.metadata().clone();
        let label = format!("{}/{}", kind.as_str().to_ascii_lowercase(), meta.name);
        let ns = if kind.namespaced() {
            meta.namespace.clone()
        } else {
            String::new()
        };
        match client.get(kind, &ns, &meta.name).await {
            Err(ClientError::NotFound(_)) => {
                client.create(obj).await.map_err(super::get::describe)?;
                println!("{label} created");
            }
            Ok(existing) => {
                let obj = keep_server_set_fields(&existing, obj);
                if same_desired_state(&existing, &obj) {
                    println!("{label} unchanged");
                    continue;
                }
                let mut next = obj;
                next.metadata_mut().resource_version = existing.metadata().resource_version.clone();
                client.update(next).await.map_err(super::get::describe)?;
                println!("{label} configured");
            }
            Err(e) => return Err(super::get::describe(e)),
        }
    }
    Ok(())
}

/// True when applying `wanted` over `existing` would change nothing the user controls
/// (spec, labels, annotations).
fn same_desired_state(existing: &Object, wanted: &Object) -> bool {
    let (a, b) = (existing.metadata(), wanted.metadata());
    existing.desired_state_bytes() == wanted.desired_state_bytes()
        && a.labels == b.labels
        && a.annotations == b.annotations
}

/// Fields the server fills in after creation (a pod's `nodeName` from its Binding) are kept
/// when the manifest leaves them out, so re-applying an unchanged manifest changes nothing.
fn keep_server_set_fields(existing: &Object, mut wanted: Object) -> Object {
    use api::v1::object::Kind as K;
    if let (Some(K::Pod(cur)), Some(K::Pod(next))) = (existing.kind.as_ref(), wanted.kind.as_mut())
    {
        if let (Some(cs), Some(ns)) = (cur.spec.as_ref(), next.spec.as_mut()) {
            if ns.node_name.is_empty() {
                ns.node_name = cs.node_name.clone();
            }
        }
    }
    // A Service's ClusterIP and NodePorts are allocated by the server.
    if let (Some(K::Service(cur)), Some(K::Service(next))) =
        (existing.kind.as_ref(), wanted.kind.as_mut())
    {
        if let (Some(cs), Some(ns)) = (cur.spec.as_ref(), next.spec.as_mut()) {
            if ns.cluster_ip.is_empty() {
                ns.cluster_ip = cs.cluster_ip.clone();
                ns.cluster_ips = cs.cluster_ips.clone();
            }
            for p in ns.ports.iter_mut().filter(|p| p.node_port == 0) {
                if let Some(c) = cs
                    .ports
                    .iter()
                    .find(|c| c.port == p.port && c.protocol == p.protocol)
                {
                    p.node_port = c.node_port;
                }
            }
        }
    }
    wanted
}
