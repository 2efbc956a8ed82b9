//! The search space: MLPs and small CNNs for one image shape, every architecture listed in one
//! canonical order (a table's row order), each the end of a path of choices as MetaQNN's agent
//! takes them, with the one-choice mutations regularized evolution makes.

use randbench_core::models::{Activation, CnnSpec, Model};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// The MLPs of the space: any allowed depth, each hidden layer any width, one activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSpace {
    /// Allowed numbers of hidden layers (0: a linear classifier).
    pub layers: Vec<usize>,
    pub widths: Vec<usize>,
    pub activations: Vec<Activation>,
}

/// The CNNs: convolution blocks (convolution, ReLU, 2×2 max-pool) with any filters each, one
/// kernel size, then a dense hidden layer (ReLU) and the classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnSpace {
    /// Allowed numbers of convolution blocks (at least 1).
    pub layers: Vec<usize>,
    pub filters: Vec<usize>,
    pub kernels: Vec<usize>,
    pub hidden: Vec<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Space {
    pub mlp: Option<MlpSpace>,
    pub cnn: Option<CnnSpace>,
}

/// One architecture of the space.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Mlp { hidden: Vec<usize>, activation: Activation },
    Cnn { filters: Vec<usize>, kernel: usize, hidden: usize },
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: &[usize]| v.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("-");
        match self {
            Arch::Mlp { hidden, .. } if hidden.is_empty() => f.write_str("linear"),
            Arch::Mlp { hidden, activation } => {
                write!(f, "mlp-{}-{}", join(hidden), format!("{activation:?}").to_lowercase())
            }
            Arch::Cnn { filters, kernel, hidden } => {
                write!(f, "cnn-{}-k{kernel}-h{hidden}", join(filters))
            }
        }
    }
}

impl Arch {
    pub fn model(&self, input: [usize; 3], classes: usize) -> Model {
        match self {
            Arch::Mlp { hidden, activation } => Model::mlp(input, hidden, classes, *activation),
            Arch::Cnn { filters, kernel, hidden } => Model::Cnn {
                input,
                spec: CnnSpec { channels: filters.clone(), kernel: *kernel, hidden: *hidden },
                classes,
            },
        }
    }

    /// The choices that build it, in the agent's order; the last one ends the path.
    pub fn path(&self) -> Vec<Choice> {
        match self {
            Arch::Mlp { hidden, activation } => std::iter::once(Choice::Mlp(*activation))
                .chain(hidden.iter().map(|&w| Choice::Dense(w)))
                .chain([Choice::Stop])
                .collect(),
            Arch::Cnn { filters, kernel, hidden } => std::iter::once(Choice::Cnn(*kernel))
                .chain(filters.iter().map(|&f| Choice::Conv(f)))
                .chain([Choice::Hidden(*hidden)])
                .collect(),
        }
    }
}

/// One decision of a path: the kind of network first (with its activation or kernel), then
/// its layers, then the end (`Stop` for an MLP; a CNN ends with its dense hidden layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Choice {
    Mlp(Activation),
    Cnn(usize),
    Dense(usize),
    Conv(usize),
    Hidden(usize),
    Stop,
}

impl Choice {
    pub fn ends(self) -> bool {
        matches!(self, Choice::Stop | Choice::Hidden(_))
    }
}

/// Where the agent is: how many layers it has placed and its last choice (MetaQNN's state:
/// layer depth and the current layer, not the whole path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub depth: usize,
    pub last: Option<Choice>,
}

impl State {
    pub const START: State = State { depth: 0, last: None };

    /// The state after taking `c` (not a path's end).
    pub fn after(self, c: Choice) -> State {
        match c {
            Choice::Mlp(_) | Choice::Cnn(_) => State { depth: 0, last: Some(c) },
            _ => State { depth: self.depth + 1, last: Some(c) },
        }
    }
}

impl Space {
    /// Every architecture, in the table's order: MLPs by depth, then CNNs by depth.
    pub fn architectures(&self) -> Vec<Arch> {
        let mut out = Vec::new();
        if let Some(m) = &self.mlp {
            for &depth in &m.layers {
                if depth == 0 {
                    // A linear classifier has no activation: one architecture, not one each.
                    out.push(Arch::Mlp { hidden: vec![], activation: m.activations[0] });
                    continue;
                }
                for &activation in &m.activations {
                    for hidden in sequences(&m.widths, depth) {
                        out.push(Arch::Mlp { hidden, activation });
                    }
                }
            }
        }
        if let Some(c) = &self.cnn {
            for &depth in &c.layers {
                for &kernel in &c.kernels {
                    for filters in sequences(&c.filters, depth) {
                        for &hidden in &c.hidden {
                            out.push(Arch::Cnn { filters: filters.clone(), kernel, hidden });
                        }
                    }
                }
            }
        }
        out
    }

    /// The choices open at `s`.
    pub fn actions(&self, s: State) -> Vec<Choice> {
        match s.last {
            None => {
                let mut v: Vec<Choice> = Vec::new();
                if let Some(m) = &self.mlp {
                    v.extend(m.activations.iter().map(|&a| Choice::Mlp(a)));
                }
                if let Some(c) = &self.cnn {
                    v.extend(c.kernels.iter().map(|&k| Choice::Cnn(k)));
                }
                v
            }
            Some(Choice::Mlp(_) | Choice::Dense(_)) => {
                let m = self.mlp.as_ref().expect("an MLP path in a space with MLPs");
                let mut v = Vec::new();
                if m.layers.contains(&s.depth) {
                    v.push(Choice::Stop);
                }
                if m.layers.iter().any(|&d| d > s.depth) {
                    v.extend(m.widths.iter().map(|&w| Choice::Dense(w)));
                }
                v
            }
            Some(Choice::Cnn(_) | Choice::Conv(_)) => {
                let c = self.cnn.as_ref().expect("a CNN path in a space with CNNs");
                let mut v = Vec::new();
                if c.layers.contains(&s.depth) {
                    v.extend(c.hidden.iter().map(|&h| Choice::Hidden(h)));
                }
                if c.layers.iter().any(|&d| d > s.depth) {
                    v.extend(c.filters.iter().map(|&f| Choice::Conv(f)));
                }
                v
            }
            Some(Choice::Stop | Choice::Hidden(_)) => vec![],
        }
    }

    /// The architecture a finished path builds (a linear classifier's activation is the
    /// space's first, as in [`Space::architectures`]).
    pub fn arch_of(&self, path: &[Choice]) -> Arch {
        match path[0] {
            Choice::Mlp(activation) => {
                let hidden: Vec<usize> = path[1..]
                    .iter()
                    .filter_map(|c| if let Choice::Dense(w) = c { Some(*w) } else { None })
                    .collect();
                let activation = match hidden.is_empty() {
                    true => self.mlp.as_ref().expect("an MLP space").activations[0],
                    false => activation,
                };
                Arch::Mlp { hidden, activation }
            }
            Choice::Cnn(kernel) => {
                let filters = path[1..]
                    .iter()
                    .filter_map(|c| if let Choice::Conv(f) = c { Some(*f) } else { None })
                    .collect();
                let Some(&Choice::Hidden(hidden)) = path.last() else {
                    unreachable!("a CNN path ends with its hidden layer")
                };
                Arch::Cnn { filters, kernel, hidden }
            }
            c => unreachable!("a path starts with the kind of network, not {c:?}"),
        }
    }
}

impl Space {
    /// What is wrong with the space as a suite wrote it, if anything.
    pub fn check(&self) -> Result<(), &'static str> {
        let bad = |list: &[usize]| list.is_empty() || list.contains(&0) || repeats(list);
        if self.mlp.is_none() && self.cnn.is_none() {
            return Err("the space needs `mlp`, `cnn` or both");
        }
        if let Some(m) = &self.mlp {
            if m.layers.is_empty() || repeats(&m.layers) {
                return Err(
                    "space.mlp.layers: numbers of hidden layers, each once, e.g. [0, 1, 2]",
                );
            }
            if m.activations.is_empty() || repeats(&m.activations) {
                return Err("space.mlp.activations: each once, e.g. [relu, tanh]");
            }
            if m.layers.iter().any(|&d| d > 0) && bad(&m.widths) {
                return Err("space.mlp.widths: positive widths, each once, e.g. [32, 64]");
            }
        }
        if let Some(c) = &self.cnn {
            if bad(&c.layers) {
                return Err(
                    "space.cnn.layers: numbers of convolution blocks, each at least 1 and \
                            listed once, e.g. [1, 2]",
                );
            }
            if bad(&c.filters) || bad(&c.hidden) {
                return Err("space.cnn needs positive `filters` and `hidden`, each listed once");
            }
            if bad(&c.kernels) || c.kernels.iter().any(|k| k % 2 == 0) {
                return Err("space.cnn.kernels: odd sizes (same padding), each once, e.g. [3, 5]");
            }
        }
        Ok(())
    }
}

fn repeats<T: PartialEq>(v: &[T]) -> bool {
    (1..v.len()).any(|i| v[..i].contains(&v[i]))
}

/// Every sequence of `len` entries from `values`, in lexicographic order of positions.
fn sequences(values: &[usize], len: usize) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for _ in 0..len {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |&v| {
                    let mut p = prefix.clone();
                    p.push(v);
                    p
                })
            })
            .collect();
    }
    out
}

/// The space as a table: architectures by row, and each row's one-choice mutations.
pub struct Indexed {
    pub archs: Vec<Arch>,
    pub rows: HashMap<Arch, usize>,
    neighbours: Vec<Vec<usize>>,
}

impl Indexed {
    pub fn new(space: &Space) -> Self {
        let archs = space.architectures();
        let rows: HashMap<Arch, usize> =
            archs.iter().enumerate().map(|(i, a)| (a.clone(), i)).collect();
        let neighbours = archs
            .iter()
            .map(|a| (0..archs.len()).filter(|&j| one_choice_apart(a, &archs[j])).collect())
            .collect();
        Indexed { archs, rows, neighbours }
    }

    pub fn len(&self) -> usize {
        self.archs.len()
    }

    /// The architectures one mutation away from row `i` (Real et al.: one choice changed).
    pub fn neighbours(&self, i: usize) -> &[usize] {
        &self.neighbours[i]
    }
}

/// Whether two architectures differ by one choice: the activation, the kernel or the hidden
/// layer, one layer's width, one layer added or removed at the end, or a convolution block
/// added in front of an MLP's one hidden layer (CNNs use ReLU).
fn one_choice_apart(a: &Arch, b: &Arch) -> bool {
    fn layers_apart(x: &[usize], y: &[usize]) -> usize {
        if x.len() == y.len() {
            x.iter().zip(y).filter(|(p, q)| p != q).count()
        } else if x.len().abs_diff(y.len()) == 1 {
            let n = x.len().min(y.len());
            1 + x[..n].iter().zip(&y[..n]).filter(|(p, q)| p != q).count()
        } else {
            2
        }
    }
    match (a, b) {
        (Arch::Mlp { hidden: h1, activation: a1 }, Arch::Mlp { hidden: h2, activation: a2 }) => {
            // A linear classifier's activation is no choice: only its layers count.
            let act = usize::from(a1 != a2 && !h1.is_empty() && !h2.is_empty());
            layers_apart(h1, h2) + act == 1
        }
        (
            Arch::Cnn { filters: f1, kernel: k1, hidden: h1 },
            Arch::Cnn { filters: f2, kernel: k2, hidden: h2 },
        ) => layers_apart(f1, f2) + usize::from(k1 != k2) + usize::from(h1 != h2) == 1,
        // A convolution block added in front of a one-layer ReLU MLP (or the only block
        // removed): what joins the MLPs and CNNs, so that evolution can cross between them.
        (Arch::Mlp { hidden, activation }, Arch::Cnn { filters, hidden: dense, .. })
        | (Arch::Cnn { filters, hidden: dense, .. }, Arch::Mlp { hidden, activation }) => {
            *activation == Activation::Relu && filters.len() == 1 && hidden[..] == [*dense]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn small() -> Space {
        Space {
            mlp: Some(MlpSpace {
                layers: vec![0, 1, 2],
                widths: vec![8, 16],
                activations: vec![Activation::Relu, Activation::Tanh],
            }),
            cnn: Some(CnnSpace {
                layers: vec![1, 2],
                filters: vec![4],
                kernels: vec![3, 5],
                hidden: vec![8],
            }),
        }
    }

    #[test]
    fn the_space_lists_each_architecture_once_and_every_path_builds_one_of_them() {
        let space = small();
        let archs = space.architectures();
        // MLPs: 1 linear + 2 activations × (2 + 4) widths; CNNs: 2 kernels × (1 + 1) × 1.
        assert_eq!(archs.len(), 1 + 2 * 6 + 4);
        let t = Indexed::new(&space);
        assert_eq!(t.rows.len(), archs.len(), "no architecture twice");
        // Walk every path: each ends at an architecture of the table, and reaches them all.
        let mut reached = std::collections::HashSet::new();
        let mut open = vec![(State::START, vec![])];
        while let Some((s, path)) = open.pop() {
            for c in space.actions(s) {
                let mut p: Vec<Choice> = path.clone();
                p.push(c);
                if c.ends() {
                    let a = space.arch_of(&p);
                    assert!(t.rows.contains_key(&a), "{a} from {p:?}");
                    if !a.to_string().starts_with("linear") {
                        assert_eq!(a.path(), p);
                    }
                    reached.insert(a);
                } else {
                    open.push((s.after(c), p));
                }
            }
        }
        assert_eq!(reached.len(), archs.len());
    }

    #[test]
    fn a_space_written_wrong_says_what_to_change() {
        assert_eq!(small().check(), Ok(()));
        let with = |f: &dyn Fn(&mut Space)| {
            let mut s = small();
            f(&mut s);
            s.check().unwrap_err()
        };
        assert!(with(&|s| s.cnn.as_mut().unwrap().kernels = vec![3, 4]).contains("odd"));
        assert!(with(&|s| s.cnn.as_mut().unwrap().layers = vec![0, 1]).contains("at least 1"));
        assert!(with(&|s| s.mlp.as_mut().unwrap().widths = vec![8, 8]).contains("each once"));
        let twice = with(&|s| s.mlp.as_mut().unwrap().activations = vec![Activation::Relu; 2]);
        assert!(twice.contains("activations"));
        assert!(with(&|s| *s = Space::default()).contains("`mlp`, `cnn` or both"));
    }

    #[test]
    fn a_mutation_changes_one_choice() {
        let space = small();
        let t = Indexed::new(&space);
        let row = |a: Arch| t.rows[&a];
        let relu8 = row(Arch::Mlp { hidden: vec![8], activation: Activation::Relu });
        let names: Vec<String> =
            t.neighbours(relu8).iter().map(|&j| t.archs[j].to_string()).collect();
        assert_eq!(
            names,
            [
                "linear",
                "mlp-16-relu",
                "mlp-8-tanh",
                "mlp-8-8-relu",
                "mlp-8-16-relu",
                "cnn-4-k3-h8",
                "cnn-4-k5-h8"
            ]
        );
        let cnn = row(Arch::Cnn { filters: vec![4, 4], kernel: 3, hidden: 8 });
        let names: Vec<String> =
            t.neighbours(cnn).iter().map(|&j| t.archs[j].to_string()).collect();
        assert_eq!(names, ["cnn-4-k3-h8", "cnn-4-4-k5-h8"]);
        let one_block = row(Arch::Cnn { filters: vec![4], kernel: 5, hidden: 8 });
        let names: Vec<String> =
            t.neighbours(one_block).iter().map(|&j| t.archs[j].to_string()).collect();
        assert_eq!(names, ["mlp-8-relu", "cnn-4-k3-h8", "cnn-4-4-k5-h8"]);
        for i in 0..t.len() {
            assert!(t.neighbours(i).iter().all(|&j| t.neighbours(j).contains(&i)), "symmetric");
        }
    }
}
