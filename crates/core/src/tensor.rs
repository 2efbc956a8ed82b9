//! Host tensors: the values that cross between the harness and a backend.

use std::fmt;

/// Element types the IR uses: `F32` for everything numeric, `I64` for class labels and indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    I64,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements, but {actual} were given")]
    LengthMismatch { shape: Vec<usize>, expected: usize, actual: usize },
    #[error("expected a {expected} tensor, found {actual}")]
    DType { expected: DType, actual: DType },
    #[error("expected a scalar, found shape {0:?}")]
    NotScalar(Vec<usize>),
}

/// A dense, row-major tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: HostData,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl HostTensor {
    pub fn f32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self, TensorError> {
        Self::new(shape.into(), HostData::F32(data))
    }

    pub fn i64(shape: impl Into<Vec<usize>>, data: Vec<i64>) -> Result<Self, TensorError> {
        Self::new(shape.into(), HostData::I64(data))
    }

    pub fn new(shape: Vec<usize>, data: HostData) -> Result<Self, TensorError> {
        let actual = match &data {
            HostData::F32(v) => v.len(),
            HostData::I64(v) => v.len(),
        };
        let expected = numel(&shape);
        if actual != expected {
            return Err(TensorError::LengthMismatch { shape, expected, actual });
        }
        Ok(Self { shape, data })
    }

    pub fn scalar(v: f32) -> Self {
        Self { shape: vec![], data: HostData::F32(vec![v]) }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self { shape: shape.to_vec(), data: HostData::F32(vec![0.0; numel(shape)]) }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            HostData::F32(_) => DType::F32,
            HostData::I64(_) => DType::I64,
        }
    }

    pub fn data(&self) -> &HostData {
        &self.data
    }

    pub fn as_f32(&self) -> Result<&[f32], TensorError> {
        match &self.data {
            HostData::F32(v) => Ok(v),
            HostData::I64(_) => {
                Err(TensorError::DType { expected: DType::F32, actual: DType::I64 })
            }
        }
    }

    pub fn as_i64(&self) -> Result<&[i64], TensorError> {
        match &self.data {
            HostData::I64(v) => Ok(v),
            HostData::F32(_) => {
                Err(TensorError::DType { expected: DType::I64, actual: DType::F32 })
            }
        }
    }

    pub fn into_f32(self) -> Result<Vec<f32>, TensorError> {
        match self.data {
            HostData::F32(v) => Ok(v),
            HostData::I64(_) => {
                Err(TensorError::DType { expected: DType::F32, actual: DType::I64 })
            }
        }
    }

    /// The value of a one-element f32 tensor (any rank).
    pub fn to_scalar(&self) -> Result<f32, TensorError> {
        let v = self.as_f32()?;
        if v.len() != 1 {
            return Err(TensorError::NotScalar(self.shape.clone()));
        }
        Ok(v[0])
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshape(self, shape: impl Into<Vec<usize>>) -> Result<Self, TensorError> {
        Self::new(shape.into(), self.data)
    }
}
