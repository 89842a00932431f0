//! `cloud-node ID`: runs one node of the cluster until Ctrl-C or SIGTERM.

use clap::Parser;
use imgcloud::node::cli::{run_node, NodeArgs};
use imgcloud::setup::init_logging;

fn main() {
    init_logging();
    if let Err(e) = run_node(NodeArgs::parse()) {
        eprintln!("cloud-node: {e}");
        std::process::exit(1);
    }
}
