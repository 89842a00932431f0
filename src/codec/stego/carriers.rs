//! The carriers: where a payload's bits sit among an image's samples ([`Layout`], [`Shape`]),
//! writing them into rows ([`Embedder`]) and reading them back ([`low_byte`], [`gather_1`],
//! [`gather_2`]).

use image::DynamicImage;

use super::HEADER_SAMPLES;
use crate::error::{Error, Result};

/// Where the carriers sit among the samples: `colour` of every `channels` samples.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Layout {
    pub(super) channels: usize,
    pub(super) colour: usize,
}

impl Layout {
    /// The layout of a PNG colour type (palettes are expanded before this is asked).
    pub(super) fn of(color: png::ColorType) -> Result<Layout> {
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
    pub(super) fn carriers(&self, width: u32, height: u32) -> u64 {
        u64::from(width) * u64::from(height) * self.colour as u64
    }

    /// Sample index of carrier `k`.
    pub(super) fn index(&self, k: usize) -> usize {
        if self.channels == self.colour {
            k
        } else {
            k / self.colour * self.channels + k % self.colour
        }
    }
}

/// A raster as PNG sees it: size, colour type, and 8 or 16 bits per sample.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) color: png::ColorType,
    pub(super) sixteen: bool,
    pub(super) layout: Layout,
}

impl Shape {
    pub(super) fn new(
        width: u32,
        height: u32,
        color: png::ColorType,
        sixteen: bool,
    ) -> Result<Shape> {
        Ok(Shape {
            width,
            height,
            color,
            sixteen,
            layout: Layout::of(color)?,
        })
    }

    /// The shape of a normalised image.
    pub(super) fn of(image: &DynamicImage) -> Result<Shape> {
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

    /// Bytes per sample: 1 or 2.
    pub(super) fn bytes_per_sample(&self) -> usize {
        if self.sixteen {
            2
        } else {
            1
        }
    }

    /// Bytes of one row (16-bit samples big-endian, as in PNG).
    pub(super) fn row_len(&self) -> usize {
        self.width as usize * self.layout.channels * self.bytes_per_sample()
    }

    /// Number of carriers.
    pub(super) fn carriers(&self) -> u64 {
        self.layout.carriers(self.width, self.height)
    }
}

/// Writes the payload into the carriers of a raster's rows, one row at a time.
#[derive(Clone, Debug, Default)]
pub(super) struct Embedder {
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
    pub(super) fn new(shape: &Shape, header: &[u8], body: &[u8], bits: u8) -> Embedder {
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
    pub(super) fn embed_row(&mut self, row: &mut [u8]) {
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
pub(super) const SPREAD_1: [[u8; 8]; 256] = spread_table::<8>(1);
/// A byte's four 2-bit symbols.
pub(super) const SPREAD_2: [[u8; 4]; 256] = spread_table::<4>(2);

/// A decoded image's rows as PNG wants them (16-bit samples big-endian).
pub(super) struct RowsOf<'a> {
    rows: std::slice::ChunksExact<'a, u8>,
    sixteen: bool,
}

impl<'a> RowsOf<'a> {
    pub(super) fn new(image: &'a DynamicImage, row_len: usize) -> RowsOf<'a> {
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
    pub(super) fn next_into(&mut self, row: &mut [u8]) {
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

/// The least significant byte of sample `i` of a normalised image.
pub(super) fn low_byte(image: &DynamicImage, i: usize) -> u8 {
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

/// The byte whose bits are the lowest bits of eight carriers, first carrier most significant
/// (the inverse of [`SPREAD_1`]): one multiplication moves the eight bits side by side.
pub(super) fn gather_1(lows: &[u8]) -> u8 {
    let word = u64::from_be_bytes(lows.try_into().unwrap_or_default());
    ((word & 0x0101_0101_0101_0101).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// The byte made of the two lowest bits of four carriers (the inverse of [`SPREAD_2`]).
pub(super) fn gather_2(lows: &[u8]) -> u8 {
    let word = u32::from_be_bytes(lows.try_into().unwrap_or_default());
    ((word & 0x0303_0303).wrapping_mul(0x0104_1040) >> 24) as u8
}

/// Converts a decoded image into one of the eight layouts that carry a payload.
pub(super) fn normalise(image: DynamicImage) -> Result<DynamicImage> {
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
