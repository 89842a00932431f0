//! The default cover: a procedural landscape that unauthorised viewers see, and its cache.
//!
//! How it works. [`landscape`] paints, per pixel and with no randomness, a sky gradient from
//! deep blue to a warm horizon, a sun with a soft glow, and four layers of hills (far ones hazy
//! and blue, near ones dark green), each ridge a sum of three sines of the x coordinate, with
//! anti-aliased edges and a faint deterministic dither against banding. All positions are
//! fractions of the size, so every size shows the same scene. [`size_for_samples`] picks the
//! smallest 4:3 size of a fixed ladder (width 128, 160, 192, ... in steps of 32) that holds a
//! number of colour samples, and [`DefaultCovers`] keeps the painted images by ladder width so
//! that a busy node paints each size once and then only copies it.
//!
//! Implementation caveats: the cache holds at most [`CACHE_ENTRIES`] sizes and [`CACHE_BYTES`]
//! of pixels; when full it drops the largest other ones, and a cover bigger than the whole
//! budget is painted for its request and not kept; two threads missing the same size at once both paint it (the first
//! to finish wins). The scene is the same for every user, so it says nothing about the owner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use image::RgbImage;

/// Smallest default cover width.
pub const MIN_WIDTH: u32 = 128;
/// Smallest default cover height.
pub const MIN_HEIGHT: u32 = 96;
/// Width step between two sizes of the ladder (the height steps by 3/4 of it).
pub const STEP_WIDTH: u32 = 32;
/// Largest default cover width (8192x6144, about 50 megapixels).
pub const MAX_WIDTH: u32 = 8192;
/// Most sizes a [`DefaultCovers`] keeps at once.
pub const CACHE_ENTRIES: usize = 8;
/// Most pixel bytes a [`DefaultCovers`] keeps at once. Covers of the demo's and the stress
/// test's sizes take well under 1 MB; the cover of a 27 MB upload takes ~110 MB, and keeping
/// such covers (up to eight of up to 151 MB) held a node at 175-229 MB after a flood instead
/// of its idle 12 MB (issue 31). Painting a cover that big costs less than encrypting into it.
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The 4:3 ladder size of a given ladder width.
fn ladder_size(width: u32) -> (u32, u32) {
    (width, width / 4 * 3)
}

/// Smallest ladder size with at least `samples` colour samples (3 per pixel), if any fits.
pub fn size_for_samples(samples: u64) -> Option<(u32, u32)> {
    let mut width = MIN_WIDTH;
    while width <= MAX_WIDTH {
        let (w, h) = ladder_size(width);
        if u64::from(w) * u64::from(h) * 3 >= samples {
            return Some((w, h));
        }
        width += STEP_WIDTH;
    }
    None
}

/// A cache of painted default covers, keyed by ladder width; cheap to share between threads.
#[derive(Debug, Default)]
pub struct DefaultCovers {
    cache: Mutex<HashMap<u32, Arc<RgbImage>>>,
}

impl DefaultCovers {
    /// An empty cache.
    pub fn new() -> DefaultCovers {
        DefaultCovers::default()
    }

    /// The smallest default cover with at least `samples` colour samples, or `None` past the largest.
    pub fn for_samples(&self, samples: u64) -> Option<Arc<RgbImage>> {
        let (width, _) = size_for_samples(samples)?;
        Some(self.get(width))
    }

    /// The default cover of a ladder width (rounded up to the ladder), painting it on a miss.
    pub fn get(&self, width: u32) -> Arc<RgbImage> {
        let steps = width.saturating_sub(MIN_WIDTH).div_ceil(STEP_WIDTH);
        let width = (MIN_WIDTH + steps * STEP_WIDTH).min(MAX_WIDTH);
        if let Some(hit) = self.lock().get(&width) {
            return Arc::clone(hit);
        }
        let (w, h) = ladder_size(width);
        let painted = Arc::new(landscape(w, h));
        let size = painted.as_raw().len();
        if size > CACHE_BYTES {
            return painted;
        }
        let mut cache = self.lock();
        let bytes = |cache: &HashMap<u32, Arc<RgbImage>>| -> usize {
            cache.values().map(|c| c.as_raw().len()).sum()
        };
        while cache.len() >= CACHE_ENTRIES || bytes(&cache) + size > CACHE_BYTES {
            let Some(&largest) = cache.keys().filter(|&&k| k != width).max() else {
                break;
            };
            cache.remove(&largest);
        }
        Arc::clone(cache.entry(width).or_insert(painted))
    }

    /// How many sizes are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the map; a panic elsewhere cannot leave it inconsistent, so poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<RgbImage>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One hill layer: ridge base and amplitude (fractions of height), colour, and sine phases.
struct Hill {
    base: f32,
    amp: f32,
    colour: [f32; 3],
    phase: [f32; 3],
}

const HILLS: [Hill; 4] = [
    Hill {
        base: 0.60,
        amp: 0.07,
        colour: [132.0, 128.0, 176.0],
        phase: [0.3, 1.7, 4.1],
    },
    Hill {
        base: 0.68,
        amp: 0.06,
        colour: [96.0, 124.0, 150.0],
        phase: [2.2, 0.4, 1.3],
    },
    Hill {
        base: 0.78,
        amp: 0.06,
        colour: [70.0, 120.0, 84.0],
        phase: [4.0, 2.9, 0.8],
    },
    Hill {
        base: 0.88,
        amp: 0.05,
        colour: [40.0, 86.0, 50.0],
        phase: [1.1, 5.2, 2.6],
    },
];

/// Paints the default landscape at the given size (deterministic: same size, same pixels).
pub fn landscape(width: u32, height: u32) -> RgbImage {
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    let horizon = 0.62 * h;
    let (sun_x, sun_y, sun_r) = (0.70 * w, 0.40 * h, 0.065 * w.min(h));
    let top = [38.0, 84.0, 160.0];
    let low = [250.0, 198.0, 150.0];
    // Ridge heights depend on x only: compute them once per column.
    let ridges: Vec<[f32; 4]> = (0..width)
        .map(|x| {
            let u = x as f32 / w * std::f32::consts::TAU;
            let mut r = [0f32; 4];
            for (i, hill) in HILLS.iter().enumerate() {
                let wave = 0.6 * (1.3 * u + hill.phase[0]).sin()
                    + 0.3 * (3.1 * u + hill.phase[1]).sin()
                    + 0.1 * (7.7 * u + hill.phase[2]).sin();
                r[i] = h * (hill.base - hill.amp * wave);
            }
            r
        })
        .collect();
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        let t = (fy / horizon).clamp(0.0, 1.0);
        let t = t * t * (3.0 - 2.0 * t);
        let mut c = lerp3(top, low, t);
        let d = ((fx - sun_x).powi(2) + (fy - sun_y).powi(2)).sqrt();
        let glow = 0.55 * (-(d / (3.5 * sun_r)).powi(2)).exp();
        c = lerp3(c, [255.0, 214.0, 150.0], glow);
        c = lerp3(c, [255.0, 244.0, 210.0], (sun_r - d + 0.5).clamp(0.0, 1.0));
        for (i, hill) in HILLS.iter().enumerate() {
            let ridge = ridges[x as usize][i];
            let cover = (fy - ridge).clamp(0.0, 1.0);
            if cover > 0.0 {
                // Deeper below the ridge is darker; the far layers keep some sky haze.
                let depth = ((fy - ridge) / h).clamp(0.0, 1.0);
                let shaded = scale3(hill.colour, 1.0 - 0.9 * depth);
                let haze = 0.25 * (3 - i) as f32 / 3.0;
                c = lerp3(c, lerp3(shaded, low, haze), cover);
            }
        }
        let n = dither(x, y);
        image::Rgb(c.map(|v| (v + n).round().clamp(0.0, 255.0) as u8))
    })
}

/// Linear blend of two colours.
fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// A colour scaled towards black.
fn scale3(a: [f32; 3], k: f32) -> [f32; 3] {
    a.map(|v| v * k)
}

/// A deterministic value in [-0.75, 0.75) from an integer hash of the pixel position.
fn dither(x: u32, y: u32) -> f32 {
    let mut v = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77);
    v ^= v >> 15;
    v = v.wrapping_mul(0x2C1B_3C6D);
    v ^= v >> 12;
    (v & 0xFF) as f32 / 170.0 - 0.75
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_starts_at_minimum_and_grows() {
        assert_eq!(size_for_samples(0), Some((128, 96)));
        assert_eq!(size_for_samples(128 * 96 * 3), Some((128, 96)));
        assert_eq!(size_for_samples(128 * 96 * 3 + 1), Some((160, 120)));
        assert_eq!(size_for_samples(u64::MAX), None);
    }

    #[test]
    fn landscape_is_deterministic_and_cached() {
        assert_eq!(landscape(64, 48), landscape(64, 48));
        let covers = DefaultCovers::new();
        let a = covers.for_samples(1000).unwrap();
        let b = covers.get(100);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.dimensions(), (128, 96));
        assert_eq!(covers.len(), 1);
    }

    /// Issue 31: the cover of a huge upload (up to 151 MB) stayed in the cache after it.
    #[test]
    fn the_cache_keeps_no_more_than_its_bytes() {
        let covers = DefaultCovers::new();
        let small = covers.get(640);
        let huge = covers.for_samples(CACHE_BYTES as u64 + 1).unwrap();
        assert!(huge.as_raw().len() > CACHE_BYTES);
        assert_eq!(covers.len(), 1, "painted, not kept");
        assert!(Arc::ptr_eq(&small, &covers.get(640)));
        let half = covers.for_samples(CACHE_BYTES as u64 / 2).unwrap();
        let more = covers.for_samples(CACHE_BYTES as u64 / 8 * 5).unwrap();
        assert!(more.width() > half.width());
        assert!(half.as_raw().len() + more.as_raw().len() > CACHE_BYTES);
        let kept: usize = [640, half.width(), more.width()]
            .iter()
            .filter(|&&w| covers.lock().contains_key(&w))
            .map(|&w| covers.get(w).as_raw().len())
            .sum();
        assert!(kept <= CACHE_BYTES, "{kept} bytes kept");
        assert!(
            covers.lock().contains_key(&more.width()),
            "the newest is kept"
        );
    }

    #[test]
    fn default_covers_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<DefaultCovers>();
    }
}
