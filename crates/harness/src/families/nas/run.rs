//! One architecture-search cell on one engine: a part of the table (train each of its
//! architectures by the recipe, score it on the validation subset, time its compilation, first
//! step and the rest), or the search (the strategies over the whole table, then the top
//! architectures found retrained longer and scored on the test subset).

use super::search::curves;
use super::space::{Arch, Indexed};
use super::{ArchitectureSearch, Final, Metrics, Row, SearchOutcome, Variant};
use crate::families::training::{Evaluation, Steps, Trainer};
use crate::families::{typed, Job, Record, Registry, WorkloadFamily};
use randbench_core::backend::{BResult, Backend, BackendId};
use randbench_core::models::init_params;
use randbench_core::units::Seconds;
use randbench_schema::results;
use randbench_schema::{Observer, Progress, Status};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// The subsets on the device and the recipe's batches, shared by every candidate of a cell.
struct Candidates<'a, B: Backend> {
    w: &'a ArchitectureSearch,
    trainer: Trainer<'a, B>,
    validation: (B::Tensor, B::Tensor),
    test: (B::Tensor, B::Tensor),
    /// Examples in the training, validation and test subsets.
    sizes: [usize; 3],
    shape: [usize; 3],
    classes: usize,
    seed: u64,
}

/// Where a candidate is scored.
#[derive(Clone, Copy)]
enum On {
    Validation,
    Test,
}

impl<'a, B: Backend> Candidates<'a, B> {
    fn new(b: &'a B, job: &Job<'a, super::Family>) -> BResult<Self> {
        let d = job.data;
        let upload = |set: &randbench_core::data::Dataset| -> BResult<(B::Tensor, B::Tensor)> {
            let (x, y) = set.tensors();
            Ok((b.upload(&x)?, b.upload(&y)?))
        };
        Ok(Candidates {
            w: job.workload,
            trainer: Trainer::new(b, &d.train, job.guard())?,
            validation: upload(&d.validation)?,
            test: upload(&d.test)?,
            sizes: [d.train.len(), d.validation.len(), d.test.len()],
            shape: d.train.shape,
            classes: d.train.classes,
            seed: job.seed,
        })
    }

    /// Trains `arch` from the seed's initial weights for `epochs` by the recipe and scores it;
    /// `None` where the cell must stop (its reason in `record`).
    fn train(
        &self,
        arch: &Arch,
        epochs: usize,
        on: On,
        record: &mut Record,
        obs: &dyn Observer,
    ) -> BResult<Option<Row>> {
        let b = self.trainer.b;
        let w = self.w;
        let t0 = Instant::now();
        let model = arch.model(self.shape, self.classes);
        let specs = model.params()?;
        let shapes: Vec<Vec<usize>> = specs.iter().map(|p| p.shape.clone()).collect();
        let (scored, n) = match on {
            On::Validation => (&self.validation, self.sizes[1]),
            On::Test => (&self.test, self.sizes[2]),
        };
        let mut steps = Steps::compile(b, &model, w.optimizer, w.batch, self.sizes[0])?;
        let mut evaluation = Evaluation::compile(b, &model, n)?;
        let compile = t0.elapsed().as_secs_f64();
        let params = init_params(&specs, self.seed);
        let batches = self.trainer.batches(self.seed, epochs, w.batch);
        let mut times = Vec::new();
        let Some(trained) = self.trainer.train(
            &mut steps,
            &params,
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
            return Ok(None);
        };
        let accuracy = match &trained.params {
            Some(p) => Some(evaluation.accuracy(b, p, scored)?),
            None => None,
        };
        Ok(Some(Row {
            arch: arch.clone(),
            params: shapes.iter().map(|s| s.iter().product::<usize>()).sum(),
            validation_accuracy: accuracy,
            steps: times.len(),
            compile_seconds: Seconds(compile),
            first_step_seconds: Seconds(times.first().copied().unwrap_or(0.0)),
            train_seconds: Seconds(times.iter().sum()),
            seconds: Seconds(t0.elapsed().as_secs_f64()),
        }))
    }

    /// Trains `archs` by the recipe into `m.rows`; false where the cell must stop.
    fn table(
        &self,
        archs: &[&Arch],
        m: &mut Metrics,
        record: &mut Record,
        obs: &mut dyn Observer,
    ) -> BResult<bool> {
        for (k, arch) in archs.iter().enumerate() {
            let Some(row) = self.train(arch, self.w.epochs, On::Validation, record, obs)? else {
                return Ok(false);
            };
            if m.rows.is_empty() {
                record.first_step_seconds = Some(row.first_step_seconds);
            }
            let compiled = record.compile_seconds.map_or(0.0, |s| s.0) + row.compile_seconds.0;
            record.compile_seconds = Some(Seconds(compiled));
            m.rows.push(row);
            let best = m.best_row().map_or(0.0, Row::score);
            obs.progress(Progress::Epoch { epoch: k + 1, of: archs.len(), score: best });
        }
        Ok(true)
    }
}

/// The rows this workload's table cells on `backend` with `seed` wrote into the run directory
/// `dir` (the latest of each architecture).
fn rows_in_run(dir: &Path, job: &Job<super::Family>, backend: BackendId) -> Vec<Row> {
    let Ok(read) = results::read(dir, &Registry) else { return vec![] };
    read.results
        .iter()
        .filter(|r| {
            r.cell.workload == job.workload.name
                && r.cell.seed == job.seed
                && r.cell.backend == backend
                && r.metrics.family == super::Family::KEY
        })
        .filter(|r| matches!(typed(&r.cell.variant), Ok(Variant::Table { .. })))
        .filter_map(|r| typed::<Metrics>(&r.metrics).ok())
        .flat_map(|m| m.rows)
        .collect()
}

pub fn run<B: Backend>(
    b: &B,
    job: &Job<super::Family>,
    record: &mut Record,
    obs: &mut dyn Observer,
) -> BResult<Metrics> {
    let w = job.workload;
    let mut m = <super::Family as WorkloadFamily>::unmeasured(job);
    let table = Indexed::new(&w.space);
    obs.progress(Progress::Compiling);
    let candidates = Candidates::new(b, job)?;
    match *job.variant {
        Variant::Table { part, parts } => {
            let archs: Vec<&Arch> = table
                .archs
                .iter()
                .enumerate()
                .filter(|(i, _)| i % parts == part)
                .map(|(_, a)| a)
                .collect();
            if !candidates.table(&archs, &mut m, record, obs)? {
                return Ok(m);
            }
        }
        Variant::Search => {
            let mut rows: Vec<Option<Row>> = vec![None; table.len()];
            let read = job.artifacts.map(|dir| rows_in_run(dir, job, b.id()));
            for row in read.into_iter().flatten() {
                if let Some(&i) = table.rows.get(&row.arch) {
                    rows[i] = Some(row);
                }
            }
            let rows_read = rows.iter().flatten().count();
            let missing: Vec<&Arch> = table
                .archs
                .iter()
                .zip(&rows)
                .filter(|(_, r)| r.is_none())
                .map(|(a, _)| a)
                .collect();
            if !candidates.table(&missing, &mut m, record, obs)? {
                return Ok(m);
            }
            for row in &m.rows {
                rows[table.rows[&row.arch]] = Some(row.clone());
            }
            let rows: Vec<Row> =
                rows.into_iter().map(|r| r.expect("every row read or trained")).collect();
            let accuracy: Vec<f64> = rows.iter().map(Row::score).collect();
            let seconds: Vec<f64> = rows.iter().map(|r| r.seconds.0).collect();
            let (curves, grid) =
                curves(&w.space, &table, &accuracy, &seconds, w.settings, w.seeds, job.seed);
            let best = super::best(rows.iter()).expect("a space of at least one row");
            // The top rows found: each search's best, ranked by validation accuracy.
            let mut found: HashMap<usize, usize> = HashMap::new();
            for i in curves.iter().flat_map(|c| &c.found) {
                *found.entry(*i).or_default() += 1;
            }
            let mut ranked: Vec<(usize, usize)> = found.into_iter().collect();
            ranked.sort_by(|a, b| accuracy[b.0].total_cmp(&accuracy[a.0]).then(a.0.cmp(&b.0)));
            let mut finals = Vec::new();
            for (k, &(i, found_by)) in ranked.iter().take(w.top).enumerate() {
                let Some(retrained) =
                    candidates.train(&rows[i].arch, w.final_epochs, On::Test, record, obs)?
                else {
                    return Ok(m);
                };
                finals.push(Final {
                    arch: rows[i].arch.clone(),
                    params: rows[i].params,
                    validation_accuracy: accuracy[i],
                    found_by,
                    test_accuracy: retrained.validation_accuracy,
                    seconds: retrained.seconds,
                });
                let score = retrained.validation_accuracy.unwrap_or(0.0);
                obs.progress(Progress::Epoch { epoch: k + 1, of: w.top.min(ranked.len()), score });
            }
            m.search = Some(SearchOutcome {
                rows_read,
                rows_trained: m.rows.len(),
                best: best.arch.clone(),
                best_validation_accuracy: best.score(),
                models: w.settings.models,
                seeds: w.seeds,
                grid,
                curves,
                finals,
            });
        }
    }
    record.status = Status::Ok;
    Ok(m)
}
