//! The fuzz targets' inputs, run through the same functions as the targets in `fuzz/`:
//! reproducers of fixed bugs (`fuzz/regressions/<target>/`, at least one a target) must be
//! refused within a bound, the corpora (`fuzz/corpus/<target>/`) must not panic, and an
//! ignored test writes the small seed corpora.
//!
//! `cargo test --test fuzz -- --ignored write_fuzz_seeds` regenerates the seeds.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image::{DynamicImage, ImageFormat};
use imgcloud::cluster::log::GenSummary;
use imgcloud::cluster::message::decode_envelope;
use imgcloud::cluster::message::{Envelope, Heartbeat, Message, NodeState, PROTOCOL_VERSION};
use imgcloud::codec::metadata::{ImageMeta, Viewer};
use imgcloud::codec::seal::SealKey;
use imgcloud::codec::stego::{decrypt_image, encrypt_image, Cover};
use imgcloud::wire::framing::{decode, encode};
use imgcloud::wire::handshake::Hello;
use imgcloud::wire::request::{EncryptReply, EncryptRequest, Outcome, Refusal};

/// The fuzz targets' key (`SealKey::from_secret(b"fuzz")`).
fn key() -> SealKey {
    SealKey::from_secret(b"fuzz")
}

/// The `hide_cover` target's secret: a 4x3 RGB PNG.
fn secret() -> Vec<u8> {
    let img = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 7]));
    encode_as(&DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

fn meta() -> ImageMeta {
    let viewers = vec![Viewer {
        name: "bob".into(),
        quota: 3,
    }];
    ImageMeta::new("alice", viewers).unwrap()
}

fn encode_as(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

fn fuzz_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(sub)
}

/// Every file under `fuzz/regressions/<target>/` (there is at least one: a loop over an empty
/// folder would check nothing).
fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let files = files_in(&fuzz_dir("regressions").join(target));
    assert!(!files.is_empty(), "no regression input for {target}");
    files
}

/// Every file under `fuzz/corpus/<target>/` (the seeds and what fuzzing kept).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let files = files_in(&fuzz_dir("corpus").join(target));
    assert!(!files.is_empty(), "no corpus for {target}");
    files
}

fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// How long one input may take. Each takes milliseconds now; the slow reproducers took
/// minutes before their fixes, so this bound tells a regression from a busy machine.
const PER_INPUT: Duration = Duration::from_secs(30);

/// Runs `f` on a thread and waits at most [`PER_INPUT`] for it (a panic in it fails the test).
fn bounded<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(PER_INPUT) {
        Ok(value) => value,
        Err(_) if worker.is_finished() => panic!("{} panicked", path.display()),
        Err(_) => panic!("{} took longer than {PER_INPUT:?}", path.display()),
    }
}

/// The `member_frame` target's body: every decoder the network feeds; whether the request
/// decoder accepted the bytes.
fn member_frame(data: &[u8]) -> bool {
    let _ = decode_envelope(data);
    let _ = decode::<Hello>(data);
    let _ = decode::<EncryptReply>(data);
    decode::<EncryptRequest>(data).is_ok()
}

#[test]
fn member_frame_regressions_are_refused_and_the_corpus_does_not_panic() {
    for (path, data) in regressions("member_frame") {
        let accepted = bounded(&path, move || member_frame(&data));
        assert!(!accepted, "{}: a bad frame was accepted", path.display());
    }
    for (path, data) in corpus("member_frame") {
        bounded(&path, move || member_frame(&data));
    }
}

#[test]
fn reveal_regressions_are_refused_and_the_corpus_does_not_panic() {
    for (path, data) in regressions("reveal") {
        let result = bounded(&path, move || decrypt_image(&data, &key()).map(|_| ()));
        assert!(result.is_err(), "{}: revealed something", path.display());
    }
    for (path, data) in corpus("reveal") {
        let _ = bounded(&path, move || decrypt_image(&data, &key()).map(|_| ()));
    }
}

#[test]
fn hide_cover_regressions_are_refused_and_the_corpus_round_trips() {
    for (path, data) in regressions("hide_cover") {
        let result = bounded(&path, move || {
            encrypt_image(&secret(), Cover::Image(&data), &meta(), &key()).map(|_| ())
        });
        assert!(result.is_err(), "{}: took a bad cover", path.display());
    }
    for (path, data) in corpus("hide_cover") {
        bounded(&path, move || {
            let (key, secret) = (key(), secret());
            if let Ok(png) = encrypt_image(&secret, Cover::Image(&data), &meta(), &key) {
                let (_, revealed) = decrypt_image(&png, &key).unwrap();
                assert_eq!(revealed, secret);
            }
        });
    }
}

/// Small covers in every layout and most formats the codec reads.
fn covers() -> Vec<(String, Vec<u8>)> {
    let rgb = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, ((x ^ y) * 4) as u8])
    });
    let rgb = DynamicImage::ImageRgb8(rgb);
    let mut out = Vec::new();
    for (name, format) in [
        ("png", ImageFormat::Png),
        ("jpg", ImageFormat::Jpeg),
        ("gif", ImageFormat::Gif),
        ("bmp", ImageFormat::Bmp),
        ("tiff", ImageFormat::Tiff),
        ("webp", ImageFormat::WebP),
        ("qoi", ImageFormat::Qoi),
        ("tga", ImageFormat::Tga),
        ("pnm", ImageFormat::Pnm),
        ("ico", ImageFormat::Ico),
    ] {
        out.push((format!("rgb8.{name}"), encode_as(&rgb, format)));
    }
    out.push((
        "rgba8.png".into(),
        encode_as(&DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::Png),
    ));
    out.push((
        "luma16.png".into(),
        encode_as(
            &DynamicImage::ImageLuma16(rgb.to_luma16()),
            ImageFormat::Png,
        ),
    ));
    out.push((
        "lumaa8.png".into(),
        encode_as(
            &DynamicImage::ImageLumaA8(rgb.to_luma_alpha8()),
            ImageFormat::Png,
        ),
    ));
    out.push((
        "rgb16.tiff".into(),
        encode_as(&DynamicImage::ImageRgb16(rgb.to_rgb16()), ImageFormat::Tiff),
    ));
    out
}

fn frames() -> Vec<(String, Vec<u8>)> {
    let request = EncryptRequest {
        id: "c1-7".into(),
        secret: secret(),
        cover: None,
        owner: "alice".into(),
        viewers: vec![Viewer {
            name: "bob".into(),
            quota: 3,
        }],
        resent_after: vec![2],
    };
    let reply = EncryptReply {
        id: "c1-7".into(),
        served_by: 2,
        outcome: Outcome::Refused {
            kind: Refusal::TooLarge,
            message: "too large".into(),
        },
    };
    let envelope = |message| Envelope {
        version: PROTOCOL_VERSION,
        from: 2,
        epoch: 9,
        message,
    };
    let heartbeat = Heartbeat {
        state: NodeState::Active,
        load: 0.5,
        cost: 0.01,
        coordinator: Some(1),
        digest: "ab12".into(),
        counters: Default::default(),
        log_gen: 3,
    };
    let mut out = vec![
        (
            "hello-member".into(),
            encode(&Hello::Member {
                version: PROTOCOL_VERSION,
                from: 1,
                to: 2,
                nonce: [7; 16],
            })
            .unwrap()
            .to_vec(),
        ),
        (
            "hello-client".into(),
            encode(&Hello::Client {
                version: PROTOCOL_VERSION,
            })
            .unwrap()
            .to_vec(),
        ),
        ("request".into(), encode(&request).unwrap().to_vec()),
        ("reply".into(), encode(&reply).unwrap().to_vec()),
    ];
    for (name, message) in [
        ("election", Message::Election),
        ("heartbeat", Message::Heartbeat(heartbeat)),
        (
            "coordinator",
            Message::Coordinator {
                coordinator: 1,
                loads: vec![(1, 0.1), (2, 0.2)],
            },
        ),
        (
            "unassigned",
            Message::Unassigned {
                ids: vec!["a".into(), "b".into()],
            },
        ),
        ("forward", Message::Forward(Box::new(request.clone()))),
        ("reply", Message::Reply(Box::new(reply.clone()))),
        (
            "sync",
            Message::SyncRequest(vec![GenSummary {
                gen: 3,
                len: 2,
                hash: 9,
            }]),
        ),
    ] {
        out.push((
            format!("envelope-{name}"),
            encode(&envelope(message)).unwrap().to_vec(),
        ));
    }
    out
}

/// Writes the seed corpora; run by hand, then minimise with `cargo fuzz cmin`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = fuzz_dir("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    for (name, bytes) in frames() {
        write("member_frame", &name, &bytes);
    }
    let (key, meta, secret) = (key(), meta(), secret());
    for (name, cover) in covers() {
        write("hide_cover", &name, &cover);
        if let Ok(png) = encrypt_image(&secret, Cover::Image(&cover), &meta, &key) {
            write("reveal", &format!("{name}.png"), &png);
            // The same payload in other lossless formats (read whole, not row by row).
            let decoded = image::load_from_memory(&png).unwrap();
            for format in [ImageFormat::Bmp, ImageFormat::Tiff, ImageFormat::Qoi] {
                if let Ok(bytes) = std::panic::catch_unwind(|| encode_as(&decoded, format)) {
                    if decrypt_image(&bytes, &key).is_ok() {
                        let ext = format.extensions_str()[0];
                        write("reveal", &format!("{name}.{ext}"), &bytes);
                    }
                }
            }
        }
    }
    write("reveal", "secret.png", &secret);
}
