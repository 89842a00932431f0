//! `peer --user NAME [SUBCOMMAND]`: a user's peer process, or one of its subcommands.

use clap::Parser;
use imgcloud::peer::cli::{main as run, PeerArgs};
use imgcloud::setup::init_logging;

fn main() {
    init_logging();
    if let Err(e) = run(PeerArgs::parse()) {
        eprintln!("peer: {e}");
        std::process::exit(1);
    }
}
