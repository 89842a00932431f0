//! Viewing: an own image or a copy spent through the cloud, which counts the view and answers
//! the image (or the default image with the reason) and the copy with its new count.

use std::path::PathBuf;

use super::actions::{digest, Peer, ViewResult};
use super::library::{file_safe, write_atomic, CopyRecord, OwnImage};
use crate::sharing::bodies::{Shown, WithFile};
use crate::sharing::UserOp;
use crate::{Error, Result};

/// What a file given to `view` is.
enum Source {
    Own(OwnImage),
    Copy(CopyRecord),
    Path(PathBuf),
}

impl Peer {
    /// Views `image` (an own image or a copy, by id or name, or a copy file's path) through
    /// the cloud, and writes what it shows to `out`.
    pub async fn view(&self, image: &str, out: Option<PathBuf>) -> Result<ViewResult> {
        let source = self.source(image)?;
        let (path, name) = match &source {
            Source::Own(o) => (self.library.own_file(&o.id), o.name.clone()),
            Source::Copy(c) => (self.library.copy_file(&c.id), c.name.clone()),
            Source::Path(p) => (
                p.clone(),
                p.file_stem()
                    .map_or("image".into(), |s| s.to_string_lossy().into_owned()),
            ),
        };
        let file = std::fs::read(&path)
            .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", path.display())))?;
        let op = UserOp::View {
            file: digest(&file),
        };
        let answer = self
            .signed(op, |op| async {
                let request = WithFile { op, file };
                self.cloud.view(&request, &self.credential).await
            })
            .await?;
        let ext = crate::codec::stego::image_extension(&answer.image).unwrap_or("png");
        let out = out.unwrap_or_else(|| {
            let suffix = if answer.shown == Shown::Default {
                ".default"
            } else {
                ""
            };
            self.library
                .root()
                .join("views")
                .join(format!("{}{suffix}.{ext}", file_safe(&name)))
        });
        write_atomic(&out, &answer.image)?;
        let mut views_left = answer.views_left;
        if let Source::Copy(copy) = &source {
            if let Some(renewed) = &answer.copy {
                write_atomic(&self.library.copy_file(&copy.id), renewed)?;
            }
            let left = views_left.unwrap_or(0);
            views_left = Some(left);
            self.library.update(|r| {
                if let Some(c) = r.copies.iter_mut().find(|c| c.id == copy.id) {
                    c.views_left = left;
                }
            })?;
        }
        Ok(ViewResult {
            shown: answer.shown,
            views_left,
            out,
            reason: answer.reason,
        })
    }

    /// What `image` names: an own image, a copy (by id, then by name), or a file.
    fn source(&self, image: &str) -> Result<Source> {
        let records = self.library.records();
        if let Some(own) = records
            .own
            .iter()
            .find(|o| o.id == image || o.name == image)
        {
            return Ok(Source::Own(own.clone()));
        }
        if let Some(copy) = records.copies.iter().find(|c| c.id == image) {
            return Ok(Source::Copy(copy.clone()));
        }
        let named: Vec<&CopyRecord> = records.copies.iter().filter(|c| c.name == image).collect();
        match named.as_slice() {
            [one] => return Ok(Source::Copy((*one).clone())),
            [] => {}
            many => {
                let owners: Vec<&str> = many.iter().map(|c| c.owner.as_str()).collect();
                return Err(Error::InvalidInput(format!(
                    "{} copies are named {image:?} (from {}); give the image's id",
                    many.len(),
                    owners.join(", ")
                )));
            }
        }
        let path = PathBuf::from(image);
        if path.is_file() {
            return Ok(Source::Path(path));
        }
        Err(Error::InvalidInput(format!(
            "no image {image:?}: give an id or a name from `peer images`, or a copy's path"
        )))
    }
}
