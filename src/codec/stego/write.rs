//! Writing the output PNG row by row: each row filled, given its share of the payload, filtered
//! and compressed at once, so no second image-sized buffer exists.

use std::io::Cursor;

use super::carriers::{Embedder, Shape};
use crate::error::{Error, Result};

/// PNG filter of every output: as small as adaptive on photos within 5 %, and 20 % faster (see DESIGN.md).
pub const PNG_FILTER: png::Filter = png::Filter::Up;

/// The byte that announces [`PNG_FILTER`] at the start of each row.
const PNG_FILTER_BYTE: u8 = 2;

/// Size of the PNG [`write_png`] makes of `shape` with [`Deflate::Stored`]: signature, IHDR,
/// the zlib stream (2-byte header, 5 bytes per 64 KiB block, Adler-32) in one IDAT, IEND.
pub(super) fn stored_png_len(shape: &Shape) -> usize {
    let raw = (shape.row_len() + 1) * shape.height as usize;
    8 + 25 + 12 + 2 + raw + 5 * raw.div_ceil(65535).max(1) + 4 + 12
}

/// Writes a raster as PNG, row by row: `fill` gives each row's bytes, the embedder adds the
/// payload, and the row is filtered ("Up") and compressed at once, so no second image buffer
/// exists. The compressed stream is one IDAT chunk.
pub(super) fn write_png(
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
pub(super) enum Deflate {
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
