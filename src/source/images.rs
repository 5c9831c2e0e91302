//! A directory of still images replayed as a video: `.jpg`/`.jpeg` pass through as JPEG,
//! `.png` is decoded.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Pacer, Skipped, Source, SourceError};
use crate::config::SourceConfig;
use crate::frame::{Captured, Image, JpegImage};
use crate::inspect::Refusal;
use crate::limits::Limits;

/// What a file in the directory is, by its extension (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jpeg,
    Png,
}

fn kind_of(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => Some(Kind::Jpeg),
        "png" => Some(Kind::Png),
        _ => None,
    }
}

/// What [`list_images`] found.
struct Listing {
    /// `.jpg`, `.jpeg` and `.png` regular files, sorted by file name.
    files: Vec<(PathBuf, Kind)>,
    /// Entries with such a name that are not regular files (after following symlinks):
    /// devices, FIFOs, sockets, directories, dangling links. Never opened: a FIFO would
    /// block the source and a device would never end.
    skipped: Vec<PathBuf>,
}

/// The `.jpg`, `.jpeg` and `.png` files (extensions case-insensitive, symlinks followed)
/// directly in `dir`, sorted by file name (byte order). Files with other names are
/// ignored; entries with an image's name that are not regular files are listed as skipped.
fn list_images(dir: &Path) -> std::io::Result<Listing> {
    let mut files: Vec<(OsString, PathBuf, Kind)> = Vec::new();
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(kind) = kind_of(&path) else { continue };
        // `metadata` follows symlinks.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push((entry.file_name(), path, kind));
        } else {
            skipped.push(path);
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    skipped.sort();
    Ok(Listing {
        files: files.into_iter().map(|(_, p, k)| (p, k)).collect(),
        skipped,
    })
}

/// Why one file gave no frame.
enum LoadError {
    /// Not a regular file any more, or unreadable.
    Io(String),
    /// Checked and refused (too large, broken).
    Refused(Refusal),
}

/// Reads one image file into an [`Image`], within `limits`.
///
/// The file's size is checked before it is opened and at most `max_frame_bytes + 1` bytes
/// are read, so a 2 GB file (sparse or not) costs nothing. JPEG: the bytes through the first
/// image's EOI (anything appended after it is dropped), checked by [`JpegImage::checked`],
/// not decoded. PNG: checked by [`crate::inspect::png`] (IHDR within the limits, CRCs, IEND),
/// then decoded by [`crate::encode::codec::decode_png`] to RGB8, or Gray8 when the PNG has
/// no colour; alpha is dropped (not composited).
fn load(path: &Path, kind: Kind, limits: &Limits) -> Result<Image, LoadError> {
    let io = |e: std::io::Error| LoadError::Io(e.to_string());
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(LoadError::Io("no longer a regular file".into()));
    }
    limits
        .check_bytes(meta.len())
        .map_err(|e| LoadError::Refused(e.into()))?;
    let mut data = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .map_err(io)?
        .take(limits.max_frame_bytes as u64 + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    // The file may have grown since `metadata`.
    limits
        .check_bytes(data.len() as u64)
        .map_err(|e| LoadError::Refused(e.into()))?;
    image_from_bytes(data, kind, limits).map_err(LoadError::Refused)
}

/// A file's bytes as the frame it holds: see [`load`].
fn image_from_bytes(data: Vec<u8>, kind: Kind, limits: &Limits) -> Result<Image, Refusal> {
    match kind {
        Kind::Jpeg => JpegImage::checked(Bytes::from(data), limits).map(Image::Jpeg),
        Kind::Png => {
            crate::inspect::png(&data, limits)?;
            crate::encode::codec::decode_png(&data, limits)
                .map(Image::Raw)
                .map_err(|e| Refusal::Broken(e.to_string()))
        }
    }
}

/// Replays the `.jpg`/`.jpeg`/`.png` files of a directory (`source.path`) in file-name
/// order at `source.fps` (`0` = as fast as they can be read), from the start again when
/// `source.loop` is set.
///
/// JPEG files are yielded as [`Image::Jpeg`] (not decoded, so they may pass through
/// untouched); PNG files as [`Image::Raw`], RGB8 (`width*height*3` bytes) or Gray8 for
/// grayscale PNGs (`width*height` bytes), alpha dropped. The directory is listed once, at
/// open. A file that cannot be read or decoded gives [`SourceError::BadFrame`] naming it;
/// the next call goes on with the next file.
#[derive(Debug)]
pub struct ImagesSource {
    dir: PathBuf,
    files: Vec<(PathBuf, Kind)>,
    next: usize,
    loop_: bool,
    pacer: Pacer,
    limits: Limits,
    /// Non-regular entries found at open, not yet reported by `take_skipped`.
    skipped_files: u64,
}

impl ImagesSource {
    /// Lists `cfg.path`. Entries with an image's name that are not regular files are
    /// skipped, logged once here and counted (see [`Source::take_skipped`]).
    ///
    /// Errors: [`SourceError::Open`] naming the directory when `cfg.path` is unset, the
    /// directory is missing or unreadable, or it holds no `.jpg`/`.jpeg`/`.png` file.
    pub fn open(cfg: &SourceConfig, limits: &Limits) -> Result<Self, SourceError> {
        let Some(dir) = &cfg.path else {
            return Err(SourceError::Open {
                what: "images source".into(),
                message: "source.path (the directory) is not set".into(),
            });
        };
        let open_err = |message: String| SourceError::Open {
            what: dir.display().to_string(),
            message,
        };
        let Listing { files, skipped } = list_images(dir).map_err(|e| open_err(e.to_string()))?;
        if !skipped.is_empty() {
            tracing::warn!(
                dir = %dir.display(),
                count = skipped.len(),
                first = %skipped[0].display(),
                "skipping entries with an image's name that are not regular files (devices, \
                 FIFOs, sockets, directories, dangling links)"
            );
        }
        if files.is_empty() {
            return Err(open_err(if skipped.is_empty() {
                "no .jpg, .jpeg or .png files".into()
            } else {
                format!(
                    "no .jpg, .jpeg or .png regular files ({} entries are devices, FIFOs, \
                     directories or dangling links)",
                    skipped.len()
                )
            }));
        }
        Ok(ImagesSource {
            dir: dir.clone(),
            files,
            next: 0,
            loop_: cfg.loop_,
            pacer: Pacer::new(cfg.fps),
            limits: *limits,
            skipped_files: skipped.len() as u64,
        })
    }

    /// Number of image files found at open.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Always `false`: [`ImagesSource::open`] refuses an empty directory.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl Source for ImagesSource {
    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError> {
        if self.next == self.files.len() {
            if !self.loop_ {
                return Ok(None);
            }
            self.next = 0;
        }
        let (path, kind) = &self.files[self.next];
        self.next += 1;
        self.pacer.wait();
        let image = load(path, *kind, &self.limits).map_err(|e| match e {
            LoadError::Io(e) => SourceError::BadFrame(format!("{}: {e}", path.display())),
            LoadError::Refused(r) => SourceError::refused(path.display(), r),
        })?;
        Ok(Some(Captured::now(image)))
    }

    fn describe(&self) -> String {
        format!(
            "images {} ({} files{})",
            self.dir.display(),
            self.files.len(),
            if self.loop_ { ", loop" } else { "" }
        )
    }

    fn set_fps(&mut self, fps: f64) -> bool {
        self.pacer = Pacer::new(fps);
        true
    }

    fn take_skipped(&mut self) -> Skipped {
        Skipped {
            bytes: 0,
            files: std::mem::take(&mut self.skipped_files),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;
    use proptest::prelude::*;

    fn cfg(dir: &Path, extra: &str) -> SourceConfig {
        toml::from_str(&format!(
            "kind = \"images\"\npath = '{}'\nfps = 0\n{extra}",
            dir.display()
        ))
        .unwrap()
    }

    fn write_jpeg(path: &Path, w: u32, h: u32) {
        let px: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        image::RgbImage::from_raw(w, h, px)
            .unwrap()
            .save_with_format(path, image::ImageFormat::Jpeg)
            .unwrap();
    }

    fn write_png_rgba(path: &Path, w: u32, h: u32) {
        let px: Vec<u8> = (0..w * h)
            .flat_map(|i| [(i % 256) as u8, 10, 200, 7])
            .collect();
        image::RgbaImage::from_raw(w, h, px)
            .unwrap()
            .save_with_format(path, image::ImageFormat::Png)
            .unwrap();
    }

    fn write_png_gray(path: &Path, w: u32, h: u32) {
        let px: Vec<u8> = (0..w * h).map(|i| (i * 3 % 256) as u8).collect();
        image::GrayImage::from_raw(w, h, px)
            .unwrap()
            .save_with_format(path, image::ImageFormat::Png)
            .unwrap();
    }

    fn all(src: &mut ImagesSource, limit: usize) -> Vec<Result<Captured, SourceError>> {
        let mut out = Vec::new();
        while out.len() < limit {
            match src.next_frame() {
                Ok(Some(c)) => out.push(Ok(c)),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    /// b.JPG (jpeg 40x30), a.png (rgba 20x10), c.jpeg (16x16), d.png (gray 8x4),
    /// notes.txt, e.gif (ignored), sub.jpg/ (a directory, ignored).
    fn mixed_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write_jpeg(&p.join("b.JPG"), 40, 30);
        write_png_rgba(&p.join("a.png"), 20, 10);
        write_jpeg(&p.join("c.jpeg"), 16, 16);
        write_png_gray(&p.join("d.PNG"), 8, 4);
        std::fs::write(p.join("notes.txt"), "not an image").unwrap();
        std::fs::write(p.join("e.gif"), "GIF89a").unwrap();
        std::fs::create_dir(p.join("sub.jpg")).unwrap();
        dir
    }

    #[test]
    fn replays_mixed_directory_in_name_order() {
        let dir = mixed_dir();
        let mut src = ImagesSource::open(&cfg(dir.path(), ""), &Limits::default()).unwrap();
        assert_eq!(src.len(), 4);
        let got: Vec<Image> = all(&mut src, 100)
            .into_iter()
            .map(|r| r.unwrap().image)
            .collect();
        assert_eq!(got.len(), 4);
        // a.png: RGBA decoded to RGB8, alpha dropped.
        let Image::Raw(a) = &got[0] else {
            panic!("a.png should be raw")
        };
        assert_eq!((a.width, a.height, a.format), (20, 10, PixelFormat::Rgb8));
        assert_eq!(a.data.len(), 20 * 10 * 3);
        assert_eq!(&a.data[3..6], &[1, 10, 200]);
        // b.JPG passes through as the file's bytes.
        let Image::Jpeg(b) = &got[1] else {
            panic!("b.JPG should be jpeg")
        };
        assert_eq!((b.width, b.height), (40, 30));
        assert_eq!(
            &b.data[..],
            &std::fs::read(dir.path().join("b.JPG")).unwrap()[..]
        );
        assert!(matches!(&got[2], Image::Jpeg(j) if (j.width, j.height) == (16, 16)));
        // d.PNG: grayscale stays Gray8.
        let Image::Raw(d) = &got[3] else {
            panic!("d.PNG should be raw")
        };
        assert_eq!((d.width, d.height, d.format), (8, 4, PixelFormat::Gray8));
        assert_eq!(&d.data[..3], &[0, 3, 6]);
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn loop_restarts_at_first_file() {
        let dir = mixed_dir();
        let mut src =
            ImagesSource::open(&cfg(dir.path(), "loop = true"), &Limits::default()).unwrap();
        let widths: Vec<u32> = all(&mut src, 10)
            .into_iter()
            .map(|r| r.unwrap().image.width())
            .collect();
        assert_eq!(widths, [20, 40, 16, 8, 20, 40, 16, 8, 20, 40]);
    }

    #[test]
    fn corrupt_file_is_a_bad_frame_naming_it_and_replay_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write_jpeg(&p.join("1.jpg"), 10, 10);
        std::fs::write(p.join("2.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
        let good = std::fs::read(p.join("1.jpg")).unwrap();
        std::fs::write(p.join("3.jpg"), &good[..good.len() / 2]).unwrap(); // truncated
        std::fs::write(p.join("4.jpg"), b"plain text").unwrap();
        write_jpeg(&p.join("5.jpg"), 12, 10);
        let mut src = ImagesSource::open(&cfg(p, ""), &Limits::default()).unwrap();
        let got = all(&mut src, 100);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].as_ref().unwrap().image.width(), 10);
        for (r, name) in got[1..4].iter().zip(["2.png", "3.jpg", "4.jpg"]) {
            match r {
                Err(e @ SourceError::BadFrame(msg)) => {
                    assert!(e.is_frame_error());
                    assert!(msg.contains(name), "{msg}");
                }
                other => panic!("{name}: expected BadFrame, got {other:?}"),
            }
        }
        assert_eq!(got[4].as_ref().unwrap().image.width(), 12);
    }

    #[test]
    fn hostile_files_are_refused_counted_and_replay_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write_jpeg(&p.join("0-good.jpg"), 10, 10);
        // A 2 GB sparse file: refused from its size, never read.
        let big = std::fs::File::create(p.join("1-big.jpg")).unwrap();
        big.set_len(2 << 30).unwrap();
        // A JPEG whose SOF declares 65000x65000.
        let mut forged = std::fs::read(p.join("0-good.jpg")).unwrap();
        let sof = (0..forged.len() - 1)
            .find(|&i| forged[i] == 0xFF && forged[i + 1] == 0xC0)
            .unwrap();
        forged[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
        std::fs::write(p.join("2-forged.jpg"), &forged).unwrap();
        // A PNG whose IHDR (CRC fixed) declares 30000x30000.
        write_png_gray(&p.join("3-bomb.png"), 8, 8);
        let mut bomb = std::fs::read(p.join("3-bomb.png")).unwrap();
        bomb[16..24].copy_from_slice(&[0, 0, 0x75, 0x30, 0, 0, 0x75, 0x30]);
        let crc = crc32fast::hash(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(p.join("3-bomb.png"), &bomb).unwrap();
        std::fs::write(p.join("4-empty.jpg"), b"").unwrap();
        // Not regular files: never opened, counted once.
        std::os::unix::fs::symlink("/dev/zero", p.join("5-zero.jpg")).unwrap();
        let fifo = p.join("6-fifo.png");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        write_jpeg(&p.join("7-good.jpg"), 12, 10);

        let mut src = ImagesSource::open(&cfg(p, ""), &Limits::default()).unwrap();
        assert_eq!(src.len(), 6);
        assert_eq!(src.take_skipped(), Skipped { bytes: 0, files: 2 });
        assert_eq!(src.take_skipped(), Skipped::default());
        let got = all(&mut src, 100);
        assert_eq!(got.len(), 6);
        assert_eq!(got[0].as_ref().unwrap().image.width(), 10);
        for (r, (name, too_large)) in got[1..5].iter().zip([
            ("1-big.jpg", true),
            ("2-forged.jpg", true),
            ("3-bomb.png", true),
            ("4-empty.jpg", false),
        ]) {
            match r {
                Err(SourceError::TooLarge(m)) if too_large => assert!(m.contains(name), "{m}"),
                Err(SourceError::BadFrame(m)) if !too_large => assert!(m.contains(name), "{m}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(got[5].as_ref().unwrap().image.width(), 12);
    }

    #[test]
    fn png_of_every_colour_type_and_depth_decodes_within_limits() {
        use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (5u32, 3u32);
        let images = [
            DynamicImage::ImageLumaA8(ImageBuffer::<LumaA<u8>, _>::from_fn(w, h, |x, _| {
                LumaA([x as u8 * 10, 99])
            })),
            DynamicImage::ImageRgb16(ImageBuffer::<Rgb<u16>, _>::from_fn(w, h, |x, _| {
                Rgb([x as u16 * 2570, 0, 65535])
            })),
            DynamicImage::ImageRgba16(ImageBuffer::<Rgba<u16>, _>::from_fn(w, h, |x, _| {
                Rgba([x as u16 * 2570, 0, 65535, 1])
            })),
            DynamicImage::ImageLuma16(ImageBuffer::<Luma<u16>, _>::from_fn(w, h, |x, _| {
                Luma([x as u16 * 2570])
            })),
        ];
        for (i, img) in images.iter().enumerate() {
            img.save_with_format(dir.path().join(format!("{i}.png")), image::ImageFormat::Png)
                .unwrap();
        }
        let mut src = ImagesSource::open(&cfg(dir.path(), ""), &Limits::default()).unwrap();
        let got: Vec<Image> = all(&mut src, 10)
            .into_iter()
            .map(|r| r.unwrap().image)
            .collect();
        let raw = |i: usize| match &got[i] {
            Image::Raw(r) => r.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(raw(0).format, PixelFormat::Gray8);
        assert_eq!(&raw(0).data[..3], &[0, 10, 20]);
        assert_eq!(raw(1).format, PixelFormat::Rgb8);
        assert_eq!(&raw(1).data[3..6], &[10, 0, 255]);
        assert_eq!(raw(2).format, PixelFormat::Rgb8);
        assert_eq!(&raw(2).data[6..9], &[20, 0, 255]);
        assert_eq!((raw(3).format, raw(3).data[4]), (PixelFormat::Gray8, 40));
    }

    /// Real frames with random damage: bit flips, bytes overwritten, cuts, forged sizes.
    fn damaged_frame() -> impl Strategy<Value = (Kind, Vec<u8>)> {
        let frames = crate::source::mjpeg::tests::fixture_frames();
        let n = frames.len();
        (
            0..n + 1,
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            prop::option::of(any::<prop::sample::Index>()),
            prop::option::of((any::<u16>(), any::<u16>())),
        )
            .prop_map(move |(i, writes, cut, sof)| {
                let (kind, mut data) = if i < n {
                    (Kind::Jpeg, frames[i].to_vec())
                } else {
                    let img = crate::frame::RawImage::new(
                        9,
                        7,
                        PixelFormat::Rgb8,
                        (0..9 * 7 * 3).map(|v| v as u8).collect(),
                    )
                    .unwrap();
                    (Kind::Png, crate::encode::codec::encode_png(&img).unwrap())
                };
                if let (Some((w, h)), Kind::Jpeg) = (sof, kind) {
                    if let Some(p) =
                        (2..data.len() - 1).find(|&p| data[p] == 0xFF && data[p + 1] == 0xC0)
                    {
                        data[p + 5..p + 7].copy_from_slice(&h.to_be_bytes());
                        data[p + 7..p + 9].copy_from_slice(&w.to_be_bytes());
                    }
                }
                for (at, v) in writes {
                    let at = at.index(data.len());
                    data[at] = v;
                }
                if let Some(c) = cut {
                    data.truncate(c.index(data.len() + 1));
                }
                (kind, data)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
        /// Whatever the bytes of a file, the frame is either refused with a counted reason
        /// at the source, or the encoder publishes a whole, decodable image within the
        /// budget, or drops it with a counted reason; nothing panics.
        #[test]
        fn any_file_is_published_decodable_within_budget_or_dropped_with_a_reason(
            (kind, data) in prop_oneof![
                3 => damaged_frame(),
                1 => prop::collection::vec(any::<u8>(), 0..2000).prop_map(|d| (Kind::Jpeg, d)),
            ],
            budget in prop::sample::select(vec![8_000u32, 30_000, 1_000_000]),
        ) {
            let limits = Limits { max_pixels: 2_000_000, ..Limits::default() };
            let image = match image_from_bytes(data, kind, &limits) {
                Ok(image) => image,
                Err(r) => {
                    prop_assert!(["bad_frame", "frame_too_large"].contains(&r.reason()));
                    return Ok(());
                }
            };
            let cfg = crate::config::EncodeConfig {
                max_message_bytes: crate::config::types::Budget::new(budget).unwrap(),
                ..Default::default()
            };
            let mut enc = crate::encode::Encoder::with_limits("cam", cfg, Default::default(), limits).unwrap();
            match enc.encode(&image) {
                Ok(e) => {
                    prop_assert!(e.payload.len() <= enc.value_budget());
                    let i = crate::inspect::jpeg(&e.payload, &limits);
                    prop_assert!(i.is_ok(), "published frame fails the check: {:?}", i);
                    let i = i.unwrap();
                    prop_assert_eq!((i.width, i.height), (e.width, e.height));
                    if !e.passthrough {
                        // Re-encoded by edgecam: it decodes.
                        let mut j = crate::encode::codec::Jpeg::new().unwrap();
                        prop_assert!(j.decode(&e.payload, PixelFormat::Rgb8, 1, 1).is_ok());
                    }
                }
                Err(e) => prop_assert!(
                    ["budget_unreachable", "decode_error", "frame_too_large"].contains(&e.reason()),
                    "{}", e
                ),
            }
        }
    }

    #[test]
    fn bytes_after_jpeg_eoi_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jpg");
        write_jpeg(&path, 8, 8);
        let clean = std::fs::read(&path).unwrap();
        let mut with_trailer = clean.clone();
        with_trailer.extend_from_slice(b"trailing vendor data \xFF\xD9");
        std::fs::write(&path, &with_trailer).unwrap();
        let mut src = ImagesSource::open(&cfg(dir.path(), ""), &Limits::default()).unwrap();
        let Some(Captured {
            image: Image::Jpeg(j),
            ..
        }) = src.next_frame().unwrap()
        else {
            panic!("expected a jpeg")
        };
        assert_eq!(&j.data[..], &clean[..]);
    }

    #[test]
    fn empty_or_missing_directory_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
        match ImagesSource::open(&cfg(dir.path(), ""), &Limits::default()) {
            Err(SourceError::Open { what, message }) => {
                assert!(what.contains(&*dir.path().to_string_lossy()));
                assert!(message.contains("no .jpg"), "{message}");
            }
            other => panic!("expected Open, got {other:?}"),
        }
        let missing = dir.path().join("nope");
        assert!(matches!(
            ImagesSource::open(&cfg(&missing, ""), &Limits::default()),
            Err(SourceError::Open { what, .. }) if what.ends_with("nope")
        ));
    }

    #[test]
    fn paced_at_fps() {
        let dir = mixed_dir();
        let c: SourceConfig = toml::from_str(&format!(
            "kind = \"images\"\npath = '{}'\nfps = 40\nloop = true",
            dir.path().display()
        ))
        .unwrap();
        let mut src = ImagesSource::open(&c, &Limits::default()).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(all(&mut src, 5).len(), 5);
        let dt = t.elapsed();
        assert!(dt >= std::time::Duration::from_millis(95), "{dt:?}");
    }
}
