//! The web pages in a real browser: headless Chromium driven by chromedriver over WebDriver
//! (fantoccini), against real node processes and real peer processes on free ports. Each test
//! starts its own chromedriver and kills it when it ends; every wait polls with a deadline.
//! Screenshots go to `target/tmp/browser/` (`gallery.png`, `dashboard.png`, ...).
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them).

mod support;

use std::future::Future;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::{Cluster, PeerProc};

/// One browser at a time: the machine's cores are shared with the clusters under test.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// How long a page may take to show what a step waits for.
const STEP: Duration = Duration::from_secs(30);

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts chromedriver, or None (with one line on stderr) where chromium or chromedriver is
    /// not installed; with `IMGCLOUD_REQUIRE_BROWSER` set (as `.ci/run` sets it) that is a
    /// failure instead.
    fn start() -> Option<Driver> {
        let installed = ["chromium", "chromedriver"].into_iter().all(|tool| {
            std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).exists()))
        });
        if !installed {
            assert!(
                std::env::var_os("IMGCLOUD_REQUIRE_BROWSER").is_none(),
                "chromium and chromedriver are required here (apt-get install chromium chromium-driver)"
            );
            eprintln!(
                "skipped: the browser tests need chromium and chromedriver on PATH \
                 (apt-get install chromium chromium-driver; .ci/run installs them)"
            );
            return None;
        }
        let port = support::next_free_port();
        // Its own process group, which the Chromium it starts joins: killed whole on drop,
        // whether the test passed, failed or panicked.
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver { child, port };
        let up = support::wait_for(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up.is_some(),
            "chromedriver did not listen on {port} in 20 s"
        );
        Some(driver)
    }

    /// A headless Chromium session.
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        let mut options = json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--hide-scrollbars", "--force-device-scale-factor=1",
            ]
        });
        // Debian's /usr/bin/chromium is a wrapper script; the binary is beside its libraries.
        let binary = PathBuf::from("/usr/lib/chromium/chromium");
        if binary.exists() {
            options["binary"] = json!(binary);
        }
        caps.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session and what to show when a wait on it fails.
struct Scene<'a> {
    browser: Client,
    /// The logs of the processes behind the page (peers, nodes), for a failure's message.
    logs: Box<dyn Fn() -> String + 'a>,
}

impl Scene<'_> {
    /// Calls `probe` every 100 ms until it gives a value or `limit` passes; then panics,
    /// naming `what`, with the page's text, its error lines, a screenshot and the logs, so a
    /// failure far away (a CI run) says where the page stood.
    async fn until<T, F, Fut>(&self, what: &str, limit: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if start.elapsed() >= limit {
                self.fail(&format!("waited {} s for {what}", limit.as_secs()))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Panics with `why` and everything that may explain it.
    async fn fail(&self, why: &str) -> ! {
        let url = self.browser.current_url().await.map(|u| u.to_string());
        let errors = self
            .js(
                "return [...document.querySelectorAll('.error')].filter(e => e.textContent)
                   .map(e => e.id + ': ' + e.textContent).join('\\n');",
            )
            .await;
        let calls = self.js("return (window.__calls || []).join('\\n');").await;
        let shot = self.screenshot("failed").await;
        panic!(
            "{why}\n--- page {url:?}, screenshot {shot:?}\n{}\n--- error lines\n{}\n--- the page's API calls\n{}\n--- logs\n{}",
            self.text().await,
            errors.as_str().unwrap_or_default(),
            calls.as_str().unwrap_or_default(),
            (self.logs)()
        );
    }

    /// Runs `script` (a function body) in the page; its return value.
    async fn js(&self, script: &str) -> Value {
        self.browser
            .execute(script, vec![])
            .await
            .unwrap_or(Value::Null)
    }

    /// Waits for `css` to match an element and clicks it (a real WebDriver click).
    async fn click(&self, what: &str, css: &str) {
        self.until(what, STEP, || async {
            let element = self.browser.find(Locator::Css(css)).await.ok()?;
            element.click().await.ok()
        })
        .await
    }

    /// The visible text of the page.
    async fn text(&self) -> String {
        self.js("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Writes a screenshot of the page to `target/tmp/browser/NAME.png`.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        if let Ok(png) = self.browser.screenshot().await {
            std::fs::write(&path, png).unwrap();
        }
        path
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A photo-like PNG (soft gradients and circles), `w` x `h`.
fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let sun = ((fx - 0.7).powi(2) + (fy - 0.35).powi(2)).sqrt();
        let hill = fy > 0.62 + 0.08 * (fx * 9.0).sin();
        if hill {
            image::Rgb([(40.0 + 60.0 * fx) as u8, (110.0 + 50.0 * fy) as u8, 60])
        } else if sun < 0.12 {
            image::Rgb([255, 214, 90])
        } else {
            let v = 1.0 - fy;
            image::Rgb([
                (250.0 - 120.0 * v) as u8,
                (150.0 + 40.0 * v) as u8,
                (120.0 + 130.0 * v) as u8,
            ])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// `user`'s peer and its gallery URL, as `peer --user USER gallery --json` prints it.
fn peer_with_url(cluster: &Cluster, user: &str) -> (PeerProc, String) {
    let password = format!("{user}'s password");
    let peer = cluster.peer(user, &password, &[]);
    assert!(
        peer.addr.is_some(),
        "{user}'s peer did not come online:\n{}",
        cluster.log(1)
    );
    let url = cluster.gallery_url(&peer, &password);
    let addr = peer.addr.clone().unwrap();
    assert!(
        url.starts_with(&format!("http://{addr}/?token=")),
        "gallery URL {url} is not at {addr}"
    );
    (peer, url)
}

/// Opens `url` and waits for the gallery of `user` to show its lists.
async fn open_gallery(scene: &Scene<'_>, url: &str, user: &str) {
    scene.browser.goto(url).await.unwrap();
    let title = format!("{user}'s gallery");
    scene
        .until(&title, STEP, || async {
            let shown = scene
                .js("return document.title + '|' + !document.getElementById('own').hidden;")
                .await;
            (shown == json!(format!("{title}|true"))).then_some(())
        })
        .await;
    // Every action's call and every failed call, for a failure's message.
    scene
        .js("if (window.__calls) return;
             window.__calls = [];
             const fetch = window.fetch;
             window.fetch = async (path, init) => {
               const method = (init && init.method) || 'GET';
               const what = method + ' ' + String(path).split('?')[0];
               try {
                 const answer = await fetch(path, init);
                 if (method !== 'GET' || !answer.ok) {
                   const body = answer.ok ? '' : ' ' + await answer.clone().text();
                   window.__calls.push(what + ' -> ' + answer.status + body);
                 }
                 return answer;
               } catch (e) {
                 window.__calls.push(what + ' -> ' + e);
                 throw e;
               }
             };")
        .await;
}

/// Waits for alice's viewers list to show `viewer`'s receipt as `[used, left, revoked]`.
async fn receipt_is(scene: &Scene<'_>, viewer: &str, expected: Value) {
    let script = format!(
        "const r = document.querySelector('#owner-controls [data-viewer={viewer}]');
         return r ? [r.querySelector('[data-views-used]').dataset.viewsUsed,
                     r.querySelector('[data-views-left]').dataset.viewsLeft,
                     r.querySelector('[data-revoked]') !== null] : null;"
    );
    let what = format!("{viewer}'s receipt to read {expected}");
    scene
        .until(&what, STEP, || async {
            (scene.js(&script).await == expected).then_some(())
        })
        .await
}

/// Waits for the page's one received copy to say `left` views left.
async fn copy_views_left_is(scene: &Scene<'_>, left: &str) {
    let what = format!("the copy with {left} views left");
    scene
        .until(&what, STEP, || async {
            let v = scene
                .js(
                    "const b = document.querySelector('#copies-list [data-views-left]');
                     return b ? b.dataset.viewsLeft : null;",
                )
                .await;
            (v == json!(left)).then_some(())
        })
        .await
}

/// The text of the line `id`.
async fn status_of(scene: &Scene<'_>, id: &str) -> String {
    let script = format!("return document.getElementById('{id}').textContent;");
    scene
        .js(&script)
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What the viewer shows: (shown, natural width, caption).
async fn viewer(scene: &Scene<'_>) -> (String, u64, String) {
    let v = scene
        .js("const i = document.getElementById('viewer-img');
         return [i.dataset.shown || '', i.complete ? i.naturalWidth : 0,
                 document.getElementById('viewer-caption').textContent];")
        .await;
    (
        v[0].as_str().unwrap_or_default().to_string(),
        v[1].as_u64().unwrap_or(0),
        v[2].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn share_request_approve_view_to_zero_then_quota_revoke_and_allow_by_clicks_in_the_galleries() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(driver) = Driver::start() else {
        return;
    };
    let cluster = Cluster::start(3, &[]);
    cluster
        .wait_agreed(Duration::from_secs(15))
        .expect("the cluster agrees on a coordinator");
    let (alice, alice_url) = peer_with_url(&cluster, "alice");
    let (bob, bob_url) = peer_with_url(&cluster, "bob");
    let photo_path = cluster.dir.path().join("sunset.png");
    std::fs::write(&photo_path, photo(480, 320)).unwrap();
    let rt = support::runtime();
    rt.block_on(async {
        let scene = Scene {
            browser: driver.browser().await,
            logs: Box::new(|| {
                format!(
                    "alice's peer:\n{}{}\nbob's peer:\n{}{}\nnode 1:\n{}",
                    tail(&alice.stdout(), 30),
                    tail(&alice.stderr(), 30),
                    tail(&bob.stdout(), 30),
                    tail(&bob.stderr(), 30),
                    tail(&cluster.log(1), 40)
                )
            }),
        };

        // Alice shares a photo from the form.
        open_gallery(&scene, &alice_url, "alice").await;
        let input = scene.browser.find(Locator::Id("share-file")).await.unwrap();
        input.send_keys(photo_path.to_str().unwrap()).await.unwrap();
        let name = scene.browser.find(Locator::Id("share-name")).await.unwrap();
        name.send_keys("sunset").await.unwrap();
        scene.click("the share button", "#share-submit").await;
        scene
            .until("alice's preview of sunset", STEP * 2, || async {
                let w = scene
                    .js("const i = document.querySelector('#own-list img');
                 return i && i.complete ? i.naturalWidth : 0;")
                    .await;
                (w.as_u64().unwrap_or(0) > 0).then_some(())
            })
            .await;
        assert!(scene.text().await.contains("sunset"));

        // Bob sees alice online with her preview and asks for 2 views.
        open_gallery(&scene, &bob_url, "bob").await;
        scene
            .until("alice's preview in bob's list of peers", STEP, || async {
                let w = scene
                    .js("const i = document.querySelector('[data-peer=alice] img');
                 return i && i.complete ? i.naturalWidth : 0;")
                    .await;
                (w.as_u64().unwrap_or(0) > 0).then_some(())
            })
            .await;
        let views = scene
            .browser
            .find(Locator::Css("[data-peer=alice] input[type=number]"))
            .await
            .unwrap();
        views.clear().await.unwrap();
        views.send_keys("2").await.unwrap();
        scene
            .click(
                "bob's request button",
                "button[data-action=request][data-owner=alice]",
            )
            .await;
        scene
            .until("bob's request to show as pending", STEP, || async {
                scene.text().await.contains("pending").then_some(())
            })
            .await;

        // Alice approves it with a click.
        open_gallery(&scene, &alice_url, "alice").await;
        scene
            .click("alice's approve button", "button[data-action=approve]")
            .await;
        scene
            .until("the request to be approved", STEP, || async {
                let t = scene.text().await;
                (t.contains("delivered") || t.contains("approved")).then_some(())
            })
            .await;

        // Bob views twice: the image, 1 then 0 views left; then the default image.
        open_gallery(&scene, &bob_url, "bob").await;
        let view = "#copies-list button[data-action=view]";
        scene
            .until("bob's copy with 2 views left", STEP, || async {
                let left = scene
                    .js(
                        "const b = document.querySelector('#copies-list [data-views-left]');
                 return b ? b.dataset.viewsLeft : null;",
                    )
                    .await;
                (left == json!("2")).then_some(())
            })
            .await;
        for left in [1, 0] {
            scene.click("bob's view button", view).await;
            let words = format!("{left} views left");
            let words = if left == 1 {
                "1 view left".into()
            } else {
                words
            };
            let (shown, width, caption) = scene
                .until(&words, STEP, || async {
                    let v = viewer(&scene).await;
                    (v.2.contains(&words) && v.1 > 0).then_some(v)
                })
                .await;
            assert_eq!(shown, "image", "view with {left} left: {caption}");
            assert_eq!(width, 480, "the image itself, at its own width");
            if left == 1 {
                scene.screenshot("gallery").await;
            }
        }
        scene.click("bob's view button", view).await;
        let (_, width, caption) = scene
            .until("the default image", STEP, || async {
                let v = viewer(&scene).await;
                (v.0 == "default" && v.1 > 0).then_some(v)
            })
            .await;
        assert!(caption.contains("No views left"), "caption: {caption}");
        assert_ne!(width, 480, "the default image is not the photo");
        scene.screenshot("gallery-default").await;

        // Alice's page: bob's receipt (2 used, 0 left); she sets his quota to 3.
        open_gallery(&scene, &alice_url, "alice").await;
        receipt_is(&scene, "bob", json!(["2", "0", false])).await;
        let quota = "#owner-controls [data-viewer=bob] input[type=number]";
        let quota = scene.browser.find(Locator::Css(quota)).await.unwrap();
        quota.clear().await.unwrap();
        quota.send_keys("3").await.unwrap();
        scene
            .click(
                "alice's quota button",
                "#owner-controls button[data-action=quota][data-viewer=bob]",
            )
            .await;
        receipt_is(&scene, "bob", json!(["2", "3", false])).await;
        let said = status_of(&scene, "owner-error-status").await;
        assert!(
            said.contains("bob now has 3 views left of sunset"),
            "{said}"
        );

        // Bob's copy says 3 at once, with its preview.
        open_gallery(&scene, &bob_url, "bob").await;
        copy_views_left_is(&scene, "3").await;
        scene
            .until("the copy's preview", STEP, || async {
                let w = scene
                    .js("const i = document.querySelector('#copies-list img');
                         return i && i.complete && !i.hidden ? i.naturalWidth : 0;")
                    .await;
                (w.as_u64().unwrap_or(0) > 0).then_some(())
            })
            .await;

        // Alice revokes bob, confirming first; his receipt stays, marked revoked.
        open_gallery(&scene, &alice_url, "alice").await;
        receipt_is(&scene, "bob", json!(["2", "3", false])).await;
        scene
            .click(
                "alice's revoke button",
                "#owner-controls button[data-action=revoke][data-viewer=bob]",
            )
            .await;
        receipt_is(&scene, "bob", json!(["2", "3", false])).await;
        scene
            .click(
                "alice's confirmation of the revoke",
                "#owner-controls button[data-action=confirm-revoke][data-viewer=bob]",
            )
            .await;
        receipt_is(&scene, "bob", json!(["2", "0", true])).await;
        scene.screenshot("gallery-owner").await;

        // Bob's page shows it (his copy says 0 views left), and a view gives the default
        // image: he is no longer a viewer.
        open_gallery(&scene, &bob_url, "bob").await;
        copy_views_left_is(&scene, "0").await;
        scene.click("bob's view button", view).await;
        let (_, _, caption) = scene
            .until("the default image after the revoke", STEP, || async {
                let v = viewer(&scene).await;
                (v.0 == "default" && v.1 > 0).then_some(v)
            })
            .await;
        assert!(caption.contains("no longer"), "caption: {caption}");

        // Alice allows him 1 view again from the form.
        open_gallery(&scene, &alice_url, "alice").await;
        let who = scene
            .browser
            .find(Locator::Css("#owner-controls input[type=text]"))
            .await
            .unwrap();
        who.send_keys("bob").await.unwrap();
        let views = "#owner-controls form input[type=number]";
        let views = scene.browser.find(Locator::Css(views)).await.unwrap();
        views.clear().await.unwrap();
        views.send_keys("1").await.unwrap();
        scene
            .click(
                "alice's allow button",
                "#owner-controls button[data-action=allow]",
            )
            .await;
        receipt_is(&scene, "bob", json!(["2", "1", false])).await;

        // Node 1's dashboard shows the sharing figures: bob's 2 views spent, the default
        // images (after his quota ran out, and after the revoke), the Raft term.
        let node1 = cluster.config.node(1).unwrap().http;
        scene
            .browser
            .goto(&format!("http://{node1}/"))
            .await
            .unwrap();
        let figures = scene
            .until("the dashboard's sharing figures", STEP, || async {
                let v = scene
                    .js(
                        "return ['views-spent', 'views-default', 'term', 'images', 'leader']
                           .map(id => document.getElementById(id).textContent);",
                    )
                    .await;
                let v: Vec<String> = serde_json::from_value(v).ok()?;
                (v[0] == "2" && v[1] != "-" && v[3] == "1").then_some(v)
            })
            .await;
        let defaults: u64 = figures[1].parse().unwrap();
        assert!(defaults >= 2, "default images shown: {figures:?}");
        assert!(figures[2].parse::<u64>().unwrap() >= 1, "{figures:?}");
        assert!(
            figures[4].starts_with("node ") && figures[4].contains("term"),
            "{figures:?}"
        );
        scene.screenshot("dashboard-sharing").await;

        // Without the token, bob's gallery shows only how to log in.
        let addr = bob.addr.clone().unwrap();
        scene
            .browser
            .goto(&format!("http://{addr}/"))
            .await
            .unwrap();
        scene
            .until("the login message", STEP, || async {
                let shown = scene
                    .js("return !document.getElementById('login').hidden;")
                    .await;
                (shown == json!(true)).then_some(())
            })
            .await;
        let page = scene.text().await;
        assert!(
            page.contains("Log in with the URL the peer printed"),
            "{page}"
        );
        for private in ["sunset", "alice", "views left", "bob's gallery"] {
            assert!(
                !page.contains(private),
                "{private:?} shows without the token:\n{page}"
            );
        }
        let wrong = format!("http://{addr}/?token=0000");
        scene.browser.goto(&wrong).await.unwrap();
        scene
            .until("the login message with a wrong token", STEP, || async {
                let shown = scene
                    .js("return !document.getElementById('login').hidden;")
                    .await;
                (shown == json!(true)).then_some(())
            })
            .await;
        assert!(!scene.text().await.contains("sunset"));
        scene.screenshot("gallery-logged-out").await;
        scene.browser.close().await.unwrap();
    });
    drop((alice, bob));
}

#[test]
fn the_dashboard_names_every_node_and_the_coordinator_and_shows_a_failure_and_recovery() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(driver) = Driver::start() else {
        return;
    };
    let cluster = Cluster::start(
        3,
        &[
            "--failures",
            "on",
            "--failure-period",
            "3",
            "--failure-max",
            "2",
        ],
    );
    cluster
        .wait_agreed(Duration::from_secs(15))
        .expect("the cluster agrees on a coordinator");
    let password = "carol's password";
    let carol = cluster.peer("carol", password, &[]);
    assert!(carol.addr.is_some(), "carol's peer did not come online");
    let node1 = cluster.config.node(1).unwrap().http;
    let rt = support::runtime();
    rt.block_on(async {
        let scene = Scene {
            browser: driver.browser().await,
            logs: Box::new(|| {
                (1..=3)
                    .map(|i| format!("node {i}:\n{}", tail(&cluster.log(i), 30)))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        };
        scene.browser.goto(&format!("http://{node1}/")).await.unwrap();

        // Every node, the coordinator and the consensus leader, by name.
        scene.until("three nodes and a coordinator", STEP, || async {
            let v = scene.js("return [document.querySelectorAll('[data-node]').length,
                         document.getElementById('coordinator').textContent,
                         document.getElementById('leader').textContent];",
            )
            .await;
            let named = |i: usize| v[i].as_str().unwrap_or_default().starts_with("node ");
            (v[0] == json!(3) && named(1) && named(2)).then_some(())
        })
        .await;
        let page = scene.text().await;
        for id in 1..=3 {
            assert!(page.contains(&format!("node {id}")), "node {id} missing:\n{page}");
        }
        let coordinator = scene.js("return document.getElementById('coordinator').textContent;")
            .await;
        assert!(coordinator.as_str().is_some_and(|c| c.starts_with("node ")), "{coordinator}");
        let roles = scene.js("return [...document.querySelectorAll('[data-node] .roles')].map(r => r.textContent).join('|');",
        )
        .await;
        assert!(roles.as_str().unwrap().contains("coordinator"), "{roles}");
        assert!(roles.as_str().unwrap().contains("consensus leader"), "{roles}");

        // The directory lists carol.
        scene.until("carol online in the directory", STEP, || async {
            let v = scene.js("const r = document.querySelector('[data-user=carol]'); return r ? r.innerText : '';",
            )
            .await;
            v.as_str().unwrap_or_default().contains("online").then_some(())
        })
        .await;

        // The elected victim enters FAILED and comes back, on the timeline.
        let victim = scene.until("a node in the Failed state", STEP * 2, || async {
            let v = scene.js("const n = document.querySelector('[data-node][data-state=Failed]');
                 return n ? n.dataset.node : null;",
            )
            .await;
            v.as_str().map(str::to_string)
        })
        .await;
        // During the failure: the victim shown Failed.
        scene.screenshot("dashboard").await;
        scene.until("the victim back on the timeline", STEP, || async {
            let v = scene.js("return document.getElementById('events').innerText;",
            )
            .await;
            let t = v.as_str().unwrap_or_default().to_string();
            (t.contains(&format!("node {victim} entered FAILED"))
                && t.contains(&format!("node {victim} is back")))
            .then_some(())
        })
        .await;
        // After the failure, the page names the coordinator the nodes name now (read afresh
        // on both sides: the failures go on).
        scene.until("the page to name the nodes' coordinator", STEP, || async {
            let shown = scene.js("return document.getElementById('coordinator').textContent;").await;
            let now = cluster.agreed()?;
            shown
                .as_str()
                .is_some_and(|t| t.starts_with(&format!("node {}", now.0)))
                .then_some(())
        })
        .await;
        scene.browser.close().await.unwrap();
    });
    drop(carol);
}
