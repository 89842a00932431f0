//! The `client` binary: user-facing commands. It parses flags and calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use imgcloud::cover::DefaultCovers;
use imgcloud::metadata::{ImageMeta, Viewer};
use imgcloud::seal::{resolve_secret, SealKey, SecretSource, DEV_SECRET_WARNING};
use imgcloud::stego::{self, Cover, HideOptions};

/// Client of the imgcloud cluster: encrypt images, decrypt them, and (later) drive load.
#[derive(Debug, Parser)]
#[command(
    name = "client",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    seed: SeedArgs,
}

/// The positional form `client ID N` (client ID sends N encryption requests).
#[derive(Debug, Args)]
struct SeedArgs {
    /// Client id (positional form `client ID N`, not implemented yet).
    id: Option<u32>,
    /// Number of encryption requests to send (positional form, not implemented yet).
    requests: Option<u32>,
}

/// The client's subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Hide a secret image and its access list inside a cover; writes a PNG.
    Encrypt(EncryptArgs),
    /// Reveal the secret image and access list hidden in an encrypted PNG.
    Decrypt(DecryptArgs),
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
    #[command(flatten)]
    key: KeyArgs,
}

/// Flags of `client decrypt`.
#[derive(Debug, Args)]
struct DecryptArgs {
    /// The encrypted PNG.
    input: PathBuf,
    /// Where to write the secret image (default: INPUT.secret.EXT, EXT from the secret's format).
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
}

/// The cluster secret flag shared by the codec commands.
#[derive(Debug, Args)]
struct KeyArgs {
    /// Cluster secret (else env IMGCLOUD_SECRET, else the built-in development secret).
    #[arg(long)]
    secret: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Encrypt(args)) => encrypt(args),
        Some(Command::Decrypt(args)) => decrypt(args),
        None => {
            let _ = cli.seed;
            eprintln!("client: sending encryption requests (client ID N) is not implemented yet");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("client: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Derives the seal key from the resolved cluster secret, warning on the development secret.
fn seal_key(args: KeyArgs) -> SealKey {
    let (secret, source) = resolve_secret(args.secret);
    if source == SecretSource::Development {
        eprintln!("{DEV_SECRET_WARNING}");
    }
    SealKey::from_secret(secret.as_bytes())
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
fn encrypt(args: EncryptArgs) -> Result<ExitCode, String> {
    if !args.local {
        eprintln!("client: encrypting through the cluster is not implemented yet; use --local");
        return Ok(ExitCode::from(2));
    }
    let key = seal_key(args.key);
    let meta = ImageMeta::new(args.owner, args.viewers).map_err(|e| e.to_string())?;
    let secret = read(&args.secret_image)?;
    let covers = DefaultCovers::new();
    let cover_bytes = args.cover.as_deref().map(read).transpose()?;
    let cover = match &cover_bytes {
        Some(bytes) => Cover::Image(bytes),
        None => Cover::Default(&covers),
    };
    let options = HideOptions { bits: args.bits };
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

/// `client decrypt`.
fn decrypt(args: DecryptArgs) -> Result<ExitCode, String> {
    let key = seal_key(args.key);
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
        Cli::command().debug_assert();
    }
}
