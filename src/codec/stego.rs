//! Hiding a sealed payload in the low bits of a cover image, and finding it again.
//!
//! How it works. The cover is read as one of eight sample layouts: gray, gray+alpha, RGB or
//! RGBA, each at 8 or 16 bits per sample. Other inputs are converted first: palette images
//! become RGB (or RGBA when they have transparency), 1/2/4-bit gray becomes 8-bit gray, and
//! floating-point images become 16-bit RGB(A). The "carriers" are the colour samples in raster
//! order (row by row, pixel by pixel, channel by channel), skipping alpha, which is never
//! changed. The 48-byte header ([`crate::codec::seal`]) goes into the lowest bit of the first 384
//! carriers, most significant bit first; the sealed body follows at 1 or 2 bits per carrier (the
//! header says which). For 16-bit samples the low bits of the 16-bit value are used, so the
//! output stays 16-bit. Hiding streams: a PNG cover is decoded row by row, each row gets its
//! share of the payload and goes straight to the PNG encoder, so no image-sized buffer exists
//! (other formats, and interlaced PNG, are decoded whole by the `image` crate first). The output
//! is a PNG of the cover's size and layout: fast deflate with the "Up" filter for a user's
//! cover, stored (uncompressed) rows for the default cover, which is the cluster's hot path.
//!
//! Revealing reads the PNG row by row with the `png` crate and stops as soon as the header and
//! then the body are complete, so for a large cover only its first rows are decompressed. Any
//! other lossless format the `image` crate decodes is read whole instead.
//!
//! Implementation caveats: sequential carriers make the payload easy to find for anyone who
//! looks for it statistically (the AEAD keeps it unreadable and tamper-evident, not hidden from
//! steganalysis); the secret is decoded once on hide only to check that it is a whole image;
//! metadata such as gamma, ICC profiles and text chunks of the cover is not carried over.

use std::io::Cursor;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader};

use crate::codec::cover::DefaultCovers;
use crate::codec::metadata::ImageMeta;
use crate::codec::seal::{encode_plaintext, SealKey, HEADER_LEN, TAG_LEN};
use crate::error::{Error, Result};

/// PNG filter of every output: as small as adaptive on photos within 5 %, and 20 % faster (see DESIGN.md).
pub const PNG_FILTER: png::Filter = png::Filter::Up;

/// The byte that announces [`PNG_FILTER`] at the start of each row.
const PNG_FILTER_BYTE: u8 = 2;

/// The eight bytes every PNG file starts with.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Carriers holding the header (one bit each).
pub const HEADER_SAMPLES: usize = HEADER_LEN * 8;

/// Most bytes one decoded image may take (8192x8192 RGBA at 8 bits); larger ones are refused
/// before their pixels are allocated.
pub const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// Longest side of an image the codec decodes, in pixels (twice the largest default cover).
pub const MAX_SIDE: u32 = 16384;
/// Decoded bytes any image may have, whatever its file size (a 1.4-megapixel RGB image).
pub const FREE_DECODED_BYTES: u64 = 4 * 1024 * 1024;
/// Beyond [`FREE_DECODED_BYTES`], decoded bytes allowed per byte of file: a tiny file that
/// claims a huge image (decoders fill in what is missing) would cost seconds of CPU per request.
pub const MAX_EXPANSION: u64 = 1024;

/// The picture the payload is hidden in.
#[derive(Clone, Copy, Debug)]
pub enum Cover<'a> {
    /// The project's default landscape, sized to fit the payload, from this cache.
    Default(&'a DefaultCovers),
    /// A user's cover: the encoded bytes of any image the `image` crate decodes.
    Image(&'a [u8]),
}

/// Tuning of [`encrypt_image_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HideOptions {
    /// Low bits per colour sample (1 or 2); `None` picks the fewest that fit.
    pub bits: Option<u8>,
    /// Write stored (uncompressed) rows whatever the cover, as the default cover always is:
    /// ten times cheaper to write and to read back, about twice the size of a photo cover's
    /// compressed output (the view path reseals a copy on every view: DESIGN.md, "Phase 2:
    /// sharing").
    pub stored: bool,
}

/// Hides the secret image and its metadata in the cover; returns the PNG bytes of the result.
pub fn encrypt_image(
    secret: &[u8],
    cover: Cover<'_>,
    meta: &ImageMeta,
    key: &SealKey,
) -> Result<Vec<u8>> {
    encrypt_image_with(secret, cover, meta, key, HideOptions::default())
}

/// [`encrypt_image`] with explicit options.
pub fn encrypt_image_with(
    secret: &[u8],
    cover: Cover<'_>,
    meta: &ImageMeta,
    key: &SealKey,
    options: HideOptions,
) -> Result<Vec<u8>> {
    if let Some(bits) = options.bits.filter(|b| !(1..=2).contains(b)) {
        return Err(Error::InvalidInput(format!(
            "{bits} bits per sample requested; use 1 or 2"
        )));
    }
    meta.validate()?;
    check_secret(secret)?;
    let plaintext = encode_plaintext(meta, secret)?;
    let body_len = plaintext.len() + TAG_LEN;
    // Seals the payload once the cover's shape is known (the header names the bits used).
    let payload = |shape: &Shape| -> Result<Embedder> {
        let bits = choose_bits(shape, body_len, options.bits)?;
        let (header, body) = key.seal(bits, plaintext)?;
        Ok(Embedder::new(shape, &header, &body, bits))
    };
    match cover {
        Cover::Default(covers) => {
            let fitting = |bits| covers.for_samples(samples_needed(body_len, bits));
            // Two bits per sample by default: the cover is ours, its low two bits are noise to
            // the eye, and a cover half the size halves the reply (DESIGN.md, "Output size").
            let painted = fitting(options.bits.unwrap_or(2));
            let painted = painted.ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the payload is {body_len} bytes, larger than the largest default cover holds; give a cover"
                ))
            })?;
            let shape = Shape::new(
                painted.width(),
                painted.height(),
                png::ColorType::Rgb,
                false,
            )?;
            let embedder = payload(&shape)?;
            let mut rows = painted.as_raw().chunks_exact(shape.row_len());
            // The default cover is the cluster's hot path: stored, not compressed (DESIGN.md,
            // "Output compression").
            write_png(&shape, Deflate::Stored, embedder, |row| {
                row.copy_from_slice(rows.next().unwrap_or_default());
                Ok(())
            })
        }
        Cover::Image(bytes) => match png_reader(bytes, "cover")? {
            // Non-interlaced PNG, the usual cover: decoded row by row as it is encoded (once
            // more for a second pass).
            Some(reader) if !reader.info().interlaced => {
                let (shape, len) = (Shape::of_png(&reader, bytes.len())?, bytes.len());
                write_smaller(&shape, payload(&shape)?, options.stored, || {
                    let mut reader = png_reader(bytes, "cover")?.ok_or_else(|| {
                        Error::NotAnImage(format!("the cover ({len} bytes) is not a PNG"))
                    })?;
                    Ok(move |row: &mut [u8]| next_png_row(&mut reader, row, len))
                })
            }
            _ => {
                let image = normalise(decode_image(bytes, "cover")?)?;
                let shape = Shape::of(&image)?;
                let row_len = shape.row_len();
                write_smaller(&shape, payload(&shape)?, options.stored, || {
                    let mut rows = RowsOf::new(&image, row_len);
                    Ok(move |row: &mut [u8]| {
                        rows.next_into(row);
                        Ok(())
                    })
                })
            }
        },
    }
}

/// Writes a user's cover with fast deflate; if deflate made it larger than stored rows would
/// be (a noise-like cover), writes it again stored. With `stored`, writes it stored at once.
/// `rows` opens the cover's rows for a pass.
fn write_smaller<F>(
    shape: &Shape,
    embedder: Embedder,
    stored: bool,
    mut rows: impl FnMut() -> Result<F>,
) -> Result<Vec<u8>>
where
    F: FnMut(&mut [u8]) -> Result<()>,
{
    if stored {
        return write_png(shape, Deflate::Stored, embedder, rows()?);
    }
    let out = write_png(shape, Deflate::Fast, embedder.clone(), rows()?)?;
    if out.len() <= stored_png_len(shape) {
        return Ok(out);
    }
    write_png(shape, Deflate::Stored, embedder, rows()?)
}

/// Copies the next row of a PNG cover into `row`.
fn next_png_row<R: std::io::BufRead + std::io::Seek>(
    reader: &mut png::Reader<R>,
    row: &mut [u8],
    file_len: usize,
) -> Result<()> {
    match reader.next_row() {
        Ok(Some(r)) => {
            row.copy_from_slice(&r.data()[..row.len()]);
            Ok(())
        }
        Ok(None) => Err(Error::Truncated(format!(
            "the cover (PNG, {file_len} bytes) ends before the image is complete"
        ))),
        Err(e) => Err(png_error(e, "cover", file_len)),
    }
}

/// Size of the PNG [`write_png`] makes of `shape` with [`Deflate::Stored`]: signature, IHDR,
/// the zlib stream (2-byte header, 5 bytes per 64 KiB block, Adler-32) in one IDAT, IEND.
fn stored_png_len(shape: &Shape) -> usize {
    let raw = (shape.row_len() + 1) * shape.height as usize;
    8 + 25 + 12 + 2 + raw + 5 * raw.div_ceil(65535).max(1) + 4 + 12
}

/// Finds, authenticates and decrypts the payload of an image made by [`encrypt_image`].
pub fn decrypt_image(png: &[u8], key: &SealKey) -> Result<(ImageMeta, Vec<u8>)> {
    if png.starts_with(PNG_SIGNATURE) {
        return reveal_png(png, key);
    }
    // Not a PNG: any other lossless format may still carry a payload.
    let image = normalise(decode_image(png, "image")?)?;
    let layout = Shape::of(&image)?.layout;
    let total = layout.carriers(image.width(), image.height());
    let mut fill = |lows: &mut Vec<u8>, want: usize| {
        let upto = (want as u64).min(total) as usize;
        lows.extend((lows.len()..upto).map(|k| low_byte(&image, layout.index(k))));
        Ok(())
    };
    reveal_with(key, total, png.len(), &mut fill)
}

/// Encodes an image as PNG the way hide writes user covers (fast deflate, [`PNG_FILTER`]).
pub fn encode_png(image: &DynamicImage) -> Result<Vec<u8>> {
    let shape = Shape::of(image)?;
    let mut rows = RowsOf::new(image, shape.row_len());
    write_png(&shape, Deflate::Fast, Embedder::default(), |row| {
        rows.next_into(row);
        Ok(())
    })
}

/// The usual file extension of an encoded image (e.g. "png", "jpg"), if its format is known.
pub fn image_extension(bytes: &[u8]) -> Option<&'static str> {
    let format = image::guess_format(bytes).ok()?;
    format.extensions_str().first().copied()
}

/// Decodes any image the `image` crate reads, turning its errors into sentences about `what`.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<DynamicImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(Error::Io)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(decode_allowance(bytes.len()));
    reader.limits(limits);
    let Some(format) = reader.format() else {
        return Err(Error::NotAnImage(format!(
            "the {what} ({} bytes) is in no image format imgcloud reads (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)",
            bytes.len()
        )));
    };
    reader
        .decode()
        .map_err(|e| image_error(e, what, format, bytes.len()))
}

/// Checks that the secret is a whole image before it is hidden. A PNG (the usual secret) is
/// checked as a container, not decoded: its header must be valid, every chunk must be complete
/// with a matching CRC-32, and the file must reach IEND. That finds truncated and damaged files
/// at a twentieth of the cost of a decode, which was half of a default-cover hide (DESIGN.md,
/// "Checking the secret"). Other formats are decoded.
fn check_secret(secret: &[u8]) -> Result<()> {
    if !secret.starts_with(PNG_SIGNATURE) {
        return decode_image(secret, "secret image").map(drop);
    }
    let name = format!("the secret image (PNG, {} bytes)", secret.len());
    let damaged = |why: String| Error::NotAnImage(format!("{name} is damaged: {why}"));
    let mut rest = &secret[PNG_SIGNATURE.len()..];
    let (mut seen_header, mut seen_data) = (false, false);
    loop {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(Error::Truncated(format!(
                "{name} ends before its IEND chunk"
            )));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len.saturating_add(8) {
            return Err(Error::Truncated(format!(
                "{name} ends inside a chunk that announces {len} bytes"
            )));
        }
        let (typed, tail) = tail.split_at(4 + len);
        let (crc, tail) = tail.split_at(4);
        let (kind, data) = typed.split_at(4);
        if crc32fast::hash(typed).to_be_bytes() != crc {
            let kind = String::from_utf8_lossy(kind);
            return Err(damaged(format!("its {kind} chunk fails its checksum")));
        }
        match kind {
            b"IHDR" if !seen_header => check_png_header(data, &name)?,
            _ if !seen_header => return Err(damaged("it does not start with IHDR".into())),
            b"IHDR" => return Err(damaged("it has two IHDR chunks".into())),
            b"IDAT" => seen_data = true,
            b"IEND" if seen_data => return Ok(()),
            b"IEND" => return Err(damaged("it has no image data (IDAT)".into())),
            _ => {}
        }
        seen_header = true;
        rest = tail;
    }
}

/// Checks that a PNG header chunk describes an image the PNG standard allows and the codec
/// accepts; `name` says which file, for the error.
fn check_png_header(data: &[u8], name: &str) -> Result<()> {
    let damaged = |why: String| Err(Error::NotAnImage(format!("{name} is damaged: {why}")));
    let &[w0, w1, w2, w3, h0, h1, h2, h3, depth, colour, compression, filter, interlace] = data
    else {
        return damaged(format!("its IHDR chunk has {} bytes, not 13", data.len()));
    };
    let (w, h) = (
        u32::from_be_bytes([w0, w1, w2, w3]),
        u32::from_be_bytes([h0, h1, h2, h3]),
    );
    if w == 0 || h == 0 {
        return damaged(format!("it claims {w}x{h} pixels"));
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::Unsupported(format!(
            "{name} is {w}x{h}, too large (at most {MAX_SIDE} pixels a side)"
        )));
    }
    let depths: &[u8] = match colour {
        0 => &[1, 2, 4, 8, 16],
        3 => &[1, 2, 4, 8],
        2 | 4 | 6 => &[8, 16],
        _ => return damaged(format!("colour type {colour} does not exist")),
    };
    if !depths.contains(&depth) {
        return damaged(format!(
            "colour type {colour} cannot have {depth}-bit samples"
        ));
    }
    if compression != 0 || filter != 0 || interlace > 1 {
        return damaged("its IHDR names an unknown compression, filter or interlace method".into());
    }
    Ok(())
}

/// Translates an `image` crate error into the codec's error sentences.
fn image_error(e: ImageError, what: &str, format: ImageFormat, len: usize) -> Error {
    let name = format!("the {what} ({format:?}, {len} bytes)");
    match e {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Truncated(format!("{name} ends before the image is complete"))
        }
        ImageError::Decoding(d) if looks_truncated(&d.to_string()) => {
            Error::Truncated(format!("{name} ends before the image is complete ({d})"))
        }
        ImageError::Unsupported(u) => Error::Unsupported(format!("{name}: {u}")),
        ImageError::Limits(l) => Error::Unsupported(format!("{name} is too large to decode: {l}")),
        other => Error::NotAnImage(format!("{name} cannot be decoded: {other}")),
    }
}

/// Whether a decoder's message describes input that stops early.
fn looks_truncated(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "eof",
        "end of",
        "truncat",
        "unexpected end",
        "not enough data",
        "too short",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// Converts a decoded image into one of the eight layouts that carry a payload.
fn normalise(image: DynamicImage) -> Result<DynamicImage> {
    Ok(match image {
        DynamicImage::ImageRgb32F(_) => DynamicImage::ImageRgb16(image.to_rgb16()),
        DynamicImage::ImageRgba32F(_) => DynamicImage::ImageRgba16(image.to_rgba16()),
        other => {
            Shape::of(&other)?;
            other
        }
    })
}

/// The error for a sample layout the codec does not handle.
fn unsupported_colour(image: &DynamicImage) -> Error {
    Error::Unsupported(format!(
        "the cover's colour type {:?} cannot carry a payload",
        image.color()
    ))
}

/// Where the carriers sit among the samples: `colour` of every `channels` samples.
#[derive(Clone, Copy, Debug, Default)]
struct Layout {
    channels: usize,
    colour: usize,
}

impl Layout {
    /// The layout of a PNG colour type (palettes are expanded before this is asked).
    fn of(color: png::ColorType) -> Result<Layout> {
        let (channels, colour) = match color {
            png::ColorType::Grayscale => (1, 1),
            png::ColorType::GrayscaleAlpha => (2, 1),
            png::ColorType::Rgb => (3, 3),
            png::ColorType::Rgba => (4, 3),
            png::ColorType::Indexed => {
                return Err(Error::Unsupported(
                    "the PNG's palette could not be expanded".into(),
                ))
            }
        };
        Ok(Layout { channels, colour })
    }

    /// Number of carriers in an image of this size.
    fn carriers(&self, width: u32, height: u32) -> u64 {
        u64::from(width) * u64::from(height) * self.colour as u64
    }

    /// Sample index of carrier `k`.
    fn index(&self, k: usize) -> usize {
        if self.channels == self.colour {
            k
        } else {
            k / self.colour * self.channels + k % self.colour
        }
    }
}

/// A raster as PNG sees it: size, colour type, and 8 or 16 bits per sample.
#[derive(Clone, Copy, Debug)]
struct Shape {
    width: u32,
    height: u32,
    color: png::ColorType,
    sixteen: bool,
    layout: Layout,
}

impl Shape {
    fn new(width: u32, height: u32, color: png::ColorType, sixteen: bool) -> Result<Shape> {
        Ok(Shape {
            width,
            height,
            color,
            sixteen,
            layout: Layout::of(color)?,
        })
    }

    /// The shape of a normalised image.
    fn of(image: &DynamicImage) -> Result<Shape> {
        use png::ColorType::{Grayscale, GrayscaleAlpha, Rgb, Rgba};
        let (color, sixteen) = match image {
            DynamicImage::ImageLuma8(_) => (Grayscale, false),
            DynamicImage::ImageLumaA8(_) => (GrayscaleAlpha, false),
            DynamicImage::ImageRgb8(_) => (Rgb, false),
            DynamicImage::ImageRgba8(_) => (Rgba, false),
            DynamicImage::ImageLuma16(_) => (Grayscale, true),
            DynamicImage::ImageLumaA16(_) => (GrayscaleAlpha, true),
            DynamicImage::ImageRgb16(_) => (Rgb, true),
            DynamicImage::ImageRgba16(_) => (Rgba, true),
            other => return Err(unsupported_colour(other)),
        };
        Shape::new(image.width(), image.height(), color, sixteen)
    }

    /// The shape of the rows a PNG reader (with [`png::Transformations::EXPAND`]) yields,
    /// refused if decoding it would pass the limits of [`decode_image`].
    fn of_png<R: std::io::BufRead + std::io::Seek>(
        reader: &png::Reader<R>,
        file_len: usize,
    ) -> Result<Shape> {
        let (color, depth) = reader.output_color_type();
        let info = reader.info();
        let shape = Shape::new(
            info.width,
            info.height,
            color,
            depth == png::BitDepth::Sixteen,
        )?;
        let decoded = shape.row_len() as u64 * u64::from(shape.height);
        if info.width > MAX_SIDE || info.height > MAX_SIDE || decoded > decode_allowance(file_len) {
            return Err(too_large_png(file_len, info.width, info.height));
        }
        Ok(shape)
    }

    /// Bytes per sample: 1 or 2.
    fn bytes_per_sample(&self) -> usize {
        if self.sixteen {
            2
        } else {
            1
        }
    }

    /// Bytes of one row (16-bit samples big-endian, as in PNG).
    fn row_len(&self) -> usize {
        self.width as usize * self.layout.channels * self.bytes_per_sample()
    }

    /// Number of carriers.
    fn carriers(&self) -> u64 {
        self.layout.carriers(self.width, self.height)
    }
}

/// Most decoded bytes allowed for an encoded image of `file_len` bytes.
fn decode_allowance(file_len: usize) -> u64 {
    MAX_DECODED_BYTES
        .min(FREE_DECODED_BYTES.saturating_add(MAX_EXPANSION.saturating_mul(file_len as u64)))
}

/// Carriers needed for a body of `body_len` bytes at `bits` per carrier, header included.
pub fn samples_needed(body_len: usize, bits: u8) -> u64 {
    HEADER_SAMPLES as u64 + (body_len as u64 * 8).div_ceil(u64::from(bits))
}

/// Picks the fewest bits per carrier that fit (or checks the requested ones).
fn choose_bits(shape: &Shape, body_len: usize, requested: Option<u8>) -> Result<u8> {
    let total = shape.carriers();
    let candidates: &[u8] = match requested {
        Some(1) => &[1],
        Some(_) => &[2],
        None => &[1, 2],
    };
    if let Some(&bits) = candidates
        .iter()
        .find(|&&b| samples_needed(body_len, b) <= total)
    {
        return Ok(bits);
    }
    let bits = *candidates.last().unwrap_or(&2);
    let needed = samples_needed(body_len, bits);
    let min_pixels = needed.div_ceil(shape.layout.colour as u64);
    Err(Error::CoverTooSmall {
        width: shape.width,
        height: shape.height,
        capacity: (total.saturating_sub(HEADER_SAMPLES as u64) * u64::from(bits) / 8) as usize,
        needed: body_len,
        min_pixels,
        suggest_side: (min_pixels as f64).sqrt().ceil() as u32,
    })
}

/// Writes the payload into the carriers of a raster's rows, one row at a time.
#[derive(Clone, Debug, Default)]
struct Embedder {
    /// The low-bit value of every carrier the payload needs: the header's 384 (one bit each),
    /// then the body's (`bits` each).
    symbols: Vec<u8>,
    /// Carriers written so far.
    next: usize,
    /// Mask of the body's low bits.
    mask: u8,
    /// Carriers per row.
    per_row: usize,
    layout: Layout,
    bytes_per_sample: usize,
}

impl Embedder {
    fn new(shape: &Shape, header: &[u8], body: &[u8], bits: u8) -> Embedder {
        let mask = (1u8 << bits) - 1;
        let per_byte = 8 / bits as usize;
        let mut symbols = vec![0u8; HEADER_SAMPLES + body.len() * per_byte];
        let (head, rest) = symbols.split_at_mut(HEADER_SAMPLES);
        for (out, &byte) in head.chunks_exact_mut(8).zip(header) {
            out.copy_from_slice(&SPREAD_1[usize::from(byte)]);
        }
        if bits == 1 {
            for (out, &byte) in rest.chunks_exact_mut(8).zip(body) {
                out.copy_from_slice(&SPREAD_1[usize::from(byte)]);
            }
        } else {
            for (out, &byte) in rest.chunks_exact_mut(4).zip(body) {
                out.copy_from_slice(&SPREAD_2[usize::from(byte)]);
            }
        }
        Embedder {
            symbols,
            next: 0,
            mask,
            per_row: shape.width as usize * shape.layout.colour,
            layout: shape.layout,
            bytes_per_sample: shape.bytes_per_sample(),
        }
    }

    /// Writes the carriers of the next row (a no-op once the payload is complete).
    fn embed_row(&mut self, row: &mut [u8]) {
        let start = self.next;
        let end = (start + self.per_row).min(self.symbols.len());
        if start >= end {
            return;
        }
        let split = HEADER_SAMPLES.clamp(start, end);
        self.put(row, start, start..split, 1);
        self.put(row, start, split..end, self.mask);
        self.next = end;
    }

    /// Sets the low bits under `mask` of the row's carriers `range` (numbered from the first
    /// carrier of the image; the row starts at carrier `row_start`).
    fn put(&self, row: &mut [u8], row_start: usize, range: std::ops::Range<usize>, mask: u8) {
        let first = range.start - row_start;
        let symbols = &self.symbols[range];
        if self.bytes_per_sample == 1 && self.layout.channels == self.layout.colour {
            // Every byte is a carrier: a straight loop the compiler vectorises.
            for (sample, &s) in row[first..first + symbols.len()].iter_mut().zip(symbols) {
                *sample = (*sample & !mask) | s;
            }
        } else {
            for (j, &s) in symbols.iter().enumerate() {
                // The low byte of a 16-bit sample is its second (big-endian).
                let i = (self.layout.index(first + j) + 1) * self.bytes_per_sample - 1;
                row[i] = (row[i] & !mask) | s;
            }
        }
    }
}

/// Every byte cut into `N` symbols of `bits` bits each, most significant first.
const fn spread_table<const N: usize>(bits: u32) -> [[u8; N]; 256] {
    let mut table = [[0u8; N]; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut i = 0;
        while i < N {
            let shift = (N - 1 - i) as u32 * bits;
            table[byte][i] = ((byte >> shift) & ((1 << bits) - 1)) as u8;
            i += 1;
        }
        byte += 1;
    }
    table
}

/// A byte's eight 1-bit symbols.
const SPREAD_1: [[u8; 8]; 256] = spread_table::<8>(1);
/// A byte's four 2-bit symbols.
const SPREAD_2: [[u8; 4]; 256] = spread_table::<4>(2);

/// Writes a raster as PNG, row by row: `fill` gives each row's bytes, the embedder adds the
/// payload, and the row is filtered ("Up") and compressed at once, so no second image buffer
/// exists. The compressed stream is one IDAT chunk.
fn write_png(
    shape: &Shape,
    deflate: Deflate,
    mut embedder: Embedder,
    mut fill: impl FnMut(&mut [u8]) -> Result<()>,
) -> Result<Vec<u8>> {
    let io_error =
        |e: std::io::Error| Error::Unsupported(format!("the result cannot be compressed: {e}"));
    let row_len = shape.row_len();
    let raw = (row_len + 1) * shape.height as usize;
    let mut zlib = Zlib::new(deflate, raw).map_err(io_error)?;
    let (mut row, mut prev) = (vec![0u8; row_len], vec![0u8; row_len]);
    let mut filtered = vec![0u8; row_len + 1];
    // Filtering only helps compression: stored rows go unfiltered (filter byte 0).
    filtered[0] = match deflate {
        Deflate::Fast => PNG_FILTER_BYTE,
        Deflate::Stored => 0,
    };
    for _ in 0..shape.height {
        fill(&mut row)?;
        embedder.embed_row(&mut row);
        if deflate == Deflate::Stored {
            filtered[1..].copy_from_slice(&row);
        } else {
            // The Up filter: each byte minus the byte above it.
            for ((f, &now), &above) in filtered[1..].iter_mut().zip(&row).zip(&prev) {
                *f = now.wrapping_sub(above);
            }
        }
        zlib.write(&filtered).map_err(io_error)?;
        std::mem::swap(&mut row, &mut prev);
    }
    let idat = zlib.finish().map_err(io_error)?;

    let encode_error = |e: png::EncodingError| {
        Error::Unsupported(format!("the result cannot be written as PNG: {e}"))
    };
    let mut out = Vec::with_capacity(idat.len() + 64);
    let mut encoder = png::Encoder::new(&mut out, shape.width, shape.height);
    encoder.set_color(shape.color);
    encoder.set_depth(if shape.sixteen {
        png::BitDepth::Sixteen
    } else {
        png::BitDepth::Eight
    });
    let mut writer = encoder.write_header().map_err(encode_error)?;
    writer
        .write_chunk(png::chunk::IDAT, &idat)
        .map_err(encode_error)?;
    writer.finish().map_err(encode_error)?;
    Ok(out)
}

/// How the PNG's pixel data is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deflate {
    /// `fdeflate`'s fast compressor: photos shrink to about 2/3 at 400-600 MB/s.
    Fast,
    /// Stored blocks, no compression: ten times cheaper to write and to read back.
    Stored,
}

/// A zlib stream being written in one of the [`Deflate`] ways.
enum Zlib {
    Fast(fdeflate::Compressor<Vec<u8>>),
    Stored(fdeflate::StoredOnlyCompressor<Cursor<Vec<u8>>>),
}

impl Zlib {
    /// A stream for about `raw` bytes of filtered rows.
    fn new(deflate: Deflate, raw: usize) -> std::io::Result<Zlib> {
        Ok(match deflate {
            // Photos rarely compress below 3/4 of raw: one allocation, no regrowth.
            Deflate::Fast => Zlib::Fast(fdeflate::Compressor::new(Vec::with_capacity(
                raw / 4 * 3 + 1024,
            ))?),
            // Five bytes of block header per 64 KiB block.
            Deflate::Stored => Zlib::Stored(fdeflate::StoredOnlyCompressor::new(Cursor::new(
                Vec::with_capacity(raw + raw / 65535 * 5 + 64),
            ))?),
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Zlib::Fast(z) => z.write_data(data),
            Zlib::Stored(z) => z.write_data(data),
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Zlib::Fast(z) => z.finish(),
            Zlib::Stored(z) => Ok(z.finish()?.into_inner()),
        }
    }
}

/// A decoded image's rows as PNG wants them (16-bit samples big-endian).
struct RowsOf<'a> {
    rows: std::slice::ChunksExact<'a, u8>,
    sixteen: bool,
}

impl<'a> RowsOf<'a> {
    fn new(image: &'a DynamicImage, row_len: usize) -> RowsOf<'a> {
        let sixteen = matches!(
            image,
            DynamicImage::ImageLuma16(_)
                | DynamicImage::ImageLumaA16(_)
                | DynamicImage::ImageRgb16(_)
                | DynamicImage::ImageRgba16(_)
        );
        RowsOf {
            rows: image.as_bytes().chunks_exact(row_len.max(1)),
            sixteen,
        }
    }

    /// Copies the next row into `row`.
    fn next_into(&mut self, row: &mut [u8]) {
        let Some(src) = self.rows.next() else { return };
        if self.sixteen {
            // `as_bytes` gives the samples in native order.
            for (d, s) in row.chunks_exact_mut(2).zip(src.chunks_exact(2)) {
                d.copy_from_slice(&u16::from_ne_bytes([s[0], s[1]]).to_be_bytes());
            }
        } else {
            row.copy_from_slice(src);
        }
    }
}

/// A PNG reader of `bytes` that expands palettes and low-bit gray, or `None` if `bytes` is not
/// a PNG.
fn png_reader<'a>(bytes: &'a [u8], what: &str) -> Result<Option<png::Reader<Cursor<&'a [u8]>>>> {
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Ok(None);
    }
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let reader = decoder
        .read_info()
        .map_err(|e| png_error(e, what, bytes.len()))?;
    Ok(Some(reader))
}

/// The least significant byte of sample `i` of a normalised image.
fn low_byte(image: &DynamicImage, i: usize) -> u8 {
    match image {
        DynamicImage::ImageLuma8(b) => b.as_raw()[i],
        DynamicImage::ImageLumaA8(b) => b.as_raw()[i],
        DynamicImage::ImageRgb8(b) => b.as_raw()[i],
        DynamicImage::ImageRgba8(b) => b.as_raw()[i],
        DynamicImage::ImageLuma16(b) => b.as_raw()[i] as u8,
        DynamicImage::ImageLumaA16(b) => b.as_raw()[i] as u8,
        DynamicImage::ImageRgb16(b) => b.as_raw()[i] as u8,
        DynamicImage::ImageRgba16(b) => b.as_raw()[i] as u8,
        _ => 0,
    }
}

/// Reads header then body from the carriers' low bytes, which `fill` appends on demand.
///
/// `file_len` is the size of the encoded image: the sealed body is incompressible, so a header
/// announcing a body longer than the whole file is refused before anything is allocated for it.
fn reveal_with(
    key: &SealKey,
    total: u64,
    file_len: usize,
    fill: &mut dyn FnMut(&mut Vec<u8>, usize) -> Result<()>,
) -> Result<(ImageMeta, Vec<u8>)> {
    let mut lows = Vec::with_capacity(HEADER_SAMPLES * 4);
    fill(&mut lows, HEADER_SAMPLES)?;
    if lows.len() < HEADER_SAMPLES {
        return Err(Error::NoPayload);
    }
    let mut header_bytes = [0u8; HEADER_LEN];
    for (byte, chunk) in header_bytes.iter_mut().zip(lows.chunks_exact(8)) {
        *byte = gather_1(chunk);
    }
    let header = key.open_header(&header_bytes)?;
    if header.body_len as usize > file_len {
        return Err(Error::Tampered(format!(
            "the header says {} bytes are hidden, but the whole file is {file_len} bytes",
            header.body_len
        )));
    }
    let needed = samples_needed(header.body_len as usize, header.bits);
    if needed > total {
        return Err(Error::Tampered(format!(
            "the header says {} bytes are hidden, but the image has room for at most {}",
            header.body_len,
            total.saturating_sub(HEADER_SAMPLES as u64) * u64::from(header.bits) / 8
        )));
    }
    let needed = needed as usize;
    lows.reserve(needed.saturating_sub(lows.len()));
    fill(&mut lows, needed)?;
    if lows.len() < needed {
        return Err(Error::Truncated(format!(
            "the image ends after {} of the {needed} samples that hold the payload",
            lows.len()
        )));
    }
    let lows = &lows[HEADER_SAMPLES..needed];
    let body: Vec<u8> = if header.bits == 1 {
        lows.chunks_exact(8).map(gather_1).collect()
    } else {
        lows.chunks_exact(4).map(gather_2).collect()
    };
    key.open(&header, body)
}

/// The byte whose bits are the lowest bits of eight carriers, first carrier most significant
/// (the inverse of [`SPREAD_1`]): one multiplication moves the eight bits side by side.
fn gather_1(lows: &[u8]) -> u8 {
    let word = u64::from_be_bytes(lows.try_into().unwrap_or_default());
    ((word & 0x0101_0101_0101_0101).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// The byte made of the two lowest bits of four carriers (the inverse of [`SPREAD_2`]).
fn gather_2(lows: &[u8]) -> u8 {
    let word = u32::from_be_bytes(lows.try_into().unwrap_or_default());
    ((word & 0x0303_0303).wrapping_mul(0x0104_1040) >> 24) as u8
}

/// Reveals from a PNG, decompressing only the rows that hold the payload.
fn reveal_png(png: &[u8], key: &SealKey) -> Result<(ImageMeta, Vec<u8>)> {
    let len = png.len();
    let Some(mut reader) = png_reader(png, "image")? else {
        return Err(Error::NotAnImage(format!(
            "the file ({len} bytes) is not a PNG"
        )));
    };
    let shape = Shape::of_png(&reader, len)?;
    let Layout { channels, colour } = shape.layout;
    let bytes_per_sample = shape.bytes_per_sample();
    let (width, interlaced) = (shape.width as usize, reader.info().interlaced);
    let (w, h) = (shape.width, shape.height);
    let total = shape.carriers();
    // Appends the low bytes of one row's carriers (16-bit samples are big-endian).
    let push_row = move |row: &[u8], lows: &mut Vec<u8>| {
        if bytes_per_sample == 1 && channels == colour {
            // No alpha, 8 bits: every byte of the row is a carrier.
            lows.extend_from_slice(&row[..(width * channels).min(row.len())]);
            return;
        }
        for px in row.chunks_exact(channels * bytes_per_sample).take(width) {
            for c in 0..colour {
                lows.push(px[c * bytes_per_sample + bytes_per_sample - 1]);
            }
        }
    };
    if interlaced {
        // Interlaced rows arrive in passes: decode the whole frame, then walk it in order.
        let size = reader
            .output_buffer_size()
            .filter(|&size| size as u64 <= MAX_DECODED_BYTES)
            .ok_or_else(|| too_large_png(len, w, h))?;
        let mut frame = vec![0u8; size];
        let out = reader
            .next_frame(&mut frame)
            .map_err(|e| png_error(e, "image", len))?;
        let mut rows = frame.chunks_exact(out.line_size);
        let mut fill = |lows: &mut Vec<u8>, want: usize| {
            while lows.len() < want {
                match rows.next() {
                    Some(row) => push_row(row, lows),
                    None => break,
                }
            }
            Ok(())
        };
        return reveal_with(key, total, len, &mut fill);
    }
    let mut fill = |lows: &mut Vec<u8>, want: usize| {
        while lows.len() < want {
            match reader.next_row().map_err(|e| png_error(e, "image", len))? {
                Some(row) => push_row(row.data(), lows),
                None => break,
            }
        }
        Ok(())
    };
    reveal_with(key, total, len, &mut fill)
}

/// The error for a PNG whose size is past [`MAX_SIDE`] or [`MAX_DECODED_BYTES`].
fn too_large_png(len: usize, width: u32, height: u32) -> Error {
    Error::Unsupported(format!(
        "the PNG ({len} bytes) is {width}x{height}, too large to decode (at most {MAX_SIDE} pixels a side and {} MiB of pixels)",
        MAX_DECODED_BYTES >> 20
    ))
}

/// Translates a `png` crate error about the `what` (cover, image) into the codec's sentences.
fn png_error(e: png::DecodingError, what: &str, len: usize) -> Error {
    let name = format!("the {what} (PNG, {len} bytes)");
    match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Truncated(format!("{name} ends before the image is complete"))
        }
        png::DecodingError::LimitsExceeded => {
            Error::Unsupported(format!("{name} is too large to decode"))
        }
        other if looks_truncated(&other.to_string()) => Error::Truncated(format!(
            "{name} ends before the image is complete ({other})"
        )),
        other => Error::NotAnImage(format!("{name} is damaged: {other}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tiny_file_claiming_a_huge_image_is_refused_before_decoding() {
        // A 16x16 JPEG whose frame header is patched to claim 11552x4608 (160 MB of pixels).
        let img = image::RgbImage::from_pixel(16, 16, image::Rgb([90, 120, 200]));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        let mut jpeg = jpeg.into_inner();
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline frame header");
        // 160 MB of pixels (the first fuzz finding), and 10 MB (the second: 11552x288, which
        // passed the first limits and cost 0.2 s of decoding and encoding per 1.3 KB request).
        for height in [4608u16, 288] {
            jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
            jpeg[sof + 7..sof + 9].copy_from_slice(&11552u16.to_be_bytes());
            let started = std::time::Instant::now();
            let err = match decode_image(&jpeg, "cover") {
                Ok(img) => panic!(
                    "decoded a {}x{} image from {} bytes",
                    img.width(),
                    img.height(),
                    jpeg.len()
                ),
                Err(e) => e,
            };
            assert!(matches!(err, Error::Unsupported(_)), "{err}");
            assert!(err.to_string().contains("too large"), "{err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
    }

    use super::*;

    #[test]
    fn float_images_become_16_bit() {
        let rgb = image::Rgb32FImage::from_pixel(2, 2, image::Rgb([0.5, 1.0, 0.0]));
        let out = normalise(DynamicImage::ImageRgb32F(rgb)).unwrap();
        let DynamicImage::ImageRgb16(buf) = out else {
            panic!("expected 16-bit RGB")
        };
        assert_eq!(buf.get_pixel(0, 0).0[1], u16::MAX);
        let rgba = image::Rgba32FImage::from_pixel(1, 1, image::Rgba([0.0, 0.0, 0.0, 1.0]));
        let out = normalise(DynamicImage::ImageRgba32F(rgba)).unwrap();
        assert!(matches!(out, DynamicImage::ImageRgba16(_)));
    }

    /// A PNG of the given header whose only image data is `idat` (no IEND: it may stop early).
    fn raw_png(
        width: u32,
        height: u32,
        colour: u8,
        depth: u8,
        interlace: u8,
        idat: &[u8],
    ) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8; 4], data: &[u8]| {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let crc = crc32fast::hash(&out[start..]);
            out.extend_from_slice(&crc.to_be_bytes());
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[depth, colour, 0, 0, interlace]);
        chunk(b"IHDR", &ihdr);
        if !idat.is_empty() {
            chunk(b"IDAT", idat);
        }
        out
    }

    #[test]
    fn png_secrets_are_checked_as_containers() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(20, 10, |x, y| {
            image::Rgb([x as u8 * 9, y as u8 * 20, 7])
        }));
        let good = encode_png(&img).unwrap();
        check_secret(&good).unwrap();
        // A flipped bit in the pixel data: the decoder might not notice, the checksum does.
        let idat = good.windows(4).position(|w| w == b"IDAT").unwrap();
        let mut flipped = good.clone();
        flipped[idat + 8] ^= 0x10;
        let e = check_secret(&flipped).unwrap_err();
        assert!(matches!(e, Error::NotAnImage(_)), "{e}");
        assert!(
            e.to_string().contains("IDAT chunk fails its checksum"),
            "{e}"
        );
        // Cut anywhere: inside a chunk, between chunks (no IEND), or right after the signature.
        for cut in [good.len() - 1, good.len() - 12, idat + 2, 8] {
            let e = check_secret(&good[..cut]).unwrap_err();
            assert!(matches!(e, Error::Truncated(_)), "cut at {cut}: {e}");
        }
        assert!(matches!(
            check_secret(&raw_png(20, 10, 2, 8, 0, b"data")),
            Err(Error::Truncated(_))
        ));
        let bad_headers = [
            (raw_png(0, 10, 2, 8, 0, b"x"), "claims 0x10 pixels"),
            (raw_png(4, 4, 2, 4, 0, b"x"), "cannot have 4-bit samples"),
            (raw_png(4, 4, 5, 8, 0, b"x"), "colour type 5 does not exist"),
            (
                raw_png(4, 4, 2, 8, 2, b"x"),
                "unknown compression, filter or interlace",
            ),
        ];
        for (png, says) in bad_headers {
            let e = check_secret(&png).unwrap_err();
            assert!(
                matches!(e, Error::NotAnImage(_)) && e.to_string().contains(says),
                "{e}"
            );
        }
        let e = check_secret(&raw_png(MAX_SIDE + 1, 1, 0, 8, 0, b"x")).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        // Something else first, or no image data before IEND.
        let mut no_header = good[..8].to_vec();
        no_header.extend_from_slice(&good[33..]);
        let e = check_secret(&no_header).unwrap_err();
        assert!(e.to_string().contains("does not start with IHDR"), "{e}");
        let mut no_data = good[..33].to_vec();
        no_data.extend_from_slice(&good[good.len() - 12..]);
        let e = check_secret(&no_data).unwrap_err();
        assert!(e.to_string().contains("no image data"), "{e}");
        // Other formats are decoded as before.
        assert!(matches!(
            check_secret(b"GIF89a"),
            Err(Error::Truncated(_) | Error::NotAnImage(_))
        ));
    }

    #[test]
    fn huge_interlaced_pngs_are_refused_before_allocating() {
        let key = SealKey::from_secret(b"k");
        // 16-bit RGBA, interlaced: 2 GiB of pixels, or 80 GB past the side limit, from ~40 bytes.
        for side in [MAX_SIDE, 100_000] {
            let png = raw_png(side, side, 6, 16, 1, &[0x78, 0x01]);
            let err = decrypt_image(&png, &key).unwrap_err();
            assert!(matches!(err, Error::Unsupported(_)), "{err}");
            assert!(err.to_string().contains("too large"), "{err}");
        }
    }

    #[test]
    fn a_header_announcing_more_than_the_file_is_refused_before_allocating() {
        let key = SealKey::from_secret(b"k");
        let header = crate::codec::seal::Header {
            version: crate::codec::metadata::FORMAT_VERSION,
            bits: 1,
            body_len: 20_000_000,
            fingerprint: key.fingerprint(),
            nonce: [0; 24],
        }
        .to_bytes();
        // 8-bit gray, 2048 square (within the decode limits for its size): only the first row
        // is present (one stored deflate block), carrying the header in its low bits.
        let side = 2048;
        let mut row = vec![0u8; 1 + side as usize];
        for (k, bit) in header
            .iter()
            .flat_map(|b| (0..8).rev().map(move |s| (b >> s) & 1))
            .enumerate()
        {
            row[1 + k] = bit;
        }
        let mut idat = vec![0x78, 0x01, 0x00];
        idat.extend_from_slice(&(row.len() as u16).to_le_bytes());
        idat.extend_from_slice(&(!(row.len() as u16)).to_le_bytes());
        idat.extend_from_slice(&row);
        let png = raw_png(side, side, 0, 8, 0, &idat);
        let err = decrypt_image(&png, &key).unwrap_err();
        assert!(matches!(err, Error::Tampered(_)), "{err}");
        assert!(err.to_string().contains("whole file"), "{err}");
    }

    #[test]
    fn covers_past_the_decode_limits_are_refused() {
        let png = raw_png(MAX_SIDE + 1, 1, 0, 8, 0, &[0x78, 0x01]);
        let err = decode_image(&png, "cover").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn gathering_undoes_spreading_for_every_byte() {
        for byte in 0..=255u8 {
            // Bits above the carried ones must not leak into the result.
            let noisy1 = SPREAD_1[usize::from(byte)].map(|s| s | 0b1010_1110);
            assert_eq!(gather_1(&noisy1), byte);
            let noisy2 = SPREAD_2[usize::from(byte)].map(|s| s | 0b1111_0100);
            assert_eq!(gather_2(&noisy2), byte);
        }
        assert_eq!(SPREAD_1[0b1000_0001], [1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(SPREAD_2[0b1101_0010], [3, 1, 0, 2]);
    }

    #[test]
    fn noise_covers_are_stored_rather_than_inflated() {
        let key = SealKey::from_secret(b"k");
        let meta = ImageMeta::new("alice", vec![]).unwrap();
        let secret = encode_png(&DynamicImage::ImageRgb8(image::RgbImage::new(4, 4))).unwrap();
        let mut noise = image::RgbImage::new(96, 96);
        let mut x = 0x9E37_79B9u32;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let noise = DynamicImage::ImageRgb8(noise);
        let cover = encode_png(&noise).unwrap();
        let shape = Shape::of(&noise).unwrap();
        assert!(
            cover.len() > stored_png_len(&shape),
            "deflate should not help noise"
        );
        let out = encrypt_image(&secret, Cover::Image(&cover), &meta, &key).unwrap();
        assert_eq!(out.len(), stored_png_len(&shape));
        assert_eq!(decrypt_image(&out, &key).unwrap().1, secret);
    }

    #[test]
    fn carriers_skip_alpha() {
        let layout = Layout {
            channels: 4,
            colour: 3,
        };
        let indices: Vec<usize> = (0..6).map(|k| layout.index(k)).collect();
        assert_eq!(indices, [0, 1, 2, 4, 5, 6]);
        assert_eq!(samples_needed(1, 2), HEADER_SAMPLES as u64 + 4);
    }
}
