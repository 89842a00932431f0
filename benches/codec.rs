//! Codec benchmark: hide and reveal of a ~10 KB secret on a 4-megapixel and a 512x512 cover,
//! against plain PNG decode + encode of the same cover with the same encoder settings.
//!
//! Run with `cargo bench --bench codec`, or `cargo bench --bench codec -- PHOTO.png` to add a
//! real cover of your own.

use std::time::{Duration, Instant};

use image::{DynamicImage, ImageBuffer, Rgb};
use imgcloud::codec::cover::DefaultCovers;
use imgcloud::codec::metadata::ImageMeta;
use imgcloud::codec::seal::SealKey;
use imgcloud::codec::stego::{self, decrypt_image, encrypt_image, Cover};

/// Timed runs per figure.
const ITERATIONS: usize = 30;

/// A deterministic hash noise value in -1.0..1.0.
fn noise(x: u32, y: u32, c: u32) -> f32 {
    let mut v =
        x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ c.wrapping_mul(0xC2B2_AE3D);
    v ^= v >> 15;
    v = v.wrapping_mul(0x2C1B_3C6D);
    v ^= v >> 12;
    (v & 0xFFFF) as f32 / 32768.0 - 1.0
}

/// A photo-like image: smooth gradients and blobs plus mild sensor-like noise.
fn photo(width: u32, height: u32, noise_level: f32) -> DynamicImage {
    let (w, h) = (width as f32, height as f32);
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / w, y as f32 / h);
        let base = [
            120.0 + 80.0 * (u * 3.1 + v * 1.3).sin() + 30.0 * (v * 7.0).cos(),
            110.0 + 70.0 * (u * 2.3 - v * 2.9).cos() + 25.0 * (u * 11.0 + v * 5.0).sin(),
            100.0 + 90.0 * (v * 2.0 + 0.5).sin() * (u * 4.0).cos(),
        ];
        Rgb(std::array::from_fn(|c| {
            (base[c] + noise_level * noise(x, y, c as u32)).clamp(0.0, 255.0) as u8
        }))
    }))
}

/// Times `f` over [`ITERATIONS`] runs after one warm-up; returns the sorted durations.
fn time<T>(mut f: impl FnMut() -> T) -> Vec<Duration> {
    std::hint::black_box(f());
    let mut runs: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    runs.sort();
    runs
}

/// The p-th percentile of sorted durations, in milliseconds.
fn pct(runs: &[Duration], p: f64) -> f64 {
    let i = ((runs.len() as f64 - 1.0) * p).round() as usize;
    runs[i].as_secs_f64() * 1000.0
}

/// Prints one figure line.
fn report(name: &str, runs: &[Duration]) {
    println!(
        "  {name:<24} p50 {:>8.2} ms   p95 {:>8.2} ms",
        pct(runs, 0.5),
        pct(runs, 0.95)
    );
}

/// Benchmarks one cover: hide, reveal, and decode + encode.
fn bench_cover(label: &str, cover: &[u8], secret: &[u8], key: &SealKey, meta: &ImageMeta) {
    let dims = image::load_from_memory(cover).map(|i| (i.width(), i.height()));
    let Ok((w, h)) = dims else {
        println!("{label}: cannot decode the cover");
        return;
    };
    println!("{label}: {w}x{h} cover, {} bytes as PNG", cover.len());
    let hidden = match encrypt_image(secret, Cover::Image(cover), meta, key) {
        Ok(png) => png,
        Err(e) => {
            println!("  hide failed: {e}");
            return;
        }
    };
    let hide = time(|| encrypt_image(secret, Cover::Image(cover), meta, key).unwrap());
    let reveal = time(|| decrypt_image(&hidden, key).unwrap());
    let plain = time(|| {
        let img = image::load_from_memory(cover).unwrap();
        stego::encode_png(&img).unwrap()
    });
    report("hide", &hide);
    report("reveal", &reveal);
    report("png decode + encode", &plain);
    println!(
        "  ratio hide/(decode+encode) p50 {:.2}; output {} bytes",
        pct(&hide, 0.5) / pct(&plain, 0.5),
        hidden.len()
    );
}

/// Decode alone, and encode alone with each PNG filter, to pick the codec's encoder settings.
fn filters(cover: &[u8]) {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    report(
        "png decode alone",
        &time(|| image::load_from_memory(cover).unwrap()),
    );
    let img = image::load_from_memory(cover).unwrap();
    for (name, filter) in [
        ("NoFilter", FilterType::NoFilter),
        ("Sub", FilterType::Sub),
        ("Up", FilterType::Up),
        ("Avg", FilterType::Avg),
        ("Paeth", FilterType::Paeth),
        ("Adaptive", FilterType::Adaptive),
    ] {
        let encode = || {
            let mut out = Vec::new();
            let encoder = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, filter);
            img.write_with_encoder(encoder).unwrap();
            out
        };
        let size = encode().len();
        report(
            &format!("encode Fast+{name} ({:.1} MB)", size as f64 / 1e6),
            &time(encode),
        );
    }
}

fn main() {
    let key = SealKey::from_secret(b"benchmark secret");
    let meta = ImageMeta::new(
        "alice",
        vec!["bob=5".parse().unwrap(), "carol=2".parse().unwrap()],
    )
    .unwrap();
    let secret = stego::encode_png(&photo(64, 48, 40.0)).unwrap();
    println!(
        "secret: {} bytes (64x48 PNG); {ITERATIONS} iterations per figure",
        secret.len()
    );

    let big = stego::encode_png(&photo(2304, 1728, 6.0)).unwrap();
    bench_cover("4 MP photo-like", &big, &secret, &key, &meta);
    filters(&big);
    let small = stego::encode_png(&photo(512, 512, 6.0)).unwrap();
    bench_cover("512x512 photo-like", &small, &secret, &key, &meta);

    let covers = DefaultCovers::new();
    let hidden = encrypt_image(&secret, Cover::Default(&covers), &meta, &key).unwrap();
    println!(
        "default cover (cached landscape), {} bytes out",
        hidden.len()
    );
    report(
        "hide",
        &time(|| encrypt_image(&secret, Cover::Default(&covers), &meta, &key).unwrap()),
    );
    report("reveal", &time(|| decrypt_image(&hidden, &key).unwrap()));

    // The request the demo sends: its built-in photo, on the default cover. A decode of the
    // secret is timed too: hide used to do one to check it, and now checks the PNG's chunks.
    let sample = imgcloud::SAMPLE_IMAGE;
    let hidden = encrypt_image(sample, Cover::Default(&covers), &meta, &key).unwrap();
    println!(
        "demo request ({} bytes secret), default cover, {} bytes out",
        sample.len(),
        hidden.len()
    );
    report(
        "hide",
        &time(|| encrypt_image(sample, Cover::Default(&covers), &meta, &key).unwrap()),
    );
    report(
        "secret decode (not part of hide)",
        &time(|| stego::decode_image(sample, "secret").unwrap()),
    );
    report("reveal", &time(|| decrypt_image(&hidden, &key).unwrap()));

    // Real covers given on the command line (cargo adds its own --bench flag).
    for path in std::env::args().skip(1).filter(|a| !a.starts_with("--")) {
        match std::fs::read(&path) {
            Ok(bytes) => bench_cover(&path, &bytes, &secret, &key, &meta),
            Err(e) => println!("{path}: {e}"),
        }
    }
}
