//! `cloud-node ID`: runs one node of the cluster until Ctrl-C or SIGTERM.

use clap::Parser;
use imgcloud::cli::init_logging;
use imgcloud::node::cli::{run_node, NodeArgs};

fn main() {
    init_logging();
    if let Err(e) = run_node(NodeArgs::parse()) {
        eprintln!("cloud-node: {e}");
        std::process::exit(1);
    }
}
