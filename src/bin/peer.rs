//! `peer --user NAME [SUBCOMMAND]`: a user's peer process, or one of its subcommands.

use clap::Parser;
use imgcloud::cli::init_logging;
use imgcloud::peer::cli::{main as run, PeerArgs};

fn main() {
    init_logging();
    if let Err(e) = run(PeerArgs::parse()) {
        eprintln!("peer: {e}");
        std::process::exit(1);
    }
}
