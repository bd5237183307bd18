//! Recognising a two-layer ReLU net among the tensors of a safetensors file.
//!
//! Two layouts are recognised without help:
//! * kktcert's own: `W` \[m,d\], `b` \[m\], `v` \[m\] (and an optional `c` \[1\]);
//! * a PyTorch state dict with exactly two linear layers, `<a>.weight` \[m,d\],
//!   `<a>.bias` \[m\] (optional), `<b>.weight` \[1,m\] or \[m\], `<b>.bias` \[1\]
//!   (optional: the output bias c). The prefixes are whatever the model
//!   called them — `0`/`2` for `nn.Sequential`, `fc1`/`fc2` for named
//!   modules, with any parent path (`model.net.0`) — and the first layer is
//!   found by shape, with the prefixes' natural order (`2` before `10`)
//!   breaking ties.
//!
//! Anything else must be named with `--tensors`; the error lists what the
//! file holds so that is easy.

use crate::error::{Error, Result};
use crate::io::tensors::TensorFile;
use std::collections::BTreeMap;

/// Which tensors of a safetensors file hold W, b, v and the optional output
/// bias c. `b` may be absent (a first layer without bias: b = 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorNames {
    /// First layer's weight \[m, d\].
    pub w: String,
    /// First layer's bias \[m\].
    pub b: Option<String>,
    /// Second layer's weight \[1, m\] or \[m\].
    pub v: String,
    /// Second layer's bias (the output bias).
    pub c: Option<String>,
}

impl TensorNames {
    /// kktcert's own names.
    pub fn native() -> Self {
        Self {
            w: "W".into(),
            b: Some("b".into()),
            v: "v".into(),
            c: None,
        }
    }

    /// Parses `W=NAME,b=NAME,v=NAME[,c=NAME]`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut map = BTreeMap::new();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::param(
                    "tensors",
                    format!("`{part}` in `{s}`, expected KEY=NAME with KEY one of W, b, v, c"),
                )
            })?;
            if !["W", "b", "v", "c"].contains(&k.trim()) {
                return Err(Error::param(
                    "tensors",
                    format!("unknown key `{k}` in `{s}`, expected W, b, v or c"),
                ));
            }
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
        let need = |k: &str| {
            map.get(k).cloned().ok_or_else(|| {
                Error::param(
                    "tensors",
                    format!("`{s}` does not name `{k}` (W and v are required)"),
                )
            })
        };
        Ok(Self {
            w: need("W")?,
            v: need("v")?,
            b: map.get("b").cloned(),
            c: map.get("c").cloned(),
        })
    }
}

/// A linear layer's tensors: weight shape, and bias shape if present.
#[derive(Clone, Debug, Default)]
struct Linear {
    weight: Option<Vec<usize>>,
    bias: Option<Vec<usize>>,
}

/// Splits a name into text and number runs so that `fc2` < `fc10`.
fn natural_key(s: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(first) = c.to_digit(10) {
            let mut num = first as u64;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                num = num.saturating_mul(10).saturating_add(d as u64);
                chars.next();
            }
            out.push((std::mem::take(&mut text), num));
        } else {
            text.push(c);
        }
    }
    out.push((text, 0));
    out
}

/// Whether (first, second) is a valid two-layer ReLU layout.
fn fits(first: &Linear, second: &Linear) -> bool {
    let (Some(w1), Some(w2)) = (&first.weight, &second.weight) else {
        return false;
    };
    if w1.len() != 2 || w1[0] == 0 || w1[1] == 0 {
        return false;
    }
    let m = w1[0];
    let bias1_ok = first.bias.as_ref().is_none_or(|b| b == &[m]);
    let w2_ok = w2 == &[1, m] || w2 == &[m];
    let bias2_ok = second
        .bias
        .as_ref()
        .is_none_or(|b| b == &[1] || b.is_empty());
    bias1_ok && w2_ok && bias2_ok
}

/// `<prefix>.<leaf>`, or `leaf` for the empty prefix.
fn join(prefix: &str, leaf: &str) -> String {
    if prefix.is_empty() {
        leaf.to_string()
    } else {
        format!("{prefix}.{leaf}")
    }
}

fn names(prefix: &str, first: &Linear, second_prefix: &str, second: &Linear) -> TensorNames {
    TensorNames {
        w: join(prefix, "weight"),
        b: first.bias.as_ref().map(|_| join(prefix, "bias")),
        v: join(second_prefix, "weight"),
        c: second.bias.as_ref().map(|_| join(second_prefix, "bias")),
    }
}

/// Groups `<prefix>.weight` / `<prefix>.bias`; None if some tensor is neither.
fn linear_layers(f: &TensorFile) -> Option<BTreeMap<String, Linear>> {
    let mut layers: BTreeMap<String, Linear> = BTreeMap::new();
    for (name, shape, _) in f.inventory() {
        let (prefix, leaf) = match name.rsplit_once('.') {
            Some((p, l)) => (p.to_string(), l),
            None => (String::new(), name.as_str()),
        };
        let layer = layers.entry(prefix).or_default();
        match leaf {
            "weight" => layer.weight = Some(shape),
            "bias" => layer.bias = Some(shape),
            _ => return None,
        }
    }
    Some(layers)
}

/// The tensors of one linear layer of a deep net.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerNames {
    /// The weight \[out, in\] (the last layer's may be \[in\]: one output).
    pub weight: String,
    /// The bias \[out\], when the layer has one.
    pub bias: Option<String>,
}

/// Finds the linear layers of a fully connected net of any depth in `f`:
/// kktcert's two-layer names, or every `<prefix>.weight` (with an optional
/// `<prefix>.bias`) in the prefixes' natural order (`2` before `10`), which
/// must chain — each layer's input width the previous layer's output width.
pub fn recognise_layers(f: &TensorFile) -> Result<Vec<LayerNames>> {
    if f.has("W") {
        let names = recognise(f)?;
        return Ok(vec![
            LayerNames {
                weight: names.w,
                bias: names.b,
            },
            LayerNames {
                weight: names.v,
                bias: names.c,
            },
        ]);
    }
    let refuse = |why: String| {
        Error::file(
            f.path(),
            format!(
                "no fully connected ReLU network recognised: {why}; expected the linear layers of an nn.Sequential of Linear/ReLU/Flatten, as <prefix>.weight [out, in] with optional <prefix>.bias [out], chaining in the prefixes' order; found: {}",
                f.describe_inventory()
            ),
        )
    };
    let layers = linear_layers(f)
        .ok_or_else(|| refuse("some tensor is neither a `.weight` nor a `.bias`".into()))?;
    let mut order: Vec<(&String, &Linear)> = layers.iter().collect();
    order.sort_by_key(|(p, _)| natural_key(p));
    let mut width: Option<usize> = None;
    let mut out = Vec::new();
    for (i, (prefix, layer)) in order.iter().enumerate() {
        let Some(shape) = &layer.weight else {
            return Err(refuse(format!("`{prefix}` has a bias but no weight")));
        };
        let last = i + 1 == order.len();
        let (rows, cols) = match shape.as_slice() {
            [r, c] => (*r, *c),
            [c] if last => (1, *c),
            _ => return Err(refuse(format!("`{prefix}.weight` has shape {shape:?}"))),
        };
        if width.is_some_and(|w| w != cols) {
            return Err(refuse(format!(
                "`{prefix}.weight` takes {cols} inputs but the layer before it has {} outputs",
                width.unwrap_or(0)
            )));
        }
        if layer
            .bias
            .as_ref()
            .is_some_and(|b| b != &[rows] && !(rows == 1 && b.is_empty()))
        {
            return Err(refuse(format!(
                "`{prefix}.bias` does not match {rows} outputs"
            )));
        }
        width = Some(rows);
        out.push(LayerNames {
            weight: join(prefix, "weight"),
            bias: layer.bias.as_ref().map(|_| join(prefix, "bias")),
        });
    }
    if out.len() < 2 {
        return Err(refuse(format!(
            "{} linear layer(s), expected at least two",
            out.len()
        )));
    }
    Ok(out)
}

/// Finds the tensors of W, b, v (and c) in `f`, or explains what it found.
pub fn recognise(f: &TensorFile) -> Result<TensorNames> {
    if f.has("W") {
        // kktcert's layout: a missing `b` or `v` is reported by name on read.
        let mut n = TensorNames::native();
        if f.has("c") {
            n.c = Some("c".into());
        }
        return Ok(n);
    }
    if let Some(layers) = linear_layers(f).filter(|l| l.len() == 2) {
        let mut order: Vec<(&String, &Linear)> = layers.iter().collect();
        order.sort_by_key(|(p, _)| natural_key(p));
        let (a, b) = (order[0], order[1]);
        if fits(a.1, b.1) {
            return Ok(names(a.0, a.1, b.0, b.1));
        }
        if fits(b.1, a.1) {
            return Ok(names(b.0, b.1, a.0, a.1));
        }
    }
    Err(Error::file(
        f.path(),
        format!(
            "no two-layer ReLU network recognised; expected W [m,d], b [m], v [m] (kktcert) or exactly two linear layers <a>.weight [m,d], <a>.bias [m], <b>.weight [1,m] or [m], optional <b>.bias [1] (a PyTorch state dict); found: {}. Name the tensors with --tensors W=…,b=…,v=…[,c=…]",
            f.describe_inventory()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_puts_2_before_10() {
        let mut v = vec!["net.10", "net.2", "fc1"];
        v.sort_by_key(|s| natural_key(s));
        assert_eq!(v, ["fc1", "net.2", "net.10"]);
    }

    #[test]
    fn fits_checks_shapes() {
        let l = |w: &[usize], b: Option<&[usize]>| Linear {
            weight: Some(w.to_vec()),
            bias: b.map(|b| b.to_vec()),
        };
        assert!(fits(&l(&[5, 3], Some(&[5])), &l(&[1, 5], None)));
        assert!(fits(&l(&[5, 3], None), &l(&[5], Some(&[1]))));
        assert!(!fits(&l(&[5, 3], Some(&[5])), &l(&[2, 5], None)));
        assert!(!fits(&l(&[1, 5], None), &l(&[5, 3], Some(&[5]))));
    }
}
