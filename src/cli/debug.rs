//! `capstan debug`: list and kill actors through the debug service (chaos testing).

use actors::node_service::pb::debug_service_client::DebugServiceClient;
use actors::node_service::pb::{KillActorRequest, ListActorsRequest};
use anyhow::Context;
use clap::Subcommand;

/// Debug subcommands.
#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// List registered actors (name and id).
    Actors,
    /// Kill an actor by name, as a crash would.
    Kill {
        /// Actor name, e.g. `pod-worker/default/hello`.
        name: String,
    },
}

/// Runs a debug subcommand.
pub async fn run(server: &str, cmd: DebugCommand) -> anyhow::Result<()> {
    let mut c = DebugServiceClient::connect(server.to_string())
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    match cmd {
        DebugCommand::Actors => {
            let list = c
                .list_actors(ListActorsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            for a in list.actors {
                println!("{}\t{}", a.name, a.id);
            }
        }
        DebugCommand::Kill { name } => {
            let r = c
                .kill_actor(KillActorRequest { name: name.clone() })
                .await
                .map_err(status)?;
            println!("killed {name} ({})", r.into_inner().id);
        }
    }
    Ok(())
}

fn status(s: tonic::Status) -> anyhow::Error {
    if s.code() == tonic::Code::Unimplemented {
        anyhow::anyhow!("the debug service is off; start the server with --enable-debug-service")
    } else {
        anyhow::anyhow!("{}", s.message())
    }
}
