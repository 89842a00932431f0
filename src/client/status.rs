//! Reading the cluster's state: every node's `/status`, and the table `client status` prints.

use super::*;

/// One table of every node's status, as `client status` prints it.
pub fn status_table(rows: &[(NodeAddr, Result<crate::watch::NodeStatus>)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<11} {:>5} {:>11} {:>7} {:>8} {:>8} {:>9}  {:<24} DIGEST",
        "NODE", "STATE", "EPOCH", "COORDINATOR", "LOAD", "SERVED", "IN-FLT", "REQ-LOG", "MEMBERS"
    );
    for (node, result) in rows {
        match result {
            Ok(s) => {
                let c = &s.core;
                let members: Vec<String> = c
                    .members
                    .iter()
                    .map(|p| format!("{}:{}", p.id, p.state))
                    .collect();
                let coordinator = c.coordinator.map_or("-".to_string(), |id| id.to_string());
                let _ = writeln!(
                    out,
                    "{:<5} {:<11} {:>5} {:>11} {:>7.2} {:>8} {:>8} {:>9}  {:<24} {}",
                    node.id,
                    c.state.to_string(),
                    c.epoch,
                    coordinator,
                    c.load,
                    c.served,
                    s.in_flight,
                    c.request_log,
                    members.join(" "),
                    c.digest
                );
            }
            Err(e) => {
                let _ = writeln!(out, "{:<5} {:<11} {e}", node.id, "unreachable");
            }
        }
    }
    out
}

/// Every node's status as `client status --json` prints it: an array of `{"node", "http",
/// "status"}`, or `{"node", "http", "error"}` for a node that could not be read.
pub fn status_json(rows: &[(NodeAddr, Result<crate::watch::NodeStatus>)]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|(node, result)| match result {
            Ok(s) => serde_json::json!({ "node": node.id, "http": node.http, "status": s }),
            Err(e) => {
                serde_json::json!({ "node": node.id, "http": node.http, "error": e.to_string() })
            }
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}
