//! Named arrays as stored in a bundle's safetensors file.

/// The values of a [`Tensor`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats (weights, thresholds, probabilities).
    F32(Vec<f32>),
    /// 32-bit signed integers (feature indices, tree links, class indices).
    I32(Vec<i32>),
}

/// A row-major array with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: TensorData,
}

impl Tensor {
    /// An f32 tensor.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            shape,
            data: TensorData::F32(data),
        }
    }

    /// An i32 tensor.
    pub fn i32(shape: Vec<usize>, data: Vec<i32>) -> Self {
        Self {
            shape,
            data: TensorData::I32(data),
        }
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values when they are f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I32(_) => None,
        }
    }

    /// The values when they are i32.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// The dtype's name as safetensors spells it.
    pub fn dtype_name(&self) -> &'static str {
        match &self.data {
            TensorData::F32(_) => "F32",
            TensorData::I32(_) => "I32",
        }
    }
}
