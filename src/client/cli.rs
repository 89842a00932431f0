//! The `client` binary's flags and commands: encrypt and decrypt (through the cluster or in
//! this process), the status table, the users' config, `client ID N` (the seed's run), and the
//! stress test (one process, or spread over worker processes).
//!
//! The cluster flags (`--config`, `--nodes`, `--base-port`) and `--secret` are global: they go
//! before or after any subcommand. Every command returns its exit code or the sentence to print.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::bench::trials::{measure_limit, run_trials, Yardsticks};
use crate::bench::workers::{print_worker_run, run_workers};
use crate::bench::{stress, LoadArgs};
use crate::client::{status_json, status_table, Client};
use crate::codec::cover::DefaultCovers;
use crate::codec::metadata::{ImageMeta, Viewer};
use crate::codec::seal::{resolve_secret, SealKey, SecretSource, DEV_SECRET_WARNING};
use crate::codec::stego::{self, Cover, HideOptions};
use crate::config::{ClusterConfig, DEFAULT_BASE_PORT, DEFAULT_NODES};

/// Client of the imgcloud cluster: encrypt images, decrypt them, and (later) drive load.
#[derive(Debug, Parser)]
#[command(name = "client", version, about)]
pub struct ClientArgs {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    key: KeyArgs,
}

/// The positional form `client ID N`: client ID sends N encryption requests of the built-in
/// test image through the cluster, prints each result and a summary.
#[derive(Debug, Args)]
struct SeedArgs {
    /// Client id (names its requests).
    id: Option<u64>,
    /// Number of encryption requests to send.
    requests: Option<u32>,
    /// Image to send instead of the built-in test image.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Do not decrypt and check each reply.
    #[arg(long)]
    no_verify: bool,
}

/// Which cluster to talk to: global flags, taken before or after any subcommand.
#[derive(Debug, Args, Clone)]
struct ClusterArgs {
    /// TOML cluster configuration naming the nodes (and the secret).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Size of the default loopback cluster (without --config).
    #[arg(long, default_value_t = DEFAULT_NODES, global = true)]
    nodes: u32,
    /// Protocol port of node 1 in the default loopback cluster; node i uses BASE+i-1, HTTP 1000 above.
    #[arg(long, default_value_t = DEFAULT_BASE_PORT, global = true)]
    base_port: u16,
}

impl ClusterArgs {
    fn load(&self) -> Result<ClusterConfig, String> {
        match &self.config {
            Some(path) => ClusterConfig::load(path).map_err(|e| e.to_string()),
            None => Ok(ClusterConfig {
                nodes: ClusterConfig::local_nodes(self.nodes, self.base_port),
                ..Default::default()
            }),
        }
    }

    /// The same flags, for a child process.
    fn flags(&self) -> Vec<OsString> {
        let mut flags: Vec<OsString> = vec![
            "--nodes".into(),
            self.nodes.to_string().into(),
            "--base-port".into(),
            self.base_port.to_string().into(),
        ];
        if let Some(path) = &self.config {
            flags.extend(["--config".into(), path.into()]);
        }
        flags
    }

    /// The configuration file's, if one was given (for its secret).
    fn given(&self) -> Result<Option<ClusterConfig>, String> {
        self.config.as_ref().map(|_| self.load()).transpose()
    }
}

/// The client's subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Hide a secret image and its access list inside a cover; writes a PNG.
    Encrypt(EncryptArgs),
    /// Reveal the secret image and access list hidden in an encrypted PNG.
    Decrypt(DecryptArgs),
    /// Print one table of every node's status.
    Status {
        /// Print every node's status as JSON (`{"node", "http", "status"}` or `"error"`).
        #[arg(long)]
        json: bool,
    },
    /// Print the configuration to give users' peers: the nodes' addresses without the secret.
    UserConfig,
    /// Stress-test a running cluster: many clients, verified replies, a report and a plot.
    Stress(StressArgs),
    /// One client process of `stress --client-processes` (prints one line per request).
    #[command(hide = true)]
    StressWorker(WorkerArgs),
}

/// Flags of `client stress`.
#[derive(Debug, Args)]
struct StressArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Spread the clients over this many OS processes.
    #[arg(long, value_name = "P", default_value_t = 1)]
    client_processes: usize,
}

/// Flags of the hidden `client stress-worker`.
#[derive(Debug, Args)]
struct WorkerArgs {
    /// Id of this process's first client.
    #[arg(long)]
    first_client: u64,
    #[command(flatten)]
    load: LoadArgs,
}

/// Flags of `client encrypt`.
#[derive(Debug, Args)]
struct EncryptArgs {
    /// The secret image to hide (any format: PNG, JPEG, GIF, BMP, TIFF, WebP, ...).
    #[arg(value_name = "SECRET")]
    secret_image: PathBuf,
    /// The owner's user name.
    #[arg(long)]
    owner: String,
    /// A viewer and their view quota, as NAME=QUOTA (repeatable), e.g. --viewer bob=5.
    #[arg(long = "viewer", value_name = "NAME=QUOTA")]
    viewers: Vec<Viewer>,
    /// The cover image to hide it in (default: the built-in landscape, sized to fit).
    #[arg(long)]
    cover: Option<PathBuf>,
    /// Low bits per colour sample, 1 or 2 (default: the fewest that fit).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    bits: Option<u8>,
    /// Encrypt in this process, without the cluster (the offline codec path).
    #[arg(long)]
    local: bool,
    /// Where to write the encrypted PNG.
    #[arg(short, long, value_name = "OUT.png")]
    output: PathBuf,
}

/// Flags of `client decrypt`.
#[derive(Debug, Args)]
struct DecryptArgs {
    /// The encrypted PNG.
    input: PathBuf,
    /// Where to write the secret image (default: INPUT.secret.EXT, EXT from the secret's format).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// The cluster secret: a global flag, taken before or after any subcommand.
#[derive(Debug, Args, Clone)]
struct KeyArgs {
    /// Cluster secret (else env IMGCLOUD_SECRET, else --config's, else the built-in development
    /// secret).
    #[arg(long, global = true)]
    secret: Option<String>,
}

/// Runs the command `cli` names; returns the exit code (a failure's sentence printed).
pub fn main(cli: ClientArgs) -> ExitCode {
    let (cluster, key) = (&cli.cluster, cli.key.clone());
    let result = match cli.command {
        Some(Command::Encrypt(args)) => encrypt(args, cluster, key),
        Some(Command::Decrypt(args)) => decrypt(args, cluster, key),
        Some(Command::Status { json }) => status(cluster, json),
        Some(Command::UserConfig) => user_config(cluster),
        Some(Command::Stress(args)) => stress_command(args, cluster, key),
        Some(Command::StressWorker(args)) => stress_worker(args, cluster, key),
        None => seed(cli.seed, cluster, key),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("client: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Derives the seal key from the resolved cluster secret, with a cluster config's secret
/// ranked between the environment and the built-in development secret (warning on the latter).
fn seal_key_for(args: KeyArgs, config: Option<&ClusterConfig>) -> SealKey {
    SealKey::from_secret(resolve_secret_for(args.secret, config).as_bytes())
}

/// The cluster secret: flag, environment, config file, built-in (with a warning), in that order.
fn resolve_secret_for(flag: Option<String>, config: Option<&ClusterConfig>) -> String {
    let (secret, source) = resolve_secret(flag);
    match config.filter(|c| !c.secret.is_empty()) {
        Some(c) if source == SecretSource::Development => c.secret.clone(),
        _ if source == SecretSource::Development => {
            eprintln!("{DEV_SECRET_WARNING}");
            secret
        }
        _ => secret,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    crate::setup::runtime().map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// `client user-config`: the cluster's configuration for users' peers, on standard output.
fn user_config(cluster: &ClusterArgs) -> Result<ExitCode, String> {
    let config = cluster.load()?;
    print!(
        "# For users' peers: the nodes of the cloud, without its secret.\n{}",
        config.for_users().to_toml()
    );
    Ok(ExitCode::SUCCESS)
}

/// `client status`.
fn status(cluster: &ClusterArgs, json: bool) -> Result<ExitCode, String> {
    let config = cluster.load()?;
    let rows = runtime()?.block_on(crate::watch::cluster_status(&config.nodes));
    if json {
        println!("{}", status_json(&rows));
    } else {
        print!("{}", status_table(&rows));
    }
    let reachable = rows.iter().filter(|(_, r)| r.is_ok()).count();
    Ok(if reachable == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What a stress run needs: the cluster, its secret (for worker processes) and seal key, and
/// the image its requests hide.
fn stress_setup(
    cluster: &ClusterArgs,
    key: KeyArgs,
    load: &LoadArgs,
) -> Result<(ClusterConfig, String, SealKey, Vec<u8>), String> {
    let config = cluster.load()?;
    let secret = resolve_secret_for(key.secret, Some(&config));
    let key = SealKey::from_secret(secret.as_bytes());
    let image = load.image_bytes().map_err(|e| e.to_string())?;
    Ok((config, secret, key, image))
}

/// `client stress`.
fn stress_command(
    args: StressArgs,
    cluster: &ClusterArgs,
    key: KeyArgs,
) -> Result<ExitCode, String> {
    let (config, secret, key, image) = stress_setup(cluster, key, &args.load)?;
    let processes = args.client_processes.max(1);
    let load = &args.load;
    let report = runtime()?.block_on(async {
        let limit_rps = measure_limit(load, &image, &key).await?;
        let config_json = serde_json::json!({
            "clients": load.clients, "requests": load.requests, "client_processes": processes,
            "image": load.image, "verify": !load.no_verify, "trials": load.trials,
            "deadline_s": load.deadline, "nodes": config.nodes,
        });
        let yardsticks = Yardsticks {
            limit_rps,
            baseline_rps: None,
            config: config_json,
        };
        println!(
            "Stressing {} nodes: {} clients x {} requests over {processes} process(es)",
            config.nodes.len(),
            load.clients,
            load.requests
        );
        let (config, key, image, secret) = (&config, &key, &image, &secret);
        run_trials(load, &yardsticks, |t| async move {
            let trial = if processes == 1 {
                let options = load.options(image.clone(), 1);
                stress::trial(&config.nodes, key, &options, Default::default()).await
            } else {
                let program = std::env::current_exe()?;
                let flags = cluster.flags();
                let workers = run_workers(&program, &flags, load, processes, secret);
                stress::trial_with(&config.nodes, workers).await
            }?;
            let took = trial.run.duration.as_secs_f64();
            println!(
                "trial {t}: {} requests in {took:.2} s",
                trial.run.samples.len()
            );
            Ok(trial)
        })
        .await
    });
    let report = report.map_err(|e| e.to_string())?;
    Ok(if report.summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `client stress-worker`: one process's share of a spread stress test.
fn stress_worker(
    args: WorkerArgs,
    cluster: &ClusterArgs,
    key: KeyArgs,
) -> Result<ExitCode, String> {
    let (config, _, key, image) = stress_setup(cluster, key, &args.load)?;
    let options = args.load.options(image, args.first_client);
    let run = runtime()?
        .block_on(stress::run(
            &config.nodes,
            &key,
            &options,
            Default::default(),
        ))
        .map_err(|e| e.to_string())?;
    print_worker_run(&run);
    Ok(ExitCode::SUCCESS)
}

/// `client ID N`.
fn seed(args: SeedArgs, cluster: &ClusterArgs, key: KeyArgs) -> Result<ExitCode, String> {
    let (Some(id), Some(count)) = (args.id, args.requests) else {
        return Err("usage: client ID N (or a subcommand; see --help)".into());
    };
    let config = cluster.load()?;
    let key = seal_key_for(key, Some(&config));
    let image = match &args.image {
        Some(path) => read(path)?,
        None => crate::SAMPLE_IMAGE.to_vec(),
    };
    runtime()?.block_on(async move {
        let client = Client::connect(id, &config.nodes).await.map_err(|e| e.to_string())?;
        println!("client {id}: {} of {} nodes connected; sending {count} requests", client.connected(), config.nodes.len());
        let mut per_node = std::collections::BTreeMap::new();
        let (mut ok, mut failed, mut total_ms) = (0u32, 0u32, 0f64);
        for n in 1..=count {
            let started = std::time::Instant::now();
            let result = client.encrypt(image.clone(), None, &format!("client{id}"), vec![]).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match result {
                Ok(reply) => {
                    let verdict = if args.no_verify {
                        "not verified".to_string()
                    } else {
                        match stego::decrypt_image(&reply.png, &key) {
                            Ok((_, secret)) if secret == image => "verified".to_string(),
                            Ok(_) => "WRONG CONTENT".to_string(),
                            Err(e) => format!("does not decrypt: {e}"),
                        }
                    };
                    let good = args.no_verify || verdict == "verified";
                    if good { ok += 1 } else { failed += 1 }
                    total_ms += ms;
                    *per_node.entry(reply.served_by).or_insert(0u32) += 1;
                    println!("request {n}/{count} ({}): served by node {} in {ms:.1} ms, {} bytes, {verdict}", reply.id, reply.served_by, reply.png.len());
                }
                Err(e) => {
                    failed += 1;
                    println!("request {n}/{count}: FAILED after {ms:.1} ms: {e}");
                }
            }
        }
        let served: Vec<String> = per_node.iter().map(|(node, c)| format!("node {node}: {c}")).collect();
        println!("summary: {ok} succeeded, {failed} failed, average {:.1} ms; served by {}", if ok > 0 { total_ms / f64::from(ok) } else { 0.0 }, served.join(", "));
        if client.duplicates() > 0 {
            println!("duplicate replies dropped: {}", client.duplicates());
        }
        if client.late() > 0 {
            println!("late replies dropped: {}", client.late());
        }
        if client.retries() > 0 {
            println!("sent again after every node refused them for now: {}", client.retries());
        }
        Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

/// Reads a whole file, with its path in the error.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Writes a whole file, with its path in the error.
fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `client encrypt`.
fn encrypt(args: EncryptArgs, cluster: &ClusterArgs, key: KeyArgs) -> Result<ExitCode, String> {
    if !args.local {
        return encrypt_remote(args, cluster);
    }
    let key = seal_key_for(key, cluster.given()?.as_ref());
    let meta = ImageMeta::new(args.owner, args.viewers).map_err(|e| e.to_string())?;
    let secret = read(&args.secret_image)?;
    let covers = DefaultCovers::new();
    let cover_bytes = args.cover.as_deref().map(read).transpose()?;
    let cover = match &cover_bytes {
        Some(bytes) => Cover::Image(bytes),
        None => Cover::Default(&covers),
    };
    let options = HideOptions {
        bits: args.bits,
        ..Default::default()
    };
    let png = stego::encrypt_image_with(&secret, cover, &meta, &key, options)
        .map_err(|e| e.to_string())?;
    write(&args.output, &png)?;
    println!(
        "encrypted {} ({} bytes) into {} ({} bytes), image id {}",
        args.secret_image.display(),
        secret.len(),
        args.output.display(),
        png.len(),
        meta.image_id
    );
    Ok(ExitCode::SUCCESS)
}

/// `client encrypt` through the cluster.
fn encrypt_remote(args: EncryptArgs, cluster: &ClusterArgs) -> Result<ExitCode, String> {
    if args.bits.is_some() {
        return Err(
            "--bits applies to --local only; the cluster picks the fewest bits that fit".into(),
        );
    }
    let config = cluster.load()?;
    let secret = read(&args.secret_image)?;
    let cover = args.cover.as_deref().map(read).transpose()?;
    ImageMeta::new(args.owner.clone(), args.viewers.clone()).map_err(|e| e.to_string())?;
    let reply = runtime()?.block_on(async {
        let client = Client::connect(rand::random::<u16>().into(), &config.nodes).await?;
        client
            .encrypt(secret.clone(), cover, &args.owner, args.viewers.clone())
            .await
    });
    let reply = reply.map_err(|e| e.to_string())?;
    write(&args.output, &reply.png)?;
    println!(
        "encrypted {} ({} bytes) into {} ({} bytes) through the cluster: served by node {}",
        args.secret_image.display(),
        secret.len(),
        args.output.display(),
        reply.png.len(),
        reply.served_by
    );
    Ok(ExitCode::SUCCESS)
}

/// `client decrypt`.
fn decrypt(args: DecryptArgs, cluster: &ClusterArgs, key: KeyArgs) -> Result<ExitCode, String> {
    let key = seal_key_for(key, cluster.given()?.as_ref());
    let png = read(&args.input)?;
    let (meta, secret) = stego::decrypt_image(&png, &key).map_err(|e| e.to_string())?;
    let output = args.output.unwrap_or_else(|| {
        let ext = stego::image_extension(&secret).unwrap_or("bin");
        args.input.with_extension(format!("secret.{ext}"))
    });
    write(&output, &secret)?;
    println!("owner:    {}", meta.owner);
    if meta.viewers.is_empty() {
        println!("viewers:  (none)");
    }
    for (i, viewer) in meta.viewers.iter().enumerate() {
        let label = if i == 0 { "viewers:" } else { "" };
        println!("{label:<9} {} ({} views left)", viewer.name, viewer.quota);
    }
    println!("image id: {}", meta.image_id);
    println!("version:  {}", meta.version);
    println!("secret:   {} ({} bytes)", output.display(), secret.len());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        ClientArgs::command().debug_assert();
    }
}
