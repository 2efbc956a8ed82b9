//! What families validate their workloads with: the suite file being read (`Ctx`: errors as
//! `file:line:column: message`, with the closest valid key), checks of numbers, optimizers and
//! data sets, and the one error type of suites.

use crate::datasets::{DataSource, DataSpec, RawData};
use randbench_core::optim::{defaults, Optimizer, Rule};
use randbench_core::units::Seconds;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{path}: cannot read the suite: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    At { path: String, line: u64, column: u64, message: String },
    #[error("{0}")]
    NotFound(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOptimizer {
    kind: Spanned<OptimizerKind>,
    lr: Spanned<f64>,
    momentum: Option<Spanned<f64>>,
    alpha: Option<Spanned<f64>>,
    beta1: Option<Spanned<f64>>,
    beta2: Option<Spanned<f64>>,
    eps: Option<Spanned<f64>>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum OptimizerKind {
    Sgd,
    Momentum,
    Nesterov,
    Rmsprop,
    Adam,
}

/// The suite file being validated: its errors carry its name and a place in it. Families
/// validate their workloads with its helpers.
pub struct Ctx<'a> {
    path: &'a str,
}

impl<'a> Ctx<'a> {
    /// `path` names the file in errors.
    pub fn new(path: &'a str) -> Self {
        Ctx { path }
    }

    pub fn at(&self, loc: Location, message: impl Into<String>) -> SuiteError {
        SuiteError::At {
            path: self.path.to_string(),
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        }
    }

    pub fn check<T>(
        &self,
        v: &Spanned<T>,
        ok: impl Fn(&T) -> bool,
        message: impl FnOnce(&T) -> String,
    ) -> Result<(), SuiteError> {
        if ok(&v.value) {
            Ok(())
        } else {
            Err(self.at(v.referenced, message(&v.value)))
        }
    }
}

/// One line from a YAML error, with a suggestion where a key or value was misspelt.
pub fn yaml_error(cx: &Ctx, e: &serde_saphyr::Error) -> SuiteError {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("").trim();
    // "error: line 3 column 1: unknown field ..." -> "unknown field ..."
    let message = match first.find("column") {
        Some(c) => first[c..].split_once(": ").map(|(_, m)| m).unwrap_or(first),
        None => first.trim_start_matches("error: "),
    };
    // serde-saphyr repeats the place at the end; we lead with it already.
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains("column") => &message[..i],
        _ => message,
    };
    let message = match message {
        "invalid u64" | "invalid usize" | "invalid u32" => {
            "expected a whole number of 0 or more".to_string()
        }
        "invalid f64" | "invalid f32" => "expected a number".to_string(),
        m => with_suggestion(m),
    };
    match e.location() {
        Some(loc) => cx.at(loc, message),
        None => SuiteError::At { path: cx.path.to_string(), line: 0, column: 0, message },
    }
}

/// Adds "did you mean `x`?" to serde's "unknown field/variant `y`, expected one of a, b".
fn with_suggestion(message: &str) -> String {
    let (Some(start), Some(list)) = (message.find('`'), message.split("expected one of ").nth(1))
    else {
        return message.to_string();
    };
    let given = message[start + 1..].split('`').next().unwrap_or("");
    let best = list
        .split(", ")
        .map(|c| c.trim_matches('`').trim())
        .min_by_key(|c| edit_distance(given, c))
        .filter(|c| edit_distance(given, c) <= 2.max(given.len() / 3));
    match best {
        Some(b) => format!("{message}; did you mean `{b}`?"),
        None => message.to_string(),
    }
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Ctx<'_> {
    /// A workload's `timeout`, in seconds, if it has one.
    pub fn timeout(&self, v: &Option<Spanned<f64>>) -> Result<Option<Seconds>, SuiteError> {
        v.as_ref().map(|s| self.positive(s, "timeout").map(Seconds)).transpose()
    }

    /// A workload's name: as written, else its family's `key` (and its position after the first).
    pub fn workload_name(name: Option<String>, key: &str, index: usize) -> String {
        name.unwrap_or_else(|| match index {
            0 => key.to_string(),
            _ => format!("{key}-{index}"),
        })
    }

    pub fn positive(&self, v: &Spanned<f64>, what: &str) -> Result<f64, SuiteError> {
        self.check(
            v,
            |x| x.is_finite() && *x > 0.0,
            |x| format!("{what} must be a positive number, found {x}"),
        )?;
        Ok(v.value)
    }

    pub fn fraction(
        &self,
        v: &Option<Spanned<f64>>,
        what: &str,
        default: f64,
        upper_inclusive: bool,
    ) -> Result<f64, SuiteError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let bound = if upper_inclusive { "[0, 1]" } else { "[0, 1)" };
                self.check(
                    s,
                    |x| *x >= 0.0 && if upper_inclusive { *x <= 1.0 } else { *x < 1.0 },
                    |x| format!("{what} must be in {bound}, found {x}"),
                )?;
                Ok(s.value)
            }
        }
    }

    pub fn optimizer(&self, o: &RawOptimizer) -> Result<Optimizer, SuiteError> {
        let lr = self.positive(&o.lr, "lr")?;
        let kind = o.kind.value;
        let allowed: &[&str] = match kind {
            OptimizerKind::Sgd => &[],
            OptimizerKind::Momentum | OptimizerKind::Nesterov => &["momentum"],
            OptimizerKind::Rmsprop => &["alpha", "eps"],
            OptimizerKind::Adam => &["beta1", "beta2", "eps"],
        };
        for (name, v) in [
            ("momentum", &o.momentum),
            ("alpha", &o.alpha),
            ("beta1", &o.beta1),
            ("beta2", &o.beta2),
            ("eps", &o.eps),
        ] {
            if let Some(s) = v {
                if !allowed.contains(&name) {
                    let valid = if allowed.is_empty() {
                        "only lr".to_string()
                    } else {
                        format!("lr, {}", allowed.join(", "))
                    };
                    return Err(self.at(
                        s.referenced,
                        format!(
                            "`{name}` does not apply to the {kind:?} optimizer (it takes {valid})"
                        )
                        .to_lowercase(),
                    ));
                }
            }
        }
        let eps = match &o.eps {
            Some(e) => self.positive(e, "eps")?,
            None => defaults::EPS,
        };
        let rule = match kind {
            OptimizerKind::Sgd => Rule::Sgd,
            OptimizerKind::Momentum => Rule::Momentum {
                momentum: self.fraction(&o.momentum, "momentum", defaults::MOMENTUM, false)?,
            },
            OptimizerKind::Nesterov => Rule::Nesterov {
                momentum: self.fraction(&o.momentum, "momentum", defaults::MOMENTUM, false)?,
            },
            OptimizerKind::Rmsprop => Rule::Rmsprop {
                alpha: self.fraction(&o.alpha, "alpha", defaults::ALPHA, false)?,
                eps,
            },
            OptimizerKind::Adam => Rule::Adam {
                beta1: self.fraction(&o.beta1, "beta1", defaults::BETA1, false)?,
                beta2: self.fraction(&o.beta2, "beta2", defaults::BETA2, false)?,
                eps,
            },
        };
        Ok(Optimizer::new(rule, lr))
    }

    pub fn data(&self, d: RawData, at: Location) -> Result<DataSpec, SuiteError> {
        let count = |v: &Option<Spanned<usize>>, what: &str| -> Result<Option<usize>, SuiteError> {
            match v {
                None => Ok(None),
                Some(s) => {
                    self.check(s, |n| *n > 0, |_| format!("data.{what} must be at least 1"))?;
                    Ok(Some(s.value))
                }
            }
        };
        let train = count(&d.train, "train")?;
        let test = count(&d.test, "test")?;
        let needs_path = matches!(d.source, DataSource::Idx | DataSource::Cifar10);
        if needs_path && d.path.is_none() {
            return Err(self.at(
                at,
                format!("data source {:?} needs `path`, the directory holding its files", d.source)
                    .to_lowercase(),
            ));
        }
        let synthetic = d.source == DataSource::Synthetic;
        if !synthetic {
            if let Some(s) = &d.image {
                return Err(self.at(
                    s.referenced,
                    "`image` applies to synthetic data only: files carry their own image shape",
                ));
            }
        }
        let image = match d.image {
            Some(s) => {
                self.check(
                    &s,
                    |v| v.iter().all(|&x| x > 0),
                    |v| format!("image sides must be positive, found {v:?}"),
                )?;
                s.value
            }
            None if d.source == DataSource::Cifar10 => [3, 32, 32],
            None => [1, 28, 28],
        };
        let classes = match d.classes {
            Some(s) => {
                self.check(
                    &s,
                    |c| *c >= 2,
                    |c| format!("a classifier needs at least 2 classes, found {c}"),
                )?;
                s.value
            }
            None => 10,
        };
        if synthetic && train.is_none() {
            return Err(self.at(
                at,
                "synthetic data needs `train`, the number of training examples to generate",
            ));
        }
        Ok(DataSpec {
            source: d.source,
            path: d.path,
            train,
            test,
            image,
            classes,
            normalize: d.normalize.unwrap_or(true),
        })
    }
}
