//! Reading and writing safetensors files with validation, and atomic writes.
//!
//! The safetensors crate parses the container; this module adds what a user
//! needs when a file is wrong: the file, the tensor and the expectation in the
//! message. Floats are accepted as F16, BF16, F32 or F64 (PyTorch saves all
//! four) and always returned as `f64` — every such value is exactly
//! representable in f64, so the widening is exact; every value is checked to
//! be finite.

use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One expected dimension of a tensor: fixed, or free (and then reported).
#[derive(Clone, Copy, Debug)]
pub enum Dim {
    /// Any length, at least 1.
    Any,
    /// Exactly this length.
    Is(usize),
}

/// A safetensors file held in memory, with its path for error messages.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    /// Reads and parses `path`; a truncated or non-safetensors file is an error here.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
        SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::file(
                path,
                format!("not a valid safetensors file (truncated or corrupt?): {e:?}"),
            )
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
        })
    }

    /// The parsed file (`open` validated it, so this does not fail on
    /// bytes it accepted).
    fn parsed(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::file(&self.path, format!("not a valid safetensors file: {e:?}")))
    }

    /// Whether a tensor of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.parsed().is_ok_and(|st| st.tensor(name).is_ok())
    }

    /// The string metadata of the header (empty when absent).
    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }

    fn view(&self, name: &str, dims: &[Dim]) -> Result<(Dtype, Vec<usize>, Vec<u8>)> {
        let st = self.parsed()?;
        let t = st.tensor(name).map_err(|_| {
            Error::field(
                &self.path,
                name,
                "missing tensor (expected one of that name)",
            )
        })?;
        let shape = t.shape().to_vec();
        let shape_ok = shape.len() == dims.len()
            && shape.iter().zip(dims).all(|(&s, d)| match d {
                Dim::Any => s > 0,
                Dim::Is(n) => s == *n,
            });
        if !shape_ok {
            return Err(Error::field(
                &self.path,
                name,
                format!("shape {shape:?}, expected {}", describe(dims)),
            ));
        }
        Ok((t.dtype(), shape, t.data().to_vec()))
    }

    /// A float tensor (F16, BF16, F32 or F64) as `f64`, row-major, with its shape.
    pub fn floats(&self, name: &str, dims: &[Dim]) -> Result<(Vec<f64>, Vec<usize>)> {
        let (dtype, shape, data) = self.view(name, dims)?;
        let values = widen(dtype, &data).ok_or_else(|| {
            Error::field(
                &self.path,
                name,
                format!("dtype {dtype:?}, expected F64, F32, F16 or BF16"),
            )
        })?;
        if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::field(
                &self.path,
                name,
                format!("non-finite value {} at flat index {pos}", values[pos]),
            ));
        }
        Ok((values, shape))
    }

    /// Every tensor's name, shape and dtype, in name order.
    pub fn inventory(&self) -> Vec<(String, Vec<usize>, Dtype)> {
        let Ok(st) = self.parsed() else {
            return Vec::new();
        };
        let mut v: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec(), t.dtype()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The inventory as one line for error messages: `name [shape] dtype, …`.
    pub fn describe_inventory(&self) -> String {
        let parts: Vec<String> = self
            .inventory()
            .iter()
            .map(|(n, s, d)| format!("{n} {s:?} {d:?}"))
            .collect();
        if parts.is_empty() {
            "no tensors".into()
        } else {
            parts.join(", ")
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An integer tensor (I64 or I32) as `i64`.
    pub fn ints(&self, name: &str, dims: &[Dim]) -> Result<Vec<i64>> {
        let (dtype, _, data) = self.view(name, dims)?;
        match dtype {
            Dtype::I64 => Ok(data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(le_bytes(c)))
                .collect()),
            Dtype::I32 => Ok(data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(le_bytes(c)) as i64)
                .collect()),
            other => Err(Error::field(
                &self.path,
                name,
                format!("dtype {other:?}, expected I64 or I32"),
            )),
        }
    }
}

/// The string metadata of a safetensors file, reading only its header (the
/// 8-byte length and the JSON after it), not the tensors: for listing many
/// checkpoints before loading any. Empty for files without metadata.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let bad = |msg: String| Error::file(path, msg);
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "read", e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("not a valid safetensors file (no header): {e}")))?;
    let n = u64::from_le_bytes(len);
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    if n.saturating_add(8) > size {
        return Err(bad(format!(
            "not a valid safetensors file: header of {n} bytes in a file of {size}"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("cannot read the header: {e}")))?;
    let value: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("not a valid safetensors header: {e}")))?;
    Ok(value
        .get("__metadata__")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default())
}

/// The bytes of one `chunks_exact(N)` chunk as an array (a shorter slice,
/// which `chunks_exact` never yields, would be zero-padded, not a panic).
pub(crate) fn le_bytes<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.iter_mut().zip(c).for_each(|(a, &c)| *a = c);
    a
}

/// Little-endian floats of `dtype` widened exactly to f64 (None: not a float type).
fn widen(dtype: Dtype, data: &[u8]) -> Option<Vec<f64>> {
    let values = match dtype {
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(le_bytes(c)))
            .collect(),
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(le_bytes(c)) as f64)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        _ => return None,
    };
    Some(values)
}

fn describe(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Any => "n≥1".to_string(),
            Dim::Is(n) => n.to_string(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// An owned tensor ready to be serialised.
pub struct OwnedTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl OwnedTensor {
    /// An F64 tensor; `values` is row-major and must match `shape`.
    pub fn f64(shape: Vec<usize>, values: impl IntoIterator<Item = f64>) -> Self {
        let data: Vec<u8> = values.into_iter().flat_map(f64::to_le_bytes).collect();
        debug_assert_eq!(data.len(), 8 * shape.iter().product::<usize>());
        Self {
            dtype: Dtype::F64,
            shape,
            data,
        }
    }

    /// An I64 tensor.
    pub fn i64(shape: Vec<usize>, values: impl IntoIterator<Item = i64>) -> Self {
        let data: Vec<u8> = values.into_iter().flat_map(i64::to_le_bytes).collect();
        Self {
            dtype: Dtype::I64,
            shape,
            data,
        }
    }
}

impl safetensors::View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Serialises named tensors with string metadata and writes them atomically.
/// The metadata is written in key order, so the same tensors and metadata
/// give the same bytes on every run.
pub fn write_tensors(
    path: &Path,
    tensors: &[(&str, OwnedTensor)],
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let meta = (!metadata.is_empty()).then(|| metadata.clone().into_iter().collect());
    let mut bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), &meta)
        .map_err(|e| Error::file(path, format!("cannot serialise: {e:?}")))?;
    if !metadata.is_empty() {
        sort_metadata(&mut bytes, &metadata)
            .ok_or_else(|| Error::file(path, "cannot order the safetensors header"))?;
    }
    write_atomic(path, &bytes)
}

/// Rewrites the header's `__metadata__` in key order. safetensors takes the
/// metadata as a `HashMap`, whose order changes from run to run; the
/// reordered header has exactly the same length (same keys and values), so
/// the data offsets stand.
fn sort_metadata(bytes: &mut [u8], metadata: &BTreeMap<String, String>) -> Option<()> {
    let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get_mut(8..8 + len)?;
    let mut value: serde_json::Value = serde_json::from_slice(header).ok()?;
    let sorted: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    *value.get_mut("__metadata__")? = serde_json::Value::Object(sorted);
    let text = serde_json::to_vec(&value).ok()?;
    (text.len() <= len).then_some(())?;
    header[..text.len()].copy_from_slice(&text);
    header[text.len()..].fill(b' ');
    Some(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`, so readers never see a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, "write", e)
    })
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::file(path, format!("cannot serialise JSON: {e}")))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads and parses a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}
