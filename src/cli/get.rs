//! `capstan get` and `capstan delete`.

use std::time::Duration;

use api::client::ClientError;
use api::Kind;
use clap::Args;

use super::format::{self, Output};

/// Flags of `capstan get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Kind: pods|pod|po, nodes|node|no, namespaces|namespace|ns.
    kind: String,
    /// Object name (all objects when omitted).
    name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Output>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long, default_value = "")]
    selector: String,
    /// After printing, keep watching and print every change.
    #[arg(short = 'w', long)]
    watch: bool,
}

/// Flags of `capstan delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kind: pod, node, namespace.
    kind: String,
    /// Object name.
    name: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Wait until the object is gone (pods: until their containers stopped).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
    /// How long to wait, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

pub(super) fn parse_kind(s: &str) -> anyhow::Result<Kind> {
    Kind::parse(s).ok_or_else(|| {
        anyhow::anyhow!(
            "the server doesn't have a resource type {s:?} (known: pods, nodes, namespaces)"
        )
    })
}

/// Runs `get`.
pub async fn run(server: &str, a: GetArgs) -> anyhow::Result<()> {
    let kind = parse_kind(&a.kind)?;
    let ns = if !kind.namespaced() || a.all_namespaces {
        String::new()
    } else {
        a.namespace.clone()
    };
    let client = super::connect(server).await?;
    let (objects, resource_version) = match &a.name {
        Some(name) => {
            let obj = client.get(kind, &ns, name).await.map_err(describe)?;
            let rv = obj.metadata().resource_version.clone();
            (vec![obj], rv)
        }
        None => {
            let list = client
                .list_with_version(kind, &ns, &a.selector)
                .await
                .map_err(describe)?;
            (list.items, list.resource_version)
        }
    };
    print_objects(kind, &a, &objects, true)?;
    if !a.watch {
        return Ok(());
    }
    let mut events = client
        .watch(kind, &ns, &a.selector, &resource_version)
        .await
        .map_err(describe)?;
    while let Some(ev) = futures::StreamExt::next(&mut events).await {
        let ev = ev.map_err(describe)?;
        let Some(obj) = ev.object else { continue };
        if a.name.as_ref().is_some_and(|n| *n != obj.metadata().name) {
            continue;
        }
        print_objects(kind, &a, &[obj], false)?;
    }
    Ok(())
}

/// Prints objects in the chosen format; `first` prints the table header (and the
/// "no resources" note) that watch updates leave out.
fn print_objects(
    kind: Kind,
    a: &GetArgs,
    objects: &[api::v1::Object],
    first: bool,
) -> anyhow::Result<()> {
    match a.output {
        Some(Output::Json) => {
            let value = if let (true, [one]) = (a.name.is_some() || !first, objects) {
                api::manifest::to_json_value(one)?
            } else {
                list_value(objects)?
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Some(Output::Yaml) => {
            if a.watch && !first {
                println!("---");
            }
            let value = if let (true, [one]) = (a.name.is_some() || !first, objects) {
                api::manifest::to_json_value(one)?
            } else {
                list_value(objects)?
            };
            print!("{}", serde_yaml_ng::to_string(&value)?);
        }
        wide => {
            if objects.is_empty() && first {
                if kind.namespaced() && !a.all_namespaces {
                    eprintln!("No resources found in {} namespace.", a.namespace);
                } else {
                    eprintln!("No resources found");
                }
                return Ok(());
            }
            let rows = format::table(
                kind,
                objects,
                wide == Some(Output::Wide),
                a.all_namespaces && kind.namespaced(),
            );
            // Watch updates print rows only, as kubectl does.
            format::print_table(&rows[usize::from(!first)..]);
        }
    }
    Ok(())
}

fn list_value(objects: &[api::v1::Object]) -> anyhow::Result<serde_json::Value> {
    let items = objects
        .iter()
        .map(api::manifest::to_json_value)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items }))
}

/// Turns an API error into the message a user should read.
pub(super) fn describe(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::NotFound(m) | ClientError::AlreadyExists(m) | ClientError::Invalid(m) => {
            anyhow::anyhow!("{m}")
        }
        other => anyhow::anyhow!("{other}"),
    }
}

/// Runs `delete`.
pub async fn delete(server: &str, a: DeleteArgs) -> anyhow::Result<()> {
    let kind = parse_kind(&a.kind)?;
    let ns = if kind.namespaced() {
        a.namespace.clone()
    } else {
        String::new()
    };
    let client = super::connect(server).await?;
    let gone = client.delete(kind, &ns, &a.name).await.map_err(describe)?;
    let label = kind.as_str().to_ascii_lowercase();
    println!("{label} \"{}\" deleted", a.name);
    let uid = gone.metadata().uid.clone();
    if a.wait {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
        loop {
            match client.get(kind, &ns, &a.name).await {
                Err(ClientError::NotFound(_)) => break,
                Ok(o) if o.metadata().uid != uid => break,
                Ok(_) | Err(_) if tokio::time::Instant::now() >= deadline => {
                    anyhow::bail!(
                        "timed out after {}s waiting for {label} {:?} to go away",
                        a.timeout,
                        a.name
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}
