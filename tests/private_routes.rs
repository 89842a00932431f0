//! Every private route of a peer (`/api/*`: the gallery's and the CLI's) answers 401 without
//! the login token, with a wrong one and with an empty one, whether it is given as a bearer
//! header or in the URL; and `/api/file` never leaves its folders, token or not. The route
//! list is checked against the peer's router, so a new route cannot be left out.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use support::Cluster;

/// Every `/api` route with its method, and a body where it takes one.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/whoami"),
    ("GET", "/api/online"),
    ("POST", "/api/share"),
    ("POST", "/api/previews"),
    ("POST", "/api/request"),
    ("GET", "/api/requests"),
    ("POST", "/api/approve"),
    ("POST", "/api/deny"),
    ("GET", "/api/images"),
    ("GET", "/api/receipts"),
    ("POST", "/api/view"),
    ("POST", "/api/allow"),
    ("POST", "/api/quota"),
    ("POST", "/api/revoke"),
    ("POST", "/api/rebuild"),
    ("GET", "/api/events"),
    ("GET", "/api/file"),
    ("POST", "/api/upload"),
];

#[test]
fn the_route_list_is_the_peers_router() {
    let source = include_str!("../src/peer/api.rs");
    let routed: Vec<&str> = source
        .split(".route(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|path| path.starts_with("/api/"))
        .collect();
    let listed: Vec<&str> = ROUTES.iter().map(|(_, path)| *path).collect();
    assert_eq!(
        routed, listed,
        "tests/private_routes.rs must list every /api route"
    );
}

#[test]
fn every_private_route_answers_401_without_the_right_token_and_files_stay_in_their_folders() {
    let cluster = Cluster::start(3, &[]);
    cluster
        .wait_agreed(Duration::from_secs(15))
        .expect("the cluster agrees on a coordinator");
    let alice = cluster.peer("alice", "alice's password", &[]);
    let addr = alice.addr.clone().expect("alice's peer came online");
    let url = cluster.gallery_url(&alice, "alice's password");
    let token = url.split("token=").nth(1).unwrap().to_string();
    // The token with its last digit changed (it was set to '0', which is the token itself
    // once in 16 runs: such a run saw a "wrong" token let in).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &token[..token.len() - 1]);
    assert_ne!(wrong, token);
    let base = format!("http://{addr}");

    support::runtime().block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let send = |method: &str, path: &str, bearer: Option<&str>| {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = http.request(method.clone(), format!("{base}{path}"));
            if let Some(bearer) = bearer {
                request = request.bearer_auth(bearer);
            }
            if method == Method::POST {
                request = request
                    .header("content-type", "application/json")
                    .body(r#"{"owner":"alice","image":"x","id":"x","viewer":"bob","views":1}"#);
            }
            request.send()
        };
        for (method, path) in ROUTES {
            let file_args = "?kind=view&file=x.png";
            let path = if *path == "/api/file" {
                format!("{path}{file_args}")
            } else {
                path.to_string()
            };
            let joiner = if path.contains('?') { '&' } else { '?' };
            let tries = [
                ("no token", path.clone(), None),
                ("a wrong bearer token", path.clone(), Some(wrong.as_str())),
                ("an empty bearer token", path.clone(), Some("")),
                (
                    "a wrong token in the URL",
                    format!("{path}{joiner}token={wrong}"),
                    None,
                ),
                (
                    "an empty token in the URL",
                    format!("{path}{joiner}token="),
                    None,
                ),
                (
                    "a token one character short",
                    path.clone(),
                    Some(&token[1..]),
                ),
            ];
            for (what, path, bearer) in tries {
                let answer = send(method, &path, bearer).await.unwrap();
                let status = answer.status();
                let body = answer.text().await.unwrap_or_default();
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {what}: {body}"
                );
                assert!(
                    body.contains("login token"),
                    "{method} {path} with {what}: {body}"
                );
            }
        }

        // With the token, /api/file serves only plain names inside its folders.
        std::fs::create_dir_all(alice.dir.join("views")).unwrap();
        std::fs::write(alice.dir.join("secret.txt"), "not for the page").unwrap();
        let outside = alice.dir.join("secret.txt");
        let outside = outside.to_str().unwrap();
        for (kind, field, name) in [
            ("view", "file", "../secret.txt"),
            ("view", "file", "..%2Fsecret.txt"),
            ("view", "file", outside),
            ("view", "file", "/etc/passwd"),
            ("view", "file", ".."),
            ("peer-preview", "owner", ".."),
            ("peer-preview", "owner", "../.."),
            ("preview", "id", "../secret"),
            ("copy-preview", "id", "../../secret"),
        ] {
            let file = if field == "owner" {
                "&file=secret.txt"
            } else {
                ""
            };
            let path = format!("/api/file?kind={kind}&{field}={name}{file}");
            let answer = send("GET", &path, Some(&token)).await.unwrap();
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                "GET {path}: {status} {body}"
            );
            assert!(
                !body.contains("not for the page") && !body.contains("root:"),
                "GET {path} leaked: {body}"
            );
        }
        // And the right token does open the API (the refusals above are about the token).
        let answer = send("GET", "/api/whoami", Some(&token)).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let answer = send("GET", &format!("/api/whoami?token={token}"), None)
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    });
    drop(alice);
}
