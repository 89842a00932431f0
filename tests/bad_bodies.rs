//! No handler panics on a bad body: every POST route of a node (`/share`, `/grant`, `/view`,
//! `/users/op`, `/query`, `/encrypt`) and of a peer (`/api/*` with the login token, `/p2p`)
//! gets empty, garbage, wrong-type and oversized bodies, and must answer each with a 4xx and a
//! JSON error. A panicking handler task would not end the process (axum catches nothing, tokio
//! drops the connection), so `/status` alone proves nothing: the nodes' logs and the peer's
//! standard error are read for "panicked" afterwards.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use imgcloud::node::http::{MAX_SHARING_BYTES, MAX_UPLOAD_BYTES};
use imgcloud::peer::p2p::MAX_MESSAGE_BYTES;
use support::Cluster;

/// One body to send: a name, its content type, its bytes.
type Body = (&'static str, &'static str, Vec<u8>);

/// The bad bodies every route gets (the oversized one per route, below).
fn bad_bodies() -> Vec<Body> {
    let octets = "application/octet-stream";
    let json = "application/json";
    let mut noise = vec![0u8; 4096];
    let mut x = 0x9e37_79b9u32;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    vec![
        ("an empty body", octets, Vec::new()),
        ("an empty JSON body", json, Vec::new()),
        ("random bytes", octets, noise.clone()),
        ("random bytes as JSON", json, noise),
        (
            "a JSON object of the wrong shape",
            json,
            br#"{"user": 5, "op": []}"#.to_vec(),
        ),
        ("a JSON array", json, b"[1, 2, 3]".to_vec()),
        ("JSON sent as octets", octets, br#"{"image": "x"}"#.to_vec()),
        ("text", "text/plain", b"hello".to_vec()),
        (
            "a postcard length bomb",
            octets,
            [vec![0x01, b'a'], vec![0xff; 9], vec![0x01]].concat(),
        ),
        (
            "a multipart head with no parts",
            "multipart/form-data; boundary=X",
            b"--X--\r\n".to_vec(),
        ),
    ]
}

/// POSTs `body` to `addr` + `path`; the status and the body of the answer.
fn post(addr: SocketAddr, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    support::runtime().block_on(async {
        match reqwest::Client::new()
            .post(format!("http://{addr}{path}"))
            .header("content-type", content_type)
            .body(body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    })
}

/// Sends every bad body, and bodies a byte over `limit` (declared, and chunked), to `path`;
/// each must get a 4xx with a JSON error.
fn refuses_bad_bodies(addr: SocketAddr, path: &str, limit: usize) {
    for (what, content_type, body) in bad_bodies() {
        let (status, answer) = post(addr, path, content_type, body);
        assert!(
            (400..500).contains(&status),
            "{path}, {what}: {status} {answer}"
        );
        let error: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|_| panic!("{path}, {what}: not JSON: {answer}"));
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}, {what}: {answer}"
        );
    }
    for chunked in [false, true] {
        let status = over_limit(addr, path, limit, chunked);
        // 413, or another refusal the route makes before the body (400 for a JSON route
        // sent octets).
        assert!(
            status.is_some_and(|s| (400..500).contains(&s)),
            "{path}, a body over {limit} bytes (chunked: {chunked}): {status:?}"
        );
    }
}

/// POSTs a body of `limit + 1` bytes, declared in `Content-Length` (only its first bytes are
/// sent: a refusal must not wait for the rest) or chunked (streamed while the answer is read);
/// the answer's status.
fn over_limit(addr: SocketAddr, path: &str, limit: usize, chunked: bool) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let length = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", limit + 1)
    };
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n{length}\r\n\r\n"
    )
    .ok()?;
    let mut writer = stream.try_clone().ok()?;
    let sender = std::thread::spawn(move || {
        if !chunked {
            let _ = writer.write_all(&[0u8; 4096]);
            return;
        }
        let block = vec![7u8; 1 << 20];
        for _ in 0..=limit >> 20 {
            let sent = write!(writer, "{:x}\r\n", block.len())
                .and_then(|_| writer.write_all(&block))
                .and_then(|_| writer.write_all(b"\r\n"));
            if sent.is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let mut head = [0u8; 12];
    let status = stream
        .read_exact(&mut head)
        .ok()
        .and_then(|_| String::from_utf8_lossy(&head[9..12]).parse().ok());
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    status
}

#[test]
fn no_route_of_a_node_or_a_peer_panics_on_a_bad_body() {
    let cluster = Cluster::start(3, &[]);
    cluster
        .wait_agreed(Duration::from_secs(30))
        .expect("the cluster agrees");
    let alice = cluster.peer("alice", "alice's password", &[]);
    let alice_addr: SocketAddr = alice.addr.clone().expect("alice online").parse().unwrap();
    let url = cluster.gallery_url(&alice, "alice's password");
    let token = url.split("token=").nth(1).unwrap().to_string();

    let node = cluster.config.node(1).unwrap().http;
    for (path, limit) in [
        ("/users/op", MAX_UPLOAD_BYTES),
        ("/query", MAX_UPLOAD_BYTES),
        ("/encrypt", MAX_UPLOAD_BYTES),
        ("/share", MAX_SHARING_BYTES),
        ("/grant", MAX_SHARING_BYTES),
        ("/view", MAX_SHARING_BYTES),
    ] {
        refuses_bad_bodies(node, path, limit);
    }
    refuses_bad_bodies(alice_addr, "/p2p", MAX_MESSAGE_BYTES);
    for route in [
        "share", "previews", "request", "approve", "deny", "view", "allow", "quota", "revoke",
        "upload",
    ] {
        refuses_bad_bodies(
            alice_addr,
            &format!("/api/{route}?token={token}"),
            MAX_MESSAGE_BYTES,
        );
    }

    // Everyone still answers, and nothing panicked on the way.
    for id in cluster.config.ids() {
        assert!(cluster.status(id).is_some(), "node {id} stopped answering");
        let log = cluster.log(id);
        assert!(!log.contains("panicked"), "node {id} panicked:\n{log}");
    }
    let online = support::http_get_within(
        alice_addr,
        &format!("/api/whoami?token={token}"),
        Duration::from_secs(10),
    );
    assert!(online.is_some(), "alice's peer stopped answering");
    let stderr = alice.stderr();
    assert!(
        !stderr.contains("panicked"),
        "alice's peer panicked:\n{stderr}"
    );
}
