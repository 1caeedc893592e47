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
    let objects = match &a.name {
        Some(name) => vec![client.get(kind, &ns, name).await.map_err(describe)?],
        None => client
            .list(kind, &ns, &a.selector)
            .await
            .map_err(describe)?,
    };
    match a.output {
        Some(Output::Json) => {
            let value = if a.name.is_some() {
                api::manifest::to_json_value(&objects[0])?
            } else {
                list_value(&objects)?
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Some(Output::Yaml) => {
            let value = if a.name.is_some() {
                api::manifest::to_json_value(&objects[0])?
            } else {
                list_value(&objects)?
            };
            print!("{}", serde_yaml_ng::to_string(&value)?);
        }
        wide => {
            if objects.is_empty() {
                if kind.namespaced() && !a.all_namespaces {
                    eprintln!("No resources found in {} namespace.", a.namespace);
                } else {
                    eprintln!("No resources found");
                }
                return Ok(());
            }
            let rows = format::table(
                kind,
                &objects,
                wide == Some(Output::Wide),
                a.all_namespaces && kind.namespaced(),
            );
            format::print_table(&rows);
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
