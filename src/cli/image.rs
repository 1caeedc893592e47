//! `capstan image`: the node's local image store (pulls from registries, import of OCI archives,
//! a busybox image built from Debian's busybox-static, listing, tagging, removal). Works on the
//! data directory directly, like `ctr images pull` works on containerd's store.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Subcommand;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use runtime::{PullEvent, PullProgress, RegistryAuth, RegistrySettings};

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
    /// Pull an image from a registry (https; plain http for loopback registries or --insecure).
    Pull {
        /// Image reference, e.g. `docker.io/library/busybox:1.36` or `127.0.0.1:5000/app:v1`.
        reference: String,
        /// Registry user name (basic auth); the password is read from stdin.
        #[arg(long, short = 'u', requires = "password_stdin")]
        username: Option<String>,
        /// Read the password (or token) from the first line of stdin.
        #[arg(long, requires = "username")]
        password_stdin: bool,
        /// Reach this reference's registry over plain http.
        #[arg(long)]
        insecure: bool,
        /// The server's data directory.
        #[arg(long, default_value = "./capstan-data")]
        data_dir: PathBuf,
    },
    /// Remove an image name (blobs and unpacked layers stay).
    Rm {
        /// Image reference.
        reference: String,
        /// The server's data directory.
        #[arg(long, default_value = "./capstan-data")]
        data_dir: PathBuf,
    },
    /// Give a local image another name.
    Tag {
        /// Existing image reference.
        source: String,
        /// New name.
        target: String,
        /// The server's data directory.
        #[arg(long, default_value = "./capstan-data")]
        data_dir: PathBuf,
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
    match cmd {
        ImageCommand::Pull {
            reference,
            username,
            password_stdin,
            insecure,
            data_dir,
        } => pull(reference, username, password_stdin, insecure, data_dir).await,
        cmd => tokio::task::spawn_blocking(move || run_blocking(cmd)).await?,
    }
}

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// Progress display: one bar per blob on a terminal, plain lines otherwise.
enum Display {
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
    Lines,
}

impl PullProgress for Display {
    fn event(&self, event: PullEvent) {
        match (self, event) {
            (Display::Lines, PullEvent::Resolved { digest, blobs }) => {
                println!("resolved {} ({} blobs)", short(&digest), blobs.len());
            }
            (Display::Lines, PullEvent::BlobCached { digest }) => {
                println!("{}: already present", short(&digest));
            }
            (Display::Lines, PullEvent::BlobStored { digest }) => {
                println!("{}: downloaded, verified", short(&digest));
            }
            (Display::Lines, PullEvent::BlobProgress { .. }) => {}
            (Display::Bars { multi, bars }, event) => {
                let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    PullEvent::Resolved { blobs, .. } => {
                        let style = ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> ");
                        for (digest, size) in blobs {
                            let bar = multi.add(ProgressBar::new(size));
                            bar.set_style(style.clone());
                            bar.set_prefix(short(&digest));
                            bars.insert(digest, bar);
                        }
                    }
                    PullEvent::BlobCached { digest } => {
                        if let Some(b) = bars.get(&digest) {
                            b.finish_with_message("already present");
                        }
                    }
                    PullEvent::BlobProgress { digest, done } => {
                        if let Some(b) = bars.get(&digest) {
                            b.set_position(done);
                        }
                    }
                    PullEvent::BlobStored { digest } => {
                        if let Some(b) = bars.get(&digest) {
                            b.finish_with_message("verified");
                        }
                    }
                }
            }
        }
    }
}

async fn pull(
    reference: String,
    username: Option<String>,
    password_stdin: bool,
    insecure: bool,
    data_dir: PathBuf,
) -> anyhow::Result<()> {
    let auth = match (username, password_stdin) {
        (Some(username), true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            let password = line.trim_end_matches(['\r', '\n']).to_owned();
            anyhow::ensure!(
                !password.is_empty(),
                "--password-stdin: stdin held no password"
            );
            RegistryAuth::Basic { username, password }
        }
        _ => RegistryAuth::Anonymous,
    };
    let mut settings = RegistrySettings::default();
    if insecure {
        let registry = runtime::registry::registry_of(&reference)
            .with_context(|| format!("invalid image reference {reference:?}"))?;
        settings.insecure_registries.push(registry);
    }
    let rt = open(&data_dir)?;
    let display: Arc<Display> = Arc::new(if std::io::stdout().is_terminal() {
        Display::Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    } else {
        Display::Lines
    });
    let progress: Arc<dyn PullProgress> = display.clone();
    let info = rt
        .puller(settings)
        .pull_with_progress(&reference, &auth, Some(progress))
        .await?;
    if let Display::Bars { multi, .. } = display.as_ref() {
        let _ = multi.clear();
    }
    println!("pulled {} {} ({} bytes)", info.name, info.digest, info.size);
    Ok(())
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
        ImageCommand::Pull { .. } => {
            anyhow::bail!("pull runs asynchronously");
        }
        ImageCommand::Rm {
            reference,
            data_dir,
        } => {
            let info = open(&data_dir)?.images().remove(&reference)?;
            println!("removed {} ({})", info.name, short(&info.digest));
        }
        ImageCommand::Tag {
            source,
            target,
            data_dir,
        } => {
            let info = open(&data_dir)?.images().tag(&source, &target)?;
            println!("tagged {} ({})", info.name, short(&info.digest));
        }
        ImageCommand::Ls { data_dir } => {
            let rt = open(&data_dir)?;
            println!("{:<40} {:<20} SIZE", "IMAGE", "DIGEST");
            for i in rt.images().list()? {
                println!("{:<40} {:<20} {}", i.name, short(&i.digest), i.size);
            }
        }
    }
    Ok(())
}
