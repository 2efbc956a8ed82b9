//! A learned optimizer's weights on disk: safetensors, one f32 tensor per parameter (the
//! names of [`LstmOptimizer::params`]), with its configuration as JSON in the metadata, so
//! that one meta-trained on one engine can be evaluated on any other.

use randbench_core::l2l::LstmOptimizer;
use randbench_core::tensor::HostTensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The metadata key holding the optimizer's configuration.
const CONFIG_KEY: &str = "randbench.optimizer";

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: cannot read: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a safetensors file: {source}", .path.display())]
    Format { path: PathBuf, source: safetensors::SafeTensorError },
    #[error("{}: {detail}", .path.display())]
    Mismatch { path: PathBuf, detail: String },
}

/// The file's bytes for `params` (in [`LstmOptimizer::params`] order).
pub fn to_bytes(opt: &LstmOptimizer, params: &[HostTensor]) -> Vec<u8> {
    let specs = opt.params();
    let bytes: Vec<Vec<u8>> = params
        .iter()
        .map(|t| t.as_f32().expect("φ is f32").iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = specs.iter().zip(&bytes).map(|(s, b)| {
        (s.name.clone(), TensorView::new(Dtype::F32, s.shape.clone(), b).expect("sizes match"))
    });
    let config = serde_json::to_string(opt).expect("a configuration serializes");
    let metadata = HashMap::from([(CONFIG_KEY.to_string(), config)]);
    safetensors::serialize(views, Some(metadata)).expect("tensors serialize")
}

/// Writes `params` to `path` (through a temporary file, so a reader never sees half a file).
pub fn save(path: &Path, opt: &LstmOptimizer, params: &[HostTensor]) -> std::io::Result<()> {
    randbench_schema::results::write_atomic(path, to_bytes(opt, params))
}

/// Reads weights saved for `expected` (its configuration must match the file's).
pub fn load(path: &Path, expected: &LstmOptimizer) -> Result<Vec<HostTensor>, WeightsError> {
    let bytes =
        std::fs::read(path).map_err(|source| WeightsError::Io { path: path.into(), source })?;
    from_bytes(&bytes, expected).map_err(|e| match e {
        Loaded::Format(source) => WeightsError::Format { path: path.into(), source },
        Loaded::Mismatch(detail) => WeightsError::Mismatch { path: path.into(), detail },
    })
}

enum Loaded {
    Format(safetensors::SafeTensorError),
    Mismatch(String),
}

fn from_bytes(bytes: &[u8], expected: &LstmOptimizer) -> Result<Vec<HostTensor>, Loaded> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(Loaded::Format)?;
    let config = meta.metadata().as_ref().and_then(|m| m.get(CONFIG_KEY)).ok_or_else(|| {
        Loaded::Mismatch(format!("no `{CONFIG_KEY}` metadata: not saved by randbench"))
    })?;
    let saved: LstmOptimizer = serde_json::from_str(config)
        .map_err(|e| Loaded::Mismatch(format!("`{CONFIG_KEY}` metadata: {e}")))?;
    if saved != *expected {
        return Err(Loaded::Mismatch(format!(
            "saved for optimizer {saved:?}, the workload's is {expected:?}: give the workload \
             the saved configuration"
        )));
    }
    let tensors = SafeTensors::deserialize(bytes).map_err(Loaded::Format)?;
    expected
        .params()
        .iter()
        .map(|spec| {
            let t = tensors.tensor(&spec.name).map_err(Loaded::Format)?;
            if t.dtype() != Dtype::F32 || t.shape() != spec.shape.as_slice() {
                return Err(Loaded::Mismatch(format!(
                    "{}: expected f32 {:?}, found {:?} {:?}",
                    spec.name,
                    spec.shape,
                    t.dtype(),
                    t.shape()
                )));
            }
            let values = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                .collect();
            Ok(HostTensor::f32(spec.shape.clone(), values).expect("shape checked"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use randbench_core::models::init_params;

    #[test]
    fn weights_round_trip_and_a_foreign_configuration_is_refused() {
        let opt = LstmOptimizer::default();
        let params = init_params(&opt.params(), 7);
        let bytes = to_bytes(&opt, &params);
        assert!(from_bytes(&bytes, &opt).ok() == Some(params));
        let other = LstmOptimizer { hidden: 10, ..opt };
        match from_bytes(&bytes, &other) {
            Err(Loaded::Mismatch(d)) => assert!(d.contains("hidden: 20"), "{d}"),
            _ => panic!("a file for another configuration was accepted"),
        }
        assert!(matches!(from_bytes(b"not a file", &opt), Err(Loaded::Format(_))));
    }
}
