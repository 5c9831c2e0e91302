//! A directory of still images replayed as a video: `.jpg`/`.jpeg` pass through as JPEG,
//! `.png` is decoded.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::mjpeg::complete_jpeg_len;
use super::{Pacer, Source, SourceError};
use crate::config::SourceConfig;
use crate::frame::{Captured, Image, JpegImage, PixelFormat, RawImage};

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

/// The `.jpg`, `.jpeg` and `.png` files (extensions case-insensitive, symlinks followed)
/// directly in `dir`, sorted by file name (byte order). Other files and subdirectories
/// are ignored.
fn list_images(dir: &Path) -> std::io::Result<Vec<(PathBuf, Kind)>> {
    let mut files: Vec<(OsString, PathBuf, Kind)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(kind) = kind_of(&path) else { continue };
        // `metadata` follows symlinks; skip directories named `x.jpg` and dangling links.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push((entry.file_name(), path, kind));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files.into_iter().map(|(_, p, k)| (p, k)).collect())
}

/// Reads one image file into an [`Image`].
///
/// JPEG: the file's bytes through the first image's EOI (anything appended after it is
/// dropped), not decoded; its header must parse and the EOI must be present. PNG: decoded
/// to RGB8, or Gray8 when the PNG has no colour; alpha is dropped (not composited).
/// Errors: a message (without the file name) when the file cannot be read or is corrupt.
fn load(path: &Path, kind: Kind) -> Result<Image, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    match kind {
        Kind::Jpeg => {
            let len = complete_jpeg_len(&data)
                .ok_or_else(|| "not a complete JPEG (no SOI, broken or truncated)".to_string())?;
            let mut data = Bytes::from(data);
            data.truncate(len);
            JpegImage::parse(data)
                .map(Image::Jpeg)
                .map_err(|e| e.to_string())
        }
        Kind::Png => {
            let img = image::load_from_memory_with_format(&data, image::ImageFormat::Png)
                .map_err(|e| e.to_string())?;
            let (width, height) = (img.width(), img.height());
            let (format, pixels) = if img.color().has_color() {
                (PixelFormat::Rgb8, img.into_rgb8().into_raw())
            } else {
                (PixelFormat::Gray8, img.into_luma8().into_raw())
            };
            RawImage::new(width, height, format, pixels)
                .map(Image::Raw)
                .ok_or_else(|| format!("PNG of {width}x{height} has no pixels"))
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
}

impl ImagesSource {
    /// Lists `cfg.path`.
    ///
    /// Errors: [`SourceError::Open`] naming the directory when `cfg.path` is unset, the
    /// directory is missing or unreadable, or it holds no `.jpg`/`.jpeg`/`.png` file.
    pub fn open(cfg: &SourceConfig) -> Result<Self, SourceError> {
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
        let files = list_images(dir).map_err(|e| open_err(e.to_string()))?;
        if files.is_empty() {
            return Err(open_err("no .jpg, .jpeg or .png files".into()));
        }
        Ok(ImagesSource {
            dir: dir.clone(),
            files,
            next: 0,
            loop_: cfg.loop_,
            pacer: Pacer::new(cfg.fps),
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
        let image = load(path, *kind)
            .map_err(|e| SourceError::BadFrame(format!("{}: {e}", path.display())))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut src = ImagesSource::open(&cfg(dir.path(), "")).unwrap();
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
        let mut src = ImagesSource::open(&cfg(dir.path(), "loop = true")).unwrap();
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
        let mut src = ImagesSource::open(&cfg(p, "")).unwrap();
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
    fn bytes_after_jpeg_eoi_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jpg");
        write_jpeg(&path, 8, 8);
        let clean = std::fs::read(&path).unwrap();
        let mut with_trailer = clean.clone();
        with_trailer.extend_from_slice(b"trailing vendor data \xFF\xD9");
        std::fs::write(&path, &with_trailer).unwrap();
        let mut src = ImagesSource::open(&cfg(dir.path(), "")).unwrap();
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
        match ImagesSource::open(&cfg(dir.path(), "")) {
            Err(SourceError::Open { what, message }) => {
                assert!(what.contains(&*dir.path().to_string_lossy()));
                assert!(message.contains("no .jpg"), "{message}");
            }
            other => panic!("expected Open, got {other:?}"),
        }
        let missing = dir.path().join("nope");
        assert!(matches!(
            ImagesSource::open(&cfg(&missing, "")),
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
        let mut src = ImagesSource::open(&c).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(all(&mut src, 5).len(), 5);
        let dt = t.elapsed();
        assert!(dt >= std::time::Duration::from_millis(95), "{dt:?}");
    }
}
