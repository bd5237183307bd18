//! Files in and out: safetensors with clear errors and atomic writes
//! ([`tensors`]), checkpoints in kktcert's and PyTorch's layouts
//! ([`checkpoint`], [`layout`]), ONNX graphs ([`onnx`]), and the memory
//! check made before large allocations ([`resources`]).

pub mod checkpoint;
pub mod fixture;
pub mod layout;
pub mod onnx;
pub mod resources;
pub mod tensors;
