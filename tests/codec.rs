//! Round trips, tamper detection and error cases of the stego codec, on fixtures generated here.

mod support;

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use imgcloud::codec::cover::DefaultCovers;
use imgcloud::codec::metadata::{ImageMeta, Viewer};
use imgcloud::codec::seal::SealKey;
use imgcloud::codec::stego::{
    self, decrypt_image, encrypt_image, encrypt_image_with, Cover, HideOptions,
};
use imgcloud::Error;
use proptest::prelude::*;

/// Colour layouts of generated covers.
#[derive(Clone, Copy, Debug)]
enum Kind {
    L8,
    La8,
    Rgb8,
    Rgba8,
    L16,
    La16,
    Rgb16,
    Rgba16,
    Palette,
    PaletteAlpha,
    Gray1,
    Gray2,
    Gray4,
}

const KINDS: [Kind; 13] = [
    Kind::L8,
    Kind::La8,
    Kind::Rgb8,
    Kind::Rgba8,
    Kind::L16,
    Kind::La16,
    Kind::Rgb16,
    Kind::Rgba16,
    Kind::Palette,
    Kind::PaletteAlpha,
    Kind::Gray1,
    Kind::Gray2,
    Kind::Gray4,
];

/// A cheap deterministic value in 0..256 for a position and seed.
fn noise(x: u32, y: u32, seed: u32) -> u32 {
    let mut v =
        x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ seed.wrapping_mul(0xC2B2_AE3D);
    v ^= v >> 15;
    v = v.wrapping_mul(0x2C1B_3C6D);
    (v ^ (v >> 12)) & 0xFF
}

/// A smooth-plus-noise value in 0..=255 for a position, channel and seed.
fn value(x: u32, y: u32, c: u32, seed: u32) -> u32 {
    ((x * 5 + y * 3 + c * 60 + seed) % 200) + noise(x, y, seed + c) % 50
}

/// Writes a PNG with the png crate directly (for palette and low-bit gray layouts).
fn raw_png(
    w: u32,
    h: u32,
    colour: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<(Vec<u8>, Option<Vec<u8>>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(colour);
        enc.set_depth(depth);
        if let Some((plte, trns)) = palette {
            enc.set_palette(plte);
            if let Some(trns) = trns {
                enc.set_trns(trns);
            }
        }
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(data).unwrap();
    }
    out
}

/// Encodes a DynamicImage in a format with the image crate.
fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A generated cover of a kind, as file bytes.
fn cover(kind: Kind, w: u32, h: u32, seed: u32) -> Vec<u8> {
    let v8 = |x, y, c| value(x, y, c, seed) as u8;
    let v16 = |x, y, c| (value(x, y, c, seed) * 257 + noise(x, y, c)) as u16;
    let a8 = |x: u32, y: u32| (x * 7 + y) as u8;
    let a16 = |x: u32, y: u32| (x * 700 + y * 3) as u16;
    let img = match kind {
        Kind::L8 => {
            DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| Luma([v8(x, y, 0)])))
        }
        Kind::La8 => DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| {
            LumaA([v8(x, y, 0), a8(x, y)])
        })),
        Kind::Rgb8 => DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([v8(x, y, 0), v8(x, y, 1), v8(x, y, 2)])
        })),
        Kind::Rgba8 => DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
            Rgba([v8(x, y, 0), v8(x, y, 1), v8(x, y, 2), a8(x, y)])
        })),
        Kind::L16 => {
            DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| Luma([v16(x, y, 0)])))
        }
        Kind::La16 => DynamicImage::ImageLumaA16(ImageBuffer::from_fn(w, h, |x, y| {
            LumaA([v16(x, y, 0), a16(x, y)])
        })),
        Kind::Rgb16 => DynamicImage::ImageRgb16(ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([v16(x, y, 0), v16(x, y, 1), v16(x, y, 2)])
        })),
        Kind::Rgba16 => DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
            Rgba([v16(x, y, 0), v16(x, y, 1), v16(x, y, 2), a16(x, y)])
        })),
        Kind::Palette | Kind::PaletteAlpha => {
            let plte: Vec<u8> = (0..16u32)
                .flat_map(|i| [(i * 16) as u8, (255 - i * 9) as u8, (i * 5 + seed) as u8])
                .collect();
            let trns = matches!(kind, Kind::PaletteAlpha)
                .then(|| (0..16u32).map(|i| (i * 17) as u8).collect());
            let data: Vec<u8> = (0..h)
                .flat_map(|y| (0..w).map(move |x| ((x + y * 3 + noise(x, y, seed)) % 16) as u8))
                .collect();
            return raw_png(
                w,
                h,
                png::ColorType::Indexed,
                png::BitDepth::Eight,
                &data,
                Some((plte, trns)),
            );
        }
        Kind::Gray1 | Kind::Gray2 | Kind::Gray4 => {
            let bits = match kind {
                Kind::Gray1 => 1,
                Kind::Gray2 => 2,
                _ => 4,
            };
            let depth = match bits {
                1 => png::BitDepth::One,
                2 => png::BitDepth::Two,
                _ => png::BitDepth::Four,
            };
            let row_bytes = (w as usize * bits).div_ceil(8);
            let mut data = vec![0u8; row_bytes * h as usize];
            for y in 0..h {
                for x in 0..w {
                    let v = (value(x, y, 0, seed) as u8) >> (8 - bits);
                    let bit = x as usize * bits;
                    data[y as usize * row_bytes + bit / 8] |= v << (8 - bits - bit % 8);
                }
            }
            return raw_png(w, h, png::ColorType::Grayscale, depth, &data, None);
        }
    };
    encode(&img, ImageFormat::Png)
}

/// A small secret image in a format.
fn secret(format: ImageFormat, seed: u32) -> Vec<u8> {
    let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(8, 8, |x, y| {
        Rgb([value(x, y, 0, seed) as u8, (x * 30) as u8, (y * 30) as u8])
    }));
    encode(&img, format)
}

fn meta() -> ImageMeta {
    ImageMeta::new(
        "alice",
        vec![
            "bob=5".parse().unwrap(),
            Viewer {
                name: "carol".into(),
                quota: 2,
            },
        ],
    )
    .unwrap()
}

fn key() -> SealKey {
    SealKey::from_secret(b"test cluster secret")
}

/// Checks that only low bits of colour samples changed and alpha did not.
fn assert_small_change(cover_bytes: &[u8], out: &[u8], max_bits: u8) {
    let before = image::load_from_memory(cover_bytes).unwrap();
    let after = image::load_from_memory(out).unwrap();
    assert_eq!(
        (before.width(), before.height()),
        (after.width(), after.height())
    );
    let channels = before.color().channel_count() as usize;
    let alpha = before.color().has_alpha();
    assert_eq!(before.color(), after.color(), "sample layout is kept");
    let pairs: Vec<(u32, u32)> = if before.color().bytes_per_pixel() as usize == channels * 2 {
        let (a, b) = (as_u16(&before), as_u16(&after));
        a.into_iter().zip(b).collect()
    } else {
        before
            .as_bytes()
            .iter()
            .zip(after.as_bytes())
            .map(|(&a, &b)| (a as u32, b as u32))
            .collect()
    };
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        if alpha && i % channels == channels - 1 {
            assert_eq!(a, b, "alpha sample {i} changed");
        } else {
            assert!(
                a.abs_diff(b) < 1 << max_bits,
                "sample {i} changed from {a} to {b}"
            );
        }
    }
}

/// The 16-bit samples of a 16-bit image.
fn as_u16(img: &DynamicImage) -> Vec<u32> {
    match img {
        DynamicImage::ImageLuma16(b) => b.as_raw().iter().map(|&v| v as u32).collect(),
        DynamicImage::ImageLumaA16(b) => b.as_raw().iter().map(|&v| v as u32).collect(),
        DynamicImage::ImageRgb16(b) => b.as_raw().iter().map(|&v| v as u32).collect(),
        DynamicImage::ImageRgba16(b) => b.as_raw().iter().map(|&v| v as u32).collect(),
        other => panic!("not 16-bit: {:?}", other.color()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trip_over_layouts_formats_and_bits(
        kind in 0usize..KINDS.len(),
        w in 40u32..120,
        h in 40u32..100,
        bits in prop::option::of(1u8..=2),
        format in 0usize..4,
        seed in 0u32..1000,
    ) {
        let kind = KINDS[kind];
        let format = [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp, ImageFormat::Gif][format];
        let cover_bytes = cover(kind, w, h, seed);
        let secret_bytes = secret(format, seed);
        let m = meta();
        match encrypt_image_with(&secret_bytes, Cover::Image(&cover_bytes), &m, &key(), HideOptions { bits, ..Default::default() }) {
            Ok(out) => {
                let (got_meta, got_secret) = decrypt_image(&out, &key()).unwrap();
                prop_assert_eq!(got_meta, m);
                prop_assert_eq!(got_secret, secret_bytes);
                assert_small_change(&cover_bytes, &out, bits.unwrap_or(2));
                let out_img = image::load_from_memory(&out).unwrap();
                prop_assert_eq!((out_img.width(), out_img.height()), (w, h));
            }
            Err(Error::CoverTooSmall { width, height, min_pixels, .. }) => {
                prop_assert_eq!((width, height), (w, h));
                prop_assert!(min_pixels > u64::from(w) * u64::from(h));
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}

#[test]
fn default_cover_round_trips_and_fits_the_payload() {
    let covers = DefaultCovers::new();
    for size in [8u32, 200, 400] {
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(size, size, |x, y| {
            Rgb([noise(x, y, 1) as u8, noise(x, y, 2) as u8, 9])
        }));
        let secret_bytes = encode(&img, ImageFormat::Png);
        let out = encrypt_image(&secret_bytes, Cover::Default(&covers), &meta(), &key()).unwrap();
        let (_, got) = decrypt_image(&out, &key()).unwrap();
        assert_eq!(got, secret_bytes);
        let out_img = image::load_from_memory(&out).unwrap();
        // Two bits in each colour sample of the smallest ladder size that holds the payload.
        let (w, h) = (out_img.width(), out_img.height());
        assert!(
            w >= 128 && h >= 96 && w % 32 == 0 && h == w / 4 * 3,
            "{w}x{h}"
        );
        let holds = |w: u32, h: u32| u64::from(w) * u64::from(h) * 3 * 2 / 8;
        assert!(
            holds(w, h) >= secret_bytes.len() as u64,
            "{size}: too small"
        );
        if w > 128 {
            let smaller = w - 32;
            // (The payload is the secret plus metadata, a header and a tag: under 1 KB more.)
            assert!(
                holds(smaller, smaller / 4 * 3) < secret_bytes.len() as u64 + 1024,
                "{size}: {w}x{h} is larger than needed"
            );
        }
    }
    assert!(covers.len() >= 2);
}

/// Returns the LSB-embedded body length, read from the header in the first 384 carriers.
fn body_len_of(samples: &[u8]) -> usize {
    let header: Vec<u8> = samples[..384]
        .chunks(8)
        .map(|c| c.iter().fold(0u8, |a, &s| (a << 1) | (s & 1)))
        .collect();
    u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize
}

#[test]
fn every_flipped_payload_bit_is_detected() {
    for bits in [1u8, 2] {
        let cover_bytes = cover(Kind::Rgb8, 48, 40, 7);
        let secret_bytes = secret(ImageFormat::Png, 3);
        let out = encrypt_image_with(
            &secret_bytes,
            Cover::Image(&cover_bytes),
            &meta(),
            &key(),
            HideOptions {
                bits: Some(bits),
                ..Default::default()
            },
        )
        .unwrap();
        let img = image::load_from_memory(&out).unwrap().to_rgb8();
        let body_len = body_len_of(img.as_raw());
        let body_carriers = body_len * 8 / bits as usize;
        let mut flips = Vec::new();
        for i in 0..384 {
            flips.push((i, 0u8, false));
        }
        for c in 0..body_carriers {
            for b in 0..bits {
                flips.push((384 + c, b, true));
            }
        }
        for (sample, bit, in_body) in flips {
            let mut bad = img.clone();
            bad.as_mut()[sample] ^= 1 << bit;
            let png = stego::encode_png(&DynamicImage::ImageRgb8(bad)).unwrap();
            match decrypt_image(&png, &key()) {
                Ok(_) => panic!("flip of bit {bit} of sample {sample} went unnoticed"),
                Err(Error::Tampered(_)) => {}
                Err(e) => assert!(
                    !in_body,
                    "body flip at sample {sample} gave {e}, not Tampered"
                ),
            }
        }
        // A flip past the payload changes nothing that matters.
        let mut past = img.clone();
        past.as_mut()[384 + body_carriers + 1] ^= 1;
        let png = stego::encode_png(&DynamicImage::ImageRgb8(past)).unwrap();
        assert_eq!(decrypt_image(&png, &key()).unwrap().1, secret_bytes);
    }
}

#[test]
fn clean_images_have_no_payload() {
    for kind in KINDS {
        let err = decrypt_image(&cover(kind, 64, 48, 1), &key()).unwrap_err();
        assert!(matches!(err, Error::NoPayload), "{kind:?}: {err}");
    }
    let bmp = encode(
        &image::load_from_memory(&cover(Kind::Rgb8, 30, 30, 2)).unwrap(),
        ImageFormat::Bmp,
    );
    assert!(matches!(decrypt_image(&bmp, &key()), Err(Error::NoPayload)));
    // Too small to hold even a header.
    assert!(matches!(
        decrypt_image(&cover(Kind::L8, 4, 4, 2), &key()),
        Err(Error::NoPayload)
    ));
}

#[test]
fn wrong_key_is_reported_as_such() {
    let out = encrypt_image(
        &secret(ImageFormat::Png, 1),
        Cover::Image(&cover(Kind::Rgba8, 64, 64, 1)),
        &meta(),
        &key(),
    )
    .unwrap();
    let err = decrypt_image(&out, &SealKey::from_secret(b"another secret")).unwrap_err();
    assert!(matches!(err, Error::WrongKey), "{err}");
    assert!(err.to_string().contains("different cluster secret"));
}

#[test]
fn too_small_cover_says_what_size_is_needed() {
    let big = secret(ImageFormat::Bmp, 1);
    let small = cover(Kind::Rgb8, 16, 16, 1);
    let err = encrypt_image(&big, Cover::Image(&small), &meta(), &key()).unwrap_err();
    let Error::CoverTooSmall {
        width,
        height,
        needed,
        min_pixels,
        suggest_side,
        ..
    } = &err
    else {
        panic!("expected CoverTooSmall, got {err}");
    };
    assert_eq!((*width, *height), (16, 16));
    assert!(*needed > big.len());
    let text = err.to_string();
    assert!(
        text.contains("16x16") && text.contains(&min_pixels.to_string()),
        "{text}"
    );
    // A cover of the suggested size is enough.
    let fits = cover(Kind::Rgb8, *suggest_side, *suggest_side, 1);
    let out = encrypt_image(&big, Cover::Image(&fits), &meta(), &key()).unwrap();
    assert_eq!(decrypt_image(&out, &key()).unwrap().1, big);
    // Forcing one bit on a cover that needs two is also too small.
    let tight = cover(Kind::Rgb8, *suggest_side, *suggest_side, 1);
    let forced = encrypt_image_with(
        &big,
        Cover::Image(&tight),
        &meta(),
        &key(),
        HideOptions {
            bits: Some(1),
            ..Default::default()
        },
    );
    assert!(matches!(forced, Err(Error::CoverTooSmall { .. })));
}

#[test]
fn garbage_gives_not_an_image() {
    let garbage = b"this is not an image at all, just some text".to_vec();
    let good_cover = cover(Kind::Rgb8, 64, 64, 1);
    let e = encrypt_image(&garbage, Cover::Image(&good_cover), &meta(), &key()).unwrap_err();
    assert!(matches!(e, Error::NotAnImage(_)), "{e}");
    assert!(e.to_string().contains("secret"), "{e}");
    let e = encrypt_image(
        &secret(ImageFormat::Png, 1),
        Cover::Image(&garbage),
        &meta(),
        &key(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::NotAnImage(_)), "{e}");
    assert!(e.to_string().contains("cover"), "{e}");
    assert!(matches!(
        decrypt_image(&garbage, &key()),
        Err(Error::NotAnImage(_))
    ));
    assert!(matches!(
        decrypt_image(&[], &key()),
        Err(Error::NotAnImage(_))
    ));
}

#[test]
fn truncated_files_are_reported() {
    let cover_bytes = cover(Kind::Rgb8, 96, 96, 1);
    let secret_bytes = secret(ImageFormat::Png, 1);
    let half_cover = &cover_bytes[..cover_bytes.len() / 2];
    let e = encrypt_image(&secret_bytes, Cover::Image(half_cover), &meta(), &key()).unwrap_err();
    assert!(matches!(e, Error::Truncated(_)), "{e}");
    let half_secret = &secret_bytes[..secret_bytes.len() / 2];
    let e = encrypt_image(half_secret, Cover::Image(&cover_bytes), &meta(), &key()).unwrap_err();
    assert!(matches!(e, Error::Truncated(_)), "{e}");
    let out = encrypt_image(&secret_bytes, Cover::Image(&cover_bytes), &meta(), &key()).unwrap();
    for cut in [40, 100, 300] {
        let e = decrypt_image(&out[..cut], &key()).unwrap_err();
        assert!(matches!(e, Error::Truncated(_)), "cut at {cut}: {e}");
    }
    // Reveal reads only the rows holding the payload, so losing the file's tail is harmless.
    let tail_cut = &out[..out.len() - 20];
    assert_eq!(decrypt_image(tail_cut, &key()).unwrap().1, secret_bytes);
}

#[test]
fn metadata_and_bits_are_validated() {
    let bad = ImageMeta {
        owner: String::new(),
        ..meta()
    };
    let c = cover(Kind::Rgb8, 64, 64, 1);
    let s = secret(ImageFormat::Png, 1);
    assert!(matches!(
        encrypt_image(&s, Cover::Image(&c), &bad, &key()),
        Err(Error::InvalidInput(_))
    ));
    let e = encrypt_image_with(
        &s,
        Cover::Image(&c),
        &meta(),
        &key(),
        HideOptions {
            bits: Some(3),
            ..Default::default()
        },
    );
    assert!(matches!(e, Err(Error::InvalidInput(_))));
}

#[test]
fn cli_encrypt_then_decrypt_gives_the_exact_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("secret.gif");
    let out_path = dir.path().join("out.png");
    let back_path = dir.path().join("back.gif");
    let secret_bytes = secret(ImageFormat::Gif, 5);
    std::fs::write(&secret_path, &secret_bytes).unwrap();
    let client = env!("CARGO_BIN_EXE_client");
    let run = |args: &[&std::ffi::OsStr]| {
        support::output_within(
            std::process::Command::new(client)
                .args(args)
                .env("IMGCLOUD_SECRET", "cli test secret"),
            support::COMMAND_LIMIT,
            "client",
        )
    };
    let enc = run(&[
        "encrypt".as_ref(),
        secret_path.as_os_str(),
        "--owner".as_ref(),
        "alice".as_ref(),
        "--viewer".as_ref(),
        "bob=5".as_ref(),
        "--viewer".as_ref(),
        "carol=2".as_ref(),
        "--local".as_ref(),
        "-o".as_ref(),
        out_path.as_os_str(),
    ]);
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    let dec = run(&[
        "decrypt".as_ref(),
        out_path.as_os_str(),
        "-o".as_ref(),
        back_path.as_os_str(),
    ]);
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    let stdout = String::from_utf8_lossy(&dec.stdout);
    assert!(
        stdout.contains("alice") && stdout.contains("bob") && stdout.contains("carol"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&back_path).unwrap(), secret_bytes);
    // Default output name: derived from the input, with the secret's real extension.
    let dec = run(&["decrypt".as_ref(), out_path.as_os_str()]);
    assert!(dec.status.success());
    assert_eq!(
        std::fs::read(dir.path().join("out.secret.gif")).unwrap(),
        secret_bytes
    );

    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let bad = run(&["decrypt".as_ref(), garbage.as_os_str()]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("not an image") || stderr.contains("truncated"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let text = dir.path().join("text.txt");
    std::fs::write(&text, b"hello").unwrap();
    let bad = run(&["decrypt".as_ref(), text.as_os_str()]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("not an image") && !stderr.contains("panicked"),
        "{stderr}"
    );

    // Without --local the cluster is asked; with no node listening, that is a clear error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port = port.to_string();
    let cluster = run(&[
        "encrypt".as_ref(),
        secret_path.as_os_str(),
        "--owner".as_ref(),
        "alice".as_ref(),
        "--nodes".as_ref(),
        "1".as_ref(),
        "--base-port".as_ref(),
        port.as_ref(),
        "-o".as_ref(),
        out_path.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&cluster.stderr);
    assert_eq!(cluster.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no node answered"), "{stderr}");
}
