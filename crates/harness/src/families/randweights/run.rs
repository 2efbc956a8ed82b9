//! One random-weights cell on one engine: train the network end to end (for the trained
//! weights and the accuracy to compare with), fit a linear classifier on the random network's
//! features, then rebuild the first test images from the feature maps after every block, with
//! random and with trained weights, and draw them.

use super::{Metrics, RandomWeights, Reconstruction, Weights};
use crate::families::training::{padded_indices, upload_all, Evaluation, Steps, Trainer, CHUNK};
use crate::families::Guard;
use crate::families::{Job, Record, WorkloadFamily};
use randbench_core::backend::{BResult, Backend};
use randbench_core::data::Dataset;
use randbench_core::models::{init_params, Activation, Model};
use randbench_core::optim::{defaults, Optimizer, Rule};
use randbench_core::rng::Rng;
use randbench_core::stats::Summary;
use randbench_core::train::{features_graph, inversion_step, Feed};
use randbench_core::units::Seconds;
use randbench_core::HostTensor;
use randbench_schema::{Observer, Progress, Status};
use std::path::Path;
use std::time::Instant;

fn adam(lr: f64) -> Optimizer {
    Optimizer::new(
        Rule::Adam { beta1: defaults::BETA1, beta2: defaults::BETA2, eps: defaults::EPS },
        lr,
    )
}

/// A depth's reconstruction programs, compiled once for both weights: the target feature
/// maps, and one step on the image.
struct Inversion<B: Backend> {
    features: B::Program,
    step: B::Program,
    /// Outputs of a step that feed the next: the image and the optimizer's state.
    carried: usize,
}

impl<B: Backend> Inversion<B> {
    fn compile(b: &B, model: &Model, depth: usize, images: usize, lr: f64) -> BResult<Self> {
        let step = inversion_step(model, depth, images, &adam(lr))?;
        Ok(Inversion {
            features: b.compile(&features_graph(model, depth, images, Feed::Batch)?)?,
            step: b.compile(&step.graph)?,
            carried: 1 + step.state,
        })
    }
}

/// The lowest and highest value.
fn range(x: &[f32]) -> (f32, f32) {
    x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)))
}

/// The flattened feature maps after `depth` blocks of every example of a data set on the
/// device, and their width.
fn features_of<B: Backend>(
    b: &B,
    model: &Model,
    depth: usize,
    params: &[HostTensor],
    data: &(B::Tensor, B::Tensor),
    n: usize,
) -> BResult<(Vec<f32>, usize)> {
    let chunk = CHUNK.min(n);
    let mut prog =
        b.compile(&features_graph(model, depth, chunk, Feed::Gather { examples: n })?)?;
    let dev = upload_all(b, &params[..2 * depth])?;
    let mut out = Vec::new();
    let mut width = 0;
    for start in (0..n).step_by(chunk) {
        let (idx, valid) = padded_indices(start, chunk, n);
        let idx = b.upload(&idx)?;
        let mut inputs: Vec<&B::Tensor> = dev.iter().collect();
        inputs.extend([&data.0, &data.1, &idx]);
        let f = b.download(&b.run(&mut prog, &inputs)?[0])?;
        width = f.shape()[1];
        out.extend_from_slice(&f.as_f32().expect("f32")[..valid * width]);
    }
    Ok((out, width))
}

/// One reconstruction's outcome: the feature loss before the first step and at the last
/// (`None` where not finite), the images reached, and the time the steps took.
struct Rebuilt {
    start_loss: Option<f64>,
    end_loss: Option<f64>,
    x: HostTensor,
    seconds: f64,
}

/// Rebuilds the images `x0` (on the device, with dummy `labels`) from their feature maps
/// after `depth` blocks, starting from `start`: Adam on the image for the workload's steps.
/// `None` where the guard stopped it (its reason in `record`).
#[allow(clippy::too_many_arguments)]
fn reconstruct<B: Backend>(
    b: &B,
    w: &RandomWeights,
    inv: &mut Inversion<B>,
    depth: usize,
    params: &[HostTensor],
    x0: (&B::Tensor, &B::Tensor),
    start: &HostTensor,
    (guard, obs, record): (Guard, &dyn Observer, &mut Record),
) -> BResult<Option<Rebuilt>> {
    let blocks = upload_all(b, &params[..2 * depth])?;
    let mut inputs: Vec<&B::Tensor> = blocks.iter().collect();
    inputs.extend([x0.0, x0.1]);
    let target = b.run(&mut inv.features, &inputs)?.remove(0);
    let mut state = vec![start.clone()];
    state.extend(adam(w.lr).initial_state(&[start.shape().to_vec()]));
    let mut state = upload_all(b, &state)?;
    let finite = |v: f32| Some(v as f64).filter(|l| l.is_finite());
    let (mut first, mut last) = (None, None);
    let t0 = Instant::now();
    for s in 0..w.steps {
        if guard.halt(obs, record) {
            return Ok(None);
        }
        let mut inputs: Vec<&B::Tensor> = blocks.iter().chain(&state).collect();
        inputs.push(&target);
        let mut out = b.run(&mut inv.step, &inputs)?;
        // Only the first and last losses are read: a read waits for the device.
        if s == 0 || s + 1 == w.steps {
            let loss = finite(b.download(&out[inv.carried])?.to_scalar().expect("scalar"));
            if s == 0 {
                first = loss;
            }
            last = loss;
        }
        out.truncate(inv.carried);
        state = out;
    }
    b.sync()?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(Some(Rebuilt { start_loss: first, end_loss: last, x: b.download(&state[0])?, seconds }))
}

/// Mean squared error and PSNR (dB, peak: the originals' range) of `x` against `x0`.
pub fn mse_psnr(x: &[f32], x0: &[f32]) -> (f64, f64) {
    let mse = x.iter().zip(x0).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>()
        / x0.len() as f64;
    let (lo, hi) = range(x0);
    let peak = (hi - lo) as f64;
    (mse, 10.0 * (peak * peak / mse.max(1e-12)).log10())
}

/// One PNG per image: the original, then its reconstruction from each depth; the random
/// weights' row above the trained weights'. Pixels are scaled by the original's range.
fn draw(
    path: &Path,
    x0: &[f32],
    rows: &[Vec<&[f32]>],
    [c, h, w]: [usize; 3],
) -> std::io::Result<()> {
    let scale = (96 / h.max(w)).max(1);
    let (tw, th) = (w * scale, h * scale);
    let gap = 4;
    let cols = 1 + rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let (width, height) = (cols * (tw + gap) + gap, rows.len() * (th + gap) + gap);
    let (lo, hi) = range(x0);
    let span = (hi - lo).max(1e-6);
    let mut pixels = vec![255u8; width * height * c];
    let mut tile = |image: &[f32], row: usize, col: usize| {
        let (ox, oy) = (gap + col * (tw + gap), gap + row * (th + gap));
        for y in 0..th {
            for x in 0..tw {
                for ch in 0..c {
                    let v = image[ch * h * w + (y / scale) * w + x / scale];
                    let byte = (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
                    pixels[((oy + y) * width + ox + x) * c + ch] = byte;
                }
            }
        }
    };
    for (r, images) in rows.iter().enumerate() {
        tile(x0, r, 0);
        for (d, image) in images.iter().enumerate() {
            tile(image, r, d + 1);
        }
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, width as u32, height as u32);
    encoder.set_color(if c == 3 { png::ColorType::Rgb } else { png::ColorType::Grayscale });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer.write_image_data(&pixels).map_err(std::io::Error::other)
}

pub fn run<B: Backend>(
    b: &B,
    job: &Job<super::Family>,
    record: &mut Record,
    obs: &mut dyn Observer,
) -> BResult<Metrics> {
    let w: &RandomWeights = job.workload;
    let (train, test) = (&job.data.train, &job.data.test);
    let (n, classes) = (train.len(), train.classes);
    let mut m = <super::Family as WorkloadFamily>::unmeasured(job);
    let model = w.model.model(train.shape, classes);
    let depths = match &model {
        Model::Cnn { spec, .. } => spec.channels.len(),
        Model::Mlp { .. } => unreachable!("validated: a CNN"),
    };
    let specs = model.params()?;
    let shapes: Vec<Vec<usize>> = specs.iter().map(|p| p.shape.clone()).collect();
    let random = init_params(&specs, job.seed);

    // The network trained end to end, from the same random weights.
    obs.progress(Progress::Compiling);
    let compiling = Instant::now();
    let trainer = Trainer::new(b, train, job.guard())?;
    let mut steps = Steps::compile(b, &model, w.optimizer, w.batch, n)?;
    record.compile_seconds = Some(Seconds(compiling.elapsed().as_secs_f64()));
    let mut warm_rng = Rng::stream(job.seed, "warmup");
    record.first_step_seconds =
        Some(Seconds(steps.warm_up(&trainer, &random, &shapes, w.batch, &mut warm_rng)?));
    let batches = trainer.batches(job.seed, w.epochs, w.batch);
    let mut times = Vec::new();
    let Some(trained) = trainer.train(
        &mut steps,
        &random,
        &shapes,
        &batches,
        0,
        &[],
        record,
        true,
        &mut times,
        obs,
    )?
    else {
        return Ok(m);
    };
    m.train_seconds = Seconds(times.iter().sum());
    m.steps_per_second = Summary::of(&times.iter().map(|t| 1.0 / t).collect::<Vec<_>>());
    if let Some(step) = trained.diverged_at {
        Guard::diverged(record, step);
    }
    let (vx, vy) = test.tensors();
    let test_dev = (b.upload(&vx)?, b.upload(&vy)?);
    let mut eval_test = Evaluation::compile(b, &model, test.len())?;
    m.untrained_test_accuracy = Some(eval_test.accuracy(b, &random, &test_dev)?);
    if let Some(p) = &trained.params {
        m.trained_test_accuracy = Some(eval_test.accuracy(b, p, &test_dev)?);
    }
    obs.progress(Progress::Epoch {
        epoch: 1,
        of: 3,
        score: m.trained_test_accuracy.unwrap_or(0.0),
    });

    // A linear classifier on the random network's last feature maps.
    let (train_f, width) = features_of(b, &model, depths, &random, &trainer.data, n)?;
    let (test_f, _) = features_of(b, &model, depths, &random, &test_dev, test.len())?;
    let as_data = |f: Vec<f32>, d: &Dataset| {
        Dataset::new(f, d.labels.clone(), [width, 1, 1], classes).expect("consistent")
    };
    let (probe_train, probe_test) = (as_data(train_f, train), as_data(test_f, test));
    let probe = Model::mlp([width, 1, 1], &[], classes, Activation::Relu);
    let probe_specs = probe.params()?;
    let probe_shapes: Vec<Vec<usize>> = probe_specs.iter().map(|p| p.shape.clone()).collect();
    let probe_trainer = Trainer::new(b, &probe_train, job.guard())?;
    let mut probe_steps = Steps::compile(b, &probe, adam(w.probe_lr), w.batch, n)?;
    let probe_batches = probe_trainer.batches(job.seed, w.probe_epochs, w.batch);
    let Some(probed) = probe_trainer.train(
        &mut probe_steps,
        &init_params(&probe_specs, job.seed),
        &probe_shapes,
        &probe_batches,
        0,
        &[],
        record,
        false,
        &mut Vec::new(),
        obs,
    )?
    else {
        return Ok(m);
    };
    m.probe_features = width;
    if let Some(p) = &probed.params {
        let (px, py) = probe_test.tensors();
        let dev = (b.upload(&px)?, b.upload(&py)?);
        let mut eval_probe = Evaluation::compile(b, &probe, probe_test.len())?;
        m.probe_test_accuracy = Some(eval_probe.accuracy(b, p, &dev)?);
    }
    obs.progress(Progress::Epoch { epoch: 2, of: 3, score: m.probe_test_accuracy.unwrap_or(0.0) });

    // Reconstructions of the first test images, from the same noise on every engine.
    let [c, h, wd] = test.shape;
    let k = w.images;
    let x0 =
        HostTensor::f32(vec![k, c, h, wd], test.images[..k * c * h * wd].to_vec()).expect("length");
    let mut noise_rng = Rng::stream(job.seed, "reconstruction");
    let start = HostTensor::f32(
        vec![k, c, h, wd],
        (0..k * c * h * wd).map(|_| noise_rng.uniform() as f32).collect(),
    )
    .expect("length");
    let x0_dev =
        (b.upload(&x0)?, b.upload(&HostTensor::i64(vec![k], vec![0; k]).expect("length"))?);
    let mut inversions = (1..=depths)
        .map(|depth| Inversion::compile(b, &model, depth, k, w.lr))
        .collect::<BResult<Vec<_>>>()?;
    let mut rebuilt: Vec<(Weights, Vec<HostTensor>)> = Vec::new();
    let weights = [(Weights::Random, Some(&random)), (Weights::Trained, trained.params.as_ref())];
    for (which, params) in weights {
        let Some(params) = params else { continue };
        let mut images = Vec::new();
        for depth in 1..=depths {
            let Some(Rebuilt { start_loss, end_loss, x, seconds }) = reconstruct(
                b,
                w,
                &mut inversions[depth - 1],
                depth,
                params,
                (&x0_dev.0, &x0_dev.1),
                &start,
                (job.guard(), &*obs, record),
            )?
            else {
                return Ok(m);
            };
            let (mse, psnr) = mse_psnr(x.as_f32().expect("f32"), x0.as_f32().expect("f32"));
            if !(mse.is_finite() && end_loss.is_some()) {
                // Only the first and last steps' losses are read back: it had diverged by its
                // last step.
                Guard::diverged(record, w.steps);
            }
            m.reconstructions.push(Reconstruction {
                weights: which,
                depth,
                start_loss,
                end_loss,
                mse,
                psnr,
                seconds: Seconds(seconds),
            });
            images.push(x);
        }
        rebuilt.push((which, images));
    }
    if record.status != Status::Diverged {
        record.status = Status::Ok;
    }
    if let Some(dir) = job.artifacts {
        let per = c * h * wd;
        for i in 0..k {
            let original = &x0.as_f32().expect("f32")[i * per..(i + 1) * per];
            let rows: Vec<Vec<&[f32]>> = rebuilt
                .iter()
                .map(|(_, xs)| {
                    xs.iter().map(|x| &x.as_f32().expect("f32")[i * per..(i + 1) * per]).collect()
                })
                .collect();
            let name = format!("{}-seed{}-{}-image{i}.png", job.workload.name, job.seed, b.id());
            draw(&dir.join(&name), original, &rows, [c, h, wd]).map_err(|e| {
                randbench_core::backend::BackendError::library(b.id(), format!("{name}: {e}"))
            })?;
            m.pictures.push(name);
        }
    }
    obs.progress(Progress::Epoch { epoch: 3, of: 3, score: 0.0 });
    Ok(m)
}
