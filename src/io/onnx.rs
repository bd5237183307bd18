//! ONNX import of a fully connected ReLU MLP of any depth (the two-layer
//! net of SPEC §2 is the case of one hidden layer and one output).
//!
//! The protobuf is decoded by `prost` from message definitions that mirror
//! the subset of `onnx.proto` (field numbers as in the ONNX IR spec) that a
//! fully connected MLP needs; unknown fields are skipped by the decoder, so graphs
//! from any exporter decode. This avoids a build-time `protoc` and a full
//! inference engine for what is a read of five message types.
//!
//! The graph is then run *symbolically*: every value is either a constant
//! (initializer or `Constant` node) or a function of the input held as the
//! ReLU layers applied so far plus, when a linear map has no ReLU yet, that
//! open affine map W h + b. Gemm (any alpha, beta, transB) and MatMul open a
//! map, Add adds its bias, Relu closes it into a layer, and shape-only
//! operators (Flatten, Reshape, Identity, Squeeze, Unsqueeze) of the input or
//! the output pass through; any other operator, two linear maps without a
//! ReLU between them, or a graph whose output is not an open map after at
//! least one ReLU layer, is refused with the list of operators found. The
//! result is the same network the exporter was given, widened exactly from
//! its stored precision.

use crate::error::{Error, Result};
use crate::model::deep::{DeepNet, Layer};
use crate::model::net::Network;
use nalgebra::{DMatrix, DVector};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// The ONNX messages kktcert reads (a subset of onnx.proto3).
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(string, tag = "2")]
        pub producer_name: String,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(float, tag = "2")]
        pub f: f32,
        #[prost(int64, tag = "3")]
        pub i: i64,
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(int32, repeated, tag = "5")]
        pub int32_data: Vec<i32>,
        #[prost(int64, repeated, tag = "7")]
        pub int64_data: Vec<i64>,
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        #[prost(double, repeated, tag = "10")]
        pub double_data: Vec<f64>,
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
    }
}

/// A constant tensor, widened to f64, row-major.
#[derive(Clone, Debug)]
struct Tensor {
    dims: Vec<usize>,
    data: Vec<f64>,
}

impl Tensor {
    /// As a matrix [r, c]; a vector [r] is a column, as MatMul reads it.
    fn matrix(&self) -> Option<DMatrix<f64>> {
        match self.dims.as_slice() {
            [r, c] => Some(DMatrix::from_row_slice(*r, *c, &self.data)),
            [r] => Some(DMatrix::from_column_slice(*r, 1, &self.data)),
            _ => None,
        }
    }
}

/// A symbolic value of the graph.
#[derive(Clone, Debug)]
enum Value {
    Const(Tensor),
    /// A function of the input: the layers applied so far, each followed by
    /// a ReLU, then — when a linear map has no ReLU yet — that open map.
    Flow {
        done: Vec<Layer>,
        open: Option<Affine>,
    },
}

/// x ↦ W x + b with W \[out, in\].
#[derive(Clone, Debug)]
struct Affine {
    w: DMatrix<f64>,
    b: Option<DVector<f64>>,
}

impl Value {
    /// The graph input x.
    fn input() -> Self {
        Value::Flow {
            done: Vec::new(),
            open: None,
        }
    }
}

/// ONNX TensorProto.DataType codes kktcert reads.
const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;
const BFLOAT16: i32 = 16;

use crate::io::tensors::le_bytes as le;

/// Widens a TensorProto's data (raw or typed fields) to f64.
fn tensor_values(t: &pb::TensorProto) -> std::result::Result<Vec<f64>, String> {
    if t.data_location == 1 {
        return Err(format!(
            "tensor `{}` stores its data externally; export with the weights inside the .onnx file",
            t.name
        ));
    }
    let raw = &t.raw_data;
    let values: Vec<f64> = match t.data_type {
        FLOAT if !raw.is_empty() => raw.chunks_exact(4).map(|c| f32::from_le_bytes(le(c)) as f64).collect(),
        FLOAT => t.float_data.iter().map(|&v| v as f64).collect(),
        DOUBLE if !raw.is_empty() => raw.chunks_exact(8).map(|c| f64::from_le_bytes(le(c))).collect(),
        DOUBLE => t.double_data.clone(),
        FLOAT16 if !raw.is_empty() => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes(le(c)).to_f64()).collect(),
        FLOAT16 => t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16).to_f64()).collect(),
        BFLOAT16 if !raw.is_empty() => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes(le(c)).to_f64()).collect(),
        BFLOAT16 => t.int32_data.iter().map(|&v| half::bf16::from_bits(v as u16).to_f64()).collect(),
        INT64 if !raw.is_empty() => raw.chunks_exact(8).map(|c| i64::from_le_bytes(le(c)) as f64).collect(),
        INT64 => t.int64_data.iter().map(|&v| v as f64).collect(),
        INT32 if !raw.is_empty() => raw.chunks_exact(4).map(|c| i32::from_le_bytes(le(c)) as f64).collect(),
        INT32 => t.int32_data.iter().map(|&v| v as f64).collect(),
        other => return Err(format!("tensor `{}` has data type {other}, expected float, double, float16, bfloat16 or an integer type", t.name)),
    };
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    if values.len() != dims.iter().product::<usize>() {
        return Err(format!(
            "tensor `{}` has {} values for dims {dims:?}",
            t.name,
            values.len()
        ));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(format!(
            "tensor `{}` holds the non-finite value {v}",
            t.name
        ));
    }
    Ok(values)
}

fn tensor(t: &pb::TensorProto) -> std::result::Result<Tensor, String> {
    Ok(Tensor {
        dims: t.dims.iter().map(|&d| d.max(0) as usize).collect(),
        data: tensor_values(t)?,
    })
}

/// Attribute lookup with defaults.
struct Attrs<'a>(&'a [pb::AttributeProto]);

impl Attrs<'_> {
    fn int(&self, name: &str, default: i64) -> i64 {
        self.0
            .iter()
            .find(|a| a.name == name)
            .map_or(default, |a| a.i)
    }
    fn float(&self, name: &str, default: f64) -> f64 {
        self.0
            .iter()
            .find(|a| a.name == name)
            .map_or(default, |a| a.f as f64)
    }
}

/// A bias constant broadcast to length `m` (a scalar, [1], [m] or [1, m]).
fn broadcast(t: &Tensor, m: usize) -> Option<DVector<f64>> {
    match t.data.len() {
        1 => Some(DVector::from_element(m, t.data[0])),
        n if n == m => Some(DVector::from_column_slice(&t.data)),
        _ => None,
    }
}

/// A · B for a flowing A and a constant B of shape \[in, out\]: a new open map.
fn linear(a: &Value, b: &DMatrix<f64>, alpha: f64) -> std::result::Result<Value, String> {
    let Value::Flow { done, open: None } = a else {
        return Err(match a {
            Value::Const(_) => "a linear map of two constants".into(),
            _ => "two linear layers without a ReLU between them".into(),
        });
    };
    if let Some(prev) = done.last().filter(|l| l.outputs() != b.nrows()) {
        return Err(format!(
            "a weight of shape [{}, {}] applied to a layer with {} outputs",
            b.nrows(),
            b.ncols(),
            prev.outputs()
        ));
    }
    Ok(Value::Flow {
        done: done.clone(),
        open: Some(Affine {
            w: b.transpose() * alpha,
            b: None,
        }),
    })
}

/// Adds a constant to a flowing value (a layer's bias).
fn add_bias(a: Value, t: &Tensor, beta: f64) -> std::result::Result<Value, String> {
    let Value::Flow {
        done,
        open: Some(Affine { w, b }),
    } = a
    else {
        return Err("a bias added where no linear layer is open".into());
    };
    let m = w.nrows();
    let add =
        broadcast(t, m).ok_or(format!("a bias of {} values for {m} outputs", t.data.len()))?;
    let b = b.unwrap_or_else(|| DVector::zeros(m)) + add * beta;
    Ok(Value::Flow {
        done,
        open: Some(Affine { w, b: Some(b) }),
    })
}

/// ReLU of a flowing value: closes the open map into a hidden layer.
fn relu(a: &Value) -> std::result::Result<Value, String> {
    match a {
        Value::Flow {
            done,
            open: Some(Affine { w, b }),
        } => {
            let mut done = done.clone();
            done.push(Layer::new(w.clone(), b.clone()).map_err(|e| e.to_string())?);
            Ok(Value::Flow { done, open: None })
        }
        // ReLU(ReLU(u)) = ReLU(u).
        Value::Flow { done, open: None } if !done.is_empty() => Ok(a.clone()),
        _ => Err("Relu applied to the input or to a constant".into()),
    }
}

/// Shape-only operators: on the input and on the scores any of them; on
/// hidden activations (\[n, m\] already) Identity and Flatten.
fn reshape(op: &str, a: &Value) -> std::result::Result<Value, String> {
    match a {
        Value::Const(_) => Ok(a.clone()),
        Value::Flow { done, open: None } if done.is_empty() => Ok(a.clone()),
        Value::Flow { open: Some(_), .. } if op != "Flatten" => Ok(a.clone()),
        Value::Flow { .. } if op == "Identity" || op == "Flatten" => Ok(a.clone()),
        Value::Flow { .. } => Err(format!("{op} of an intermediate layer")),
    }
}

/// One node's symbolic effect.
fn apply(node: &pb::NodeProto, env: &HashMap<String, Value>) -> std::result::Result<Value, String> {
    let arg = |i: usize| -> std::result::Result<&Value, String> {
        let name = node.input.get(i).ok_or("missing input")?;
        env.get(name)
            .ok_or(format!("input `{name}` is not computed before it is used"))
    };
    let constant = |i: usize| -> std::result::Result<Tensor, String> {
        match arg(i)? {
            Value::Const(t) => Ok(t.clone()),
            _ => Err(format!("input {i} must be a constant (a weight)")),
        }
    };
    let attrs = Attrs(&node.attribute);
    match node.op_type.as_str() {
        "Constant" => {
            let t = node
                .attribute
                .iter()
                .find_map(|a| a.t.as_ref())
                .ok_or("Constant without a tensor value")?;
            Ok(Value::Const(tensor(t)?))
        }
        "Identity" | "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => {
            reshape(&node.op_type, arg(0)?)
        }
        "Relu" => relu(arg(0)?),
        "MatMul" => {
            let b = constant(1)?
                .matrix()
                .ok_or("MatMul weight must be 1-D or 2-D")?;
            linear(arg(0)?, &b, 1.0)
        }
        "Gemm" => {
            if attrs.int("transA", 0) != 0 {
                return Err("Gemm with transA = 1".into());
            }
            let b = constant(1)?.matrix().ok_or("Gemm weight must be 2-D")?;
            let b = if attrs.int("transB", 0) != 0 {
                b.transpose()
            } else {
                b
            };
            let out = linear(arg(0)?, &b, attrs.float("alpha", 1.0))?;
            match node.input.get(2).filter(|n| !n.is_empty()) {
                Some(_) => add_bias(out, &constant(2)?, attrs.float("beta", 1.0)),
                None => Ok(out),
            }
        }
        "Add" => match (arg(0)?, arg(1)?) {
            (Value::Const(t), v) | (v, Value::Const(t)) => add_bias(v.clone(), t, 1.0),
            _ => Err("Add of two computed values (a residual connection?)".into()),
        },
        other => Err(format!("unsupported operator {other}")),
    }
}

fn graph_error(path: &Path, graph: &pb::GraphProto, msg: &str) -> Error {
    let mut ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    ops.dedup();
    Error::file(
        path,
        format!(
            "not a fully connected ReLU MLP: {msg}; operators found (in order): {}; supported: layers of Gemm, or MatMul + Add, each followed by Relu except the last, with Flatten/Reshape/Identity/Squeeze/Unsqueeze of the input or the output, and Constant",
            ops.join(", ")
        ),
    )
}

/// Reads an ONNX graph of a fully connected ReLU MLP of any depth.
pub fn load_layers(path: &Path) -> Result<DeepNet> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let model = pb::ModelProto::decode(bytes.as_slice())
        .map_err(|e| Error::file(path, format!("not a valid ONNX protobuf: {e}")))?;
    let graph = model
        .graph
        .ok_or_else(|| Error::file(path, "ONNX model without a graph"))?;
    let mut env: HashMap<String, Value> = HashMap::new();
    for t in &graph.initializer {
        let v = tensor(t).map_err(|m| Error::field(path, &t.name, m))?;
        env.insert(t.name.clone(), Value::Const(v));
    }
    let inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !env.contains_key(*n))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(graph_error(
            path,
            &graph,
            &format!("{} graph inputs {inputs:?}, expected one", inputs.len()),
        ));
    };
    env.insert(input.to_string(), Value::input());
    for node in &graph.node {
        let v = apply(node, &env).map_err(|m| {
            graph_error(
                path,
                &graph,
                &format!("node `{}` ({}): {m}", node.name, node.op_type),
            )
        })?;
        for out in &node.output {
            env.insert(out.clone(), v.clone());
        }
    }
    let [output] = graph.output.as_slice() else {
        return Err(graph_error(
            path,
            &graph,
            &format!("{} graph outputs, expected one", graph.output.len()),
        ));
    };
    match env.get(&output.name) {
        Some(Value::Flow {
            done,
            open: Some(Affine { w, b }),
        }) if !done.is_empty() => {
            let mut layers = done.clone();
            layers.push(
                Layer::new(w.clone(), b.clone()).map_err(|e| Error::file(path, e.to_string()))?,
            );
            DeepNet::new(layers).map_err(|e| Error::file(path, e.to_string()))
        }
        _ => Err(graph_error(
            path,
            &graph,
            "the graph output is not a linear layer after at least one ReLU layer",
        )),
    }
}

/// Reads an ONNX graph of a two-layer ReLU MLP into a network and its
/// output bias c.
pub fn load(path: &Path) -> Result<(Network, f64)> {
    let net = load_layers(path)?;
    net.as_network().ok_or_else(|| {
        Error::file(
            path,
            format!(
                "a ReLU MLP with {} hidden layer(s) and output {:?}; this command needs one hidden layer and one output, N(x) = Σ_j v_j ReLU(w_j·x + b_j) (+ c)",
                net.hidden_layers(),
                net.output()
            ),
        )
    })
}
