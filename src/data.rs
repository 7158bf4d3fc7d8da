//! Reading and writing IDX files, the format of the MNIST distribution.
//!
//! An IDX file is a big-endian header (two zero bytes, an element-type
//! code, the number of dimensions n, then n big-endian u32 sizes) followed by
//! the elements, row-major. gevaldi reads and writes unsigned bytes (type
//! code `0x08`), which is what MNIST images and labels are: magic 2051
//! (`0x00000803`) for `[N, 28, 28]` images and 2049 (`0x00000801`) for `[N]`
//! labels. Files may be gzip-compressed (detected from their first bytes,
//! whatever their name).

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// The element-type code of unsigned bytes.
const TYPE_U8: u8 = 0x08;

/// An n-dimensional array of unsigned bytes read from an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The sizes of the dimensions.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// The IDX magic number of this array: `0x0800 + number of dims`.
    pub fn magic(&self) -> u32 {
        ((TYPE_U8 as u32) << 8) | self.dims.len() as u32
    }
}

/// Reads an IDX file of unsigned bytes, gzip-compressed or raw.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_path_buf(),
        cause: source,
    })?;
    parse_idx(&bytes, path)
}

/// Parses the bytes of an IDX file (gzip-compressed or raw); `path` only
/// names the file in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let problem = |problem: String| Error::Data {
        path: path.to_path_buf(),
        problem,
    };
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| problem(format!("not valid gzip data: {e}")))?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    if bytes.len() < 4 {
        return Err(problem(format!(
            "truncated: {} bytes, expected at least a 4-byte IDX magic number",
            bytes.len()
        )));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 || bytes[3] == 0 {
        return Err(problem(format!(
            "bad magic number {magic} (0x{magic:08x}): expected an IDX file, \
             e.g. 2051 (0x00000803) for images or 2049 (0x00000801) for labels"
        )));
    }
    if bytes[2] != TYPE_U8 {
        return Err(problem(format!(
            "element type 0x{:02x} is not supported: expected unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    let n = bytes[3] as usize;
    let header = 4 + 4 * n;
    if bytes.len() < header {
        return Err(problem(format!(
            "truncated: {} bytes, expected a header of {header} bytes for {n} dimensions",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..n)
        .map(|i| {
            let at = 4 + 4 * i;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| problem(format!("dimensions {dims:?} overflow")))?;
    let body = &bytes[header..];
    if body.len() < count {
        return Err(problem(format!(
            "truncated: {} data bytes, expected {count} for dimensions {dims:?}",
            body.len()
        )));
    }
    if body.len() > count {
        return Err(problem(format!(
            "{} bytes of trailing data after the {count} elements of dimensions {dims:?}",
            body.len() - count
        )));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

/// The bytes of a raw (uncompressed) IDX file of unsigned bytes.
pub fn encode_idx(array: &IdxArray) -> Result<Vec<u8>> {
    let count: usize = array.dims.iter().product();
    if count != array.data.len() || array.dims.is_empty() || array.dims.len() > 255 {
        return Err(Error::setting(
            "idx",
            format!("{} elements with dims {:?}", array.data.len(), array.dims),
            "1 to 255 dimensions whose product is the number of elements",
        ));
    }
    let mut out = Vec::with_capacity(4 + 4 * array.dims.len() + count);
    out.extend_from_slice(&array.magic().to_be_bytes());
    for d in &array.dims {
        let d = u32::try_from(*d).map_err(|_| Error::setting("idx", d, "dimensions below 2^32"))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(&array.data);
    Ok(out)
}

/// Writes a raw (uncompressed) IDX file of unsigned bytes.
pub fn write_idx(path: impl AsRef<Path>, array: &IdxArray) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, encode_idx(array)?).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        cause: source,
    })
}

/// Which half of the MNIST fixture data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `train-{images-idx3,labels-idx1}-ubyte[.gz]`.
    Train,
    /// `test-{images-idx3,labels-idx1}-ubyte[.gz]`.
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Labelled 28×28 greyscale digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mnist {
    /// Pixels 0-255, `[n, 28, 28]` row-major.
    pub images: Vec<u8>,
    /// Labels 0-9, one per image.
    pub labels: Vec<u8>,
}

impl Mnist {
    /// Reads a split from a directory in the MNIST distribution's layout,
    /// e.g. `fixtures/mnist/data`; each file may be gzip-compressed (`.gz`)
    /// or raw. Checks that images are `[n, 28, 28]`, labels are `[n]`
    /// with values 0-9, and the two counts match.
    pub fn load(dir: impl AsRef<Path>, split: Split) -> Result<Self> {
        let dir = dir.as_ref();
        let images_path = find(dir, &format!("{}-images-idx3-ubyte", split.prefix()))?;
        let labels_path = find(dir, &format!("{}-labels-idx1-ubyte", split.prefix()))?;
        let images = read_idx(&images_path)?;
        let labels = read_idx(&labels_path)?;
        let data_err = |path: &PathBuf, problem: String| Error::Data {
            path: path.clone(),
            problem,
        };
        if images.dims.len() != 3 || images.dims[1..] != [28, 28] {
            return Err(data_err(
                &images_path,
                format!("images of shape {:?}, expected [n, 28, 28]", images.dims),
            ));
        }
        // An empty split: the models would be asked for logits of no
        // images, and fail naming neither the file nor why.
        if images.dims[0] == 0 {
            return Err(data_err(
                &images_path,
                "it holds no images (an IDX file of 0 items), expected at least one".to_string(),
            ));
        }
        if labels.dims.len() != 1 {
            return Err(data_err(
                &labels_path,
                format!("labels of shape {:?}, expected [n]", labels.dims),
            ));
        }
        if images.dims[0] != labels.dims[0] {
            return Err(data_err(
                &labels_path,
                format!(
                    "{} labels, but `{}` holds {} images: the counts must match",
                    labels.dims[0],
                    images_path.display(),
                    images.dims[0]
                ),
            ));
        }
        if let Some(at) = labels.data.iter().position(|l| *l > 9) {
            return Err(data_err(
                &labels_path,
                format!("label {} at index {at}, expected 0-9", labels.data[at]),
            ));
        }
        Ok(Mnist {
            images: images.data,
            labels: labels.data,
        })
    }

    /// Checks that every label of the split in `dir` (as read by
    /// [`Mnist::load`]) is one of the `classes` classes of classifier
    /// `model`, in logit order: test data labelled 0-9 beside classifiers
    /// of 3 classes would count every image of labels 3 to 9 as wrong,
    /// and its accuracies (a tournament's SRCC, an ensemble's drop) would
    /// mean nothing. The error names the labels file, the first label out
    /// of range and how many there are.
    pub fn check_classes(
        &self,
        dir: impl AsRef<Path>,
        split: Split,
        model: &str,
        classes: usize,
    ) -> Result<()> {
        let beyond = self
            .labels
            .iter()
            .filter(|&&l| usize::from(l) >= classes)
            .count();
        let Some(at) = self.labels.iter().position(|&l| usize::from(l) >= classes) else {
            return Ok(());
        };
        let path = find(
            dir.as_ref(),
            &format!("{}-labels-idx1-ubyte", split.prefix()),
        )?;
        Err(Error::Data {
            path,
            problem: format!(
                "label {} at index {at} ({beyond} of its {} labels are {classes} or more), \
                 but classifier `{model}` has {classes} classes: the labels must be its \
                 class indices, 0 to {} in logit order",
                self.labels[at],
                self.labels.len(),
                classes.saturating_sub(1),
            ),
        })
    }

    /// The number of digits.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no digits.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Images `[n, 1, 28, 28]` in [0, 1] (pixel / 255), f32, for the given
    /// indices (all digits when `None`).
    pub fn images_tensor(&self, indices: Option<&[usize]>, device: &Device) -> Result<Tensor> {
        let all: Vec<usize>;
        let idx = match indices {
            Some(i) => i,
            None => {
                all = (0..self.len()).collect();
                &all
            }
        };
        let mut values = Vec::with_capacity(idx.len() * 784);
        for &i in idx {
            values.extend(
                self.images[i * 784..(i + 1) * 784]
                    .iter()
                    .map(|p| *p as f32 / 255.0),
            );
        }
        Ok(Tensor::from_vec(values, (idx.len(), 1, 28, 28), device)?)
    }

    /// Labels as u32 `[n]` for the given indices (all when `None`).
    pub fn labels_tensor(&self, indices: Option<&[usize]>, device: &Device) -> Result<Tensor> {
        let labels: Vec<u32> = match indices {
            Some(i) => i.iter().map(|&i| self.labels[i] as u32).collect(),
            None => self.labels.iter().map(|&l| l as u32).collect(),
        };
        let n = labels.len();
        Ok(Tensor::from_vec(labels, n, device)?)
    }
}

/// `name.gz` if it exists, else `name`.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.exists() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.exists() {
        return Ok(raw);
    }
    Err(Error::Io {
        action: "find",
        path: gz,
        cause: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("neither {name}.gz nor {name} exists in this directory"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn array() -> IdxArray {
        IdxArray {
            dims: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, 6],
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn err(bytes: &[u8]) -> String {
        parse_idx(bytes, Path::new("x.idx"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn raw_and_gzip_round_trip() {
        let bytes = encode_idx(&array()).unwrap();
        assert_eq!(&bytes[..4], &[0, 0, 8, 2]);
        assert_eq!(parse_idx(&bytes, Path::new("a")).unwrap(), array());
        assert_eq!(parse_idx(&gzip(&bytes), Path::new("a")).unwrap(), array());
    }

    #[test]
    fn bad_magic_is_named() {
        let mut bytes = encode_idx(&array()).unwrap();
        bytes[0] = 0x12;
        let e = err(&bytes);
        assert!(
            e.starts_with("failed to read `x.idx`: bad magic number"),
            "{e}"
        );
        assert!(e.contains("2051"), "{e}");
        assert!(err(b"PK\x03\x04zipfile").contains("bad magic number"));
    }

    #[test]
    fn truncated_files_are_named() {
        let bytes = encode_idx(&array()).unwrap();
        assert!(err(&bytes[..2]).contains("truncated: 2 bytes"));
        assert!(err(&bytes[..9]).contains("expected a header of 12 bytes"));
        let e = err(&bytes[..bytes.len() - 1]);
        assert!(e.contains("truncated: 5 data bytes, expected 6"), "{e}");
        let gz = gzip(&bytes);
        assert!(err(&gz[..gz.len() / 2]).contains("not valid gzip data"));
    }

    #[test]
    fn trailing_bytes_and_other_types_are_refused() {
        let mut bytes = encode_idx(&array()).unwrap();
        bytes.push(0);
        assert!(err(&bytes).contains("1 bytes of trailing data"));
        let mut bytes = encode_idx(&array()).unwrap();
        bytes[2] = 0x0d;
        assert!(err(&bytes).contains("element type 0x0d is not supported"));
    }

    #[test]
    fn mismatched_counts_are_named() {
        let dir = std::env::temp_dir().join(format!("gevaldi-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let images = IdxArray {
            dims: vec![3, 28, 28],
            data: vec![0; 3 * 784],
        };
        let labels = IdxArray {
            dims: vec![2],
            data: vec![1, 2],
        };
        write_idx(dir.join("test-images-idx3-ubyte"), &images).unwrap();
        write_idx(dir.join("test-labels-idx1-ubyte"), &labels).unwrap();
        let e = Mnist::load(&dir, Split::Test).unwrap_err().to_string();
        assert!(e.contains("2 labels, but"), "{e}");
        assert!(e.contains("holds 3 images: the counts must match"), "{e}");
        let e = Mnist::load(&dir, Split::Train).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte.gz"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labels_beyond_the_classifiers_classes_are_named() {
        let dir = std::env::temp_dir().join(format!("gevaldi-idx-classes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let images = IdxArray {
            dims: vec![4, 28, 28],
            data: vec![0; 4 * 784],
        };
        let labels = IdxArray {
            dims: vec![4],
            data: vec![0, 2, 4, 9],
        };
        write_idx(dir.join("test-images-idx3-ubyte"), &images).unwrap();
        write_idx(dir.join("test-labels-idx1-ubyte"), &labels).unwrap();
        let test = Mnist::load(&dir, Split::Test).unwrap();
        test.check_classes(&dir, Split::Test, "mine", 10).unwrap();
        let e = test
            .check_classes(&dir, Split::Test, "mine", 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test-labels-idx1-ubyte`: label 4 at index 2 (2 of its 4 labels are 3 or more), but classifier `mine` has 3 classes: the labels must be its class indices, 0 to 2 in logit order"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
