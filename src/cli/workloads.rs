//! `capstan scale` and `capstan rollout status`: change a workload's `spec.replicas`, and wait
//! for a Deployment's rollout to finish, reporting progress as kubectl does. Reads and writes
//! only through the API client; the controllers do the work.

use std::time::{Duration, Instant};

use api::client::{Client, ClientError};
use api::v1::{self, Object};
use api::Kind;

use super::get::{describe, parse_kind};

/// Arguments of `capstan scale`.
#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// `TYPE/NAME` (e.g. `deployment/web`) or `TYPE` followed by `NAME`.
    target: String,
    /// Object name, when `target` is only the type.
    name: Option<String>,
    /// The new number of replicas.
    #[arg(long)]
    replicas: i32,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
}

/// Subcommands of `capstan rollout`.
#[derive(clap::Subcommand, Debug)]
pub enum RolloutCommand {
    /// Wait until a Deployment's rollout finished.
    Status(RolloutStatusArgs),
}

/// Arguments of `capstan rollout status`.
#[derive(clap::Args, Debug)]
pub struct RolloutStatusArgs {
    /// `deployment/NAME` or `deployment` followed by `NAME`.
    target: String,
    /// Object name, when `target` is only the type.
    name: Option<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn target(t: &str, name: Option<&str>) -> anyhow::Result<(Kind, String)> {
    let (kind, name) = match (t.split_once('/'), name) {
        (Some((k, n)), None) => (k, n),
        (None, Some(n)) => (t, n),
        _ => anyhow::bail!("give the object as TYPE/NAME or TYPE NAME, e.g. deployment/web"),
    };
    Ok((parse_kind(kind)?, name.to_string()))
}

fn set_replicas(obj: &mut Object, n: i32) -> anyhow::Result<()> {
    if let Some(d) = obj.as_typed_mut::<v1::Deployment>() {
        d.spec.get_or_insert_with(Default::default).replicas = Some(n);
    } else if let Some(rs) = obj.as_typed_mut::<v1::ReplicaSet>() {
        rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
    } else if let Some(s) = obj.as_typed_mut::<v1::StatefulSet>() {
        s.spec.get_or_insert_with(Default::default).replicas = Some(n);
    } else {
        anyhow::bail!("only deployments, replicasets and statefulsets can be scaled");
    }
    Ok(())
}

/// Runs `capstan scale`: sets `spec.replicas`, re-reading and retrying on a conflict.
pub async fn scale(server: &str, a: ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.replicas >= 0, "--replicas must be 0 or more");
    let (kind, name) = target(&a.target, a.name.as_deref())?;
    let client = super::connect(server).await?;
    for _ in 0..5 {
        let mut obj = client
            .get(kind, &a.namespace, &name)
            .await
            .map_err(describe)?;
        set_replicas(&mut obj, a.replicas)?;
        match client.update(obj).await {
            Ok(_) => {
                println!("{}/{name} scaled", kind.as_str().to_ascii_lowercase());
                return Ok(());
            }
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(describe(e)),
        }
    }
    anyhow::bail!("{name} kept changing while scaling; try again")
}

/// Runs `capstan rollout`.
pub async fn rollout(server: &str, c: RolloutCommand) -> anyhow::Result<()> {
    match c {
        RolloutCommand::Status(a) => status(server, a).await,
    }
}

/// kubectl's rollout status message, and whether the rollout is done.
fn progress(name: &str, d: &v1::Deployment) -> anyhow::Result<(String, bool)> {
    let generation = d.metadata.as_ref().map(|m| m.generation).unwrap_or(0);
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    if s.observed_generation < generation {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    if s.conditions
        .iter()
        .any(|c| c.r#type == "Progressing" && c.reason == "ProgressDeadlineExceeded")
    {
        anyhow::bail!("deployment {name:?} exceeded its progress deadline");
    }
    let waiting = format!("Waiting for deployment {name:?} rollout to finish: ");
    if s.updated_replicas < desired {
        return Ok((
            format!(
                "{waiting}{} out of {desired} new replicas have been updated...",
                s.updated_replicas
            ),
            false,
        ));
    }
    if s.replicas > s.updated_replicas {
        return Ok((
            format!(
                "{waiting}{} old replicas are pending termination...",
                s.replicas - s.updated_replicas
            ),
            false,
        ));
    }
    if s.available_replicas < s.updated_replicas {
        return Ok((
            format!(
                "{waiting}{} of {} updated replicas are available...",
                s.available_replicas, s.updated_replicas
            ),
            false,
        ));
    }
    Ok((format!("deployment {name:?} successfully rolled out"), true))
}

async fn status(server: &str, a: RolloutStatusArgs) -> anyhow::Result<()> {
    let (kind, name) = target(&a.target, a.name.as_deref())?;
    anyhow::ensure!(
        kind == Kind::Deployment,
        "rollout status supports deployments only"
    );
    let client: Client = super::connect(server).await?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut last = String::new();
    loop {
        let obj = client
            .get(kind, &a.namespace, &name)
            .await
            .map_err(describe)?;
        let d = obj
            .into_typed::<v1::Deployment>()
            .ok_or_else(|| anyhow::anyhow!("{name} is not a deployment"))?;
        let (msg, done) = progress(&name, &d)?;
        if msg != last {
            println!("{msg}");
            last = msg;
        }
        if done {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {}s waiting for the rollout of {name}",
            a.timeout
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
