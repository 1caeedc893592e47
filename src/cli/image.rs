//! `capstan image`: the node's local image store (import of OCI archives, a busybox image built
//! from Debian's busybox-static, listing). Works on the data directory directly, like
//! `ctr images import` works on containerd's store.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

/// Image subcommands.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import images from an OCI image layout archive (tar).
    Import {
        /// The archive.
        file: PathBuf,
        /// Name to give the image (default: the archive's ref annotation).
        #[arg(long)]
        name: Option<String>,
        /// The server's data directory.
        #[arg(long, default_value = "./capstan-data")]
        data_dir: PathBuf,
    },
    /// Build a small busybox image archive from a static busybox binary (no registry needed).
    BuildBusybox {
        /// Output archive.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// The static busybox binary (Debian: `apt-get install busybox-static`).
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// Image reference written into the archive.
        #[arg(long, default_value = "busybox:latest")]
        name: String,
    },
    /// List local images.
    Ls {
        /// The server's data directory.
        #[arg(long, default_value = "./capstan-data")]
        data_dir: PathBuf,
    },
}

fn open(data_dir: &std::path::Path) -> anyhow::Result<runtime::Runtime> {
    let exe = std::env::current_exe().context("cannot find the capstan executable")?;
    runtime::Runtime::new(runtime::RuntimeConfig {
        root: data_dir.join("runtime"),
        shim_exe: exe,
    })
    .with_context(|| format!("cannot open the image store in {}", data_dir.display()))
}

/// Runs an image subcommand.
pub async fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(cmd)).await?
}

fn run_blocking(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Import {
            file,
            name,
            data_dir,
        } => {
            let rt = open(&data_dir)?;
            let names = rt
                .images()
                .import_archive(&file, name.as_deref())
                .with_context(|| format!("cannot import {}", file.display()))?;
            for n in names {
                println!("imported {n}");
            }
        }
        ImageCommand::BuildBusybox {
            output,
            busybox,
            name,
        } => {
            runtime::busybox::build_image_archive(&busybox, &output, &name).with_context(|| {
                format!("cannot build a busybox image from {}", busybox.display())
            })?;
            println!("wrote {} ({name})", output.display());
        }
        ImageCommand::Ls { data_dir } => {
            let rt = open(&data_dir)?;
            println!("{:<40} {:<20} SIZE", "IMAGE", "DIGEST");
            for i in rt.images().list()? {
                let short = i
                    .digest
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect::<String>();
                println!("{:<40} {:<20} {}", i.name, short, i.size);
            }
        }
    }
    Ok(())
}
