//! Search strategies over a tabulated space: each sees only the validation accuracy of the rows
//! it asks for, and its cost is the rows it trains. A row asked for again costs nothing (its
//! accuracy is known), for every strategy alike; the budget is distinct rows trained.

use super::space::{Choice, Indexed, Space, State};
use randbench_core::rng::Rng;
use randbench_core::stats::mean_interval;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Random,
    QLearning,
    /// The control for Q-learning: MetaQNN's walks at ε = 1 throughout, learning nothing. What
    /// Q-learning gains over it is learning; what it gains over random search is also how its
    /// walks sample the space (choice by choice, not row by row).
    Walk,
    Evolution,
}

impl Strategy {
    pub const ALL: [Strategy; 4] =
        [Strategy::Random, Strategy::QLearning, Strategy::Walk, Strategy::Evolution];
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Random => "random search",
            Strategy::QLearning => "MetaQNN Q-learning",
            Strategy::Walk => "MetaQNN's walk, no learning",
            Strategy::Evolution => "regularized evolution",
        })
    }
}

/// A search's settings, from the suite.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Distinct architectures a search trains.
    pub models: usize,
    /// Regularized evolution's population and tournament sample.
    pub population: usize,
    pub sample: usize,
    /// Transitions MetaQNN replays after each model.
    pub replay: usize,
}

/// MetaQNN's learning rate and discount.
pub const ALPHA: f64 = 0.01;
pub const GAMMA: f64 = 1.0;
/// Q-values start at 0.5 (MetaQNN), between chance and a perfect accuracy.
const Q_INIT: f64 = 0.5;
/// A search that stops finding new rows (a converged agent) ends after this many proposals
/// per model of its budget.
const PROPOSALS_PER_MODEL: usize = 50;

/// MetaQNN's ε schedule (1,500 models at ε = 1, then 100 each at 0.9–0.7 and 150 each at
/// 0.6–0.1: 2,700 in all), scaled to a budget: ε for the model after `trained` of `budget`.
pub fn epsilon(trained: usize, budget: usize) -> f64 {
    const SCHEDULE: [(f64, usize); 10] = [
        (1.0, 1500),
        (0.9, 100),
        (0.8, 100),
        (0.7, 100),
        (0.6, 150),
        (0.5, 150),
        (0.4, 150),
        (0.3, 150),
        (0.2, 150),
        (0.1, 150),
    ];
    let total: usize = SCHEDULE.iter().map(|(_, n)| n).sum();
    let at = trained as f64 * total as f64 / budget.max(1) as f64;
    let mut end = 0.0;
    for (eps, n) in SCHEDULE {
        end += n as f64;
        if at < end {
            return eps;
        }
    }
    0.1
}

/// MetaQNN's agent: a Q-value per (state, choice).
pub struct QAgent<'a> {
    space: &'a Space,
    q: HashMap<(State, Choice), f64>,
}

impl<'a> QAgent<'a> {
    pub fn new(space: &'a Space) -> Self {
        QAgent { space, q: HashMap::new() }
    }

    pub fn q(&self, s: State, c: Choice) -> f64 {
        self.q.get(&(s, c)).copied().unwrap_or(Q_INIT)
    }

    fn best_value(&self, s: State) -> f64 {
        self.space.actions(s).into_iter().map(|c| self.q(s, c)).fold(f64::NEG_INFINITY, f64::max)
    }

    /// One Q-learning pass over a path that earned `reward`, from its end backwards:
    /// Q(s, u) ← (1 − α)·Q(s, u) + α·(r + γ·max Q(s', ·)), the reward at the end only.
    pub fn update(&mut self, path: &[Choice], reward: f64) {
        let mut states = vec![State::START];
        for &c in &path[..path.len() - 1] {
            states.push(states.last().expect("a start").after(c));
        }
        for i in (0..path.len()).rev() {
            let target = match i + 1 == path.len() {
                true => reward,
                false => GAMMA * self.best_value(states[i + 1]),
            };
            let q = self.q(states[i], path[i]);
            self.q.insert((states[i], path[i]), (1.0 - ALPHA) * q + ALPHA * target);
        }
    }

    /// A path, ε-greedy at each choice (ties among the best broken at random).
    pub fn walk(&self, eps: f64, rng: &mut Rng) -> Vec<Choice> {
        let mut s = State::START;
        let mut path = Vec::new();
        loop {
            let actions = self.space.actions(s);
            let c = if rng.uniform() < eps {
                actions[rng.below(actions.len())]
            } else {
                let best = self.best_value(s);
                let top: Vec<Choice> =
                    actions.into_iter().filter(|&c| self.q(s, c) == best).collect();
                top[rng.below(top.len())]
            };
            path.push(c);
            if c.ends() {
                return path;
            }
            s = s.after(c);
        }
    }
}

/// What a search has trained, in order, and the accuracies it knows.
struct Budget<'a> {
    accuracy: &'a [f64],
    models: usize,
    trained: Vec<usize>,
    seen: HashSet<usize>,
    proposals: usize,
}

impl<'a> Budget<'a> {
    fn new(accuracy: &'a [f64], models: usize) -> Self {
        Budget { accuracy, models, trained: vec![], seen: HashSet::new(), proposals: 0 }
    }

    /// Whether the search goes on: budget left, and proposals not exhausted.
    fn open(&self) -> bool {
        self.trained.len() < self.models && self.proposals < PROPOSALS_PER_MODEL * self.models
    }

    /// The accuracy of `row`, trained now if it is new.
    fn evaluate(&mut self, row: usize) -> f64 {
        self.proposals += 1;
        if self.seen.insert(row) {
            self.trained.push(row);
        }
        self.accuracy[row]
    }
}

/// One search over the table whose rows score `accuracy`: the rows it trained, in order.
pub fn search(
    strategy: Strategy,
    space: &Space,
    table: &Indexed,
    accuracy: &[f64],
    settings: Settings,
    rng: &mut Rng,
) -> Vec<usize> {
    let mut budget = Budget::new(accuracy, settings.models.min(table.len()));
    match strategy {
        Strategy::Random => {
            for row in rng.permutation(table.len()).into_iter().take(budget.models) {
                budget.evaluate(row);
            }
        }
        Strategy::QLearning => {
            let mut agent = QAgent::new(space);
            let mut memory: Vec<(Vec<Choice>, f64)> = Vec::new();
            while budget.open() {
                let eps = epsilon(budget.trained.len(), budget.models);
                let path = agent.walk(eps, rng);
                let reward = budget.evaluate(table.rows[&space.arch_of(&path)]);
                memory.push((path, reward));
                for _ in 0..settings.replay.min(memory.len()) {
                    let (p, r) = &memory[rng.below(memory.len())];
                    agent.update(p, *r);
                }
            }
        }
        Strategy::Walk => {
            let agent = QAgent::new(space);
            while budget.open() {
                budget.evaluate(table.rows[&space.arch_of(&agent.walk(1.0, rng))]);
            }
        }
        Strategy::Evolution => {
            let mut population = Population::default();
            while budget.open() && population.0.len() < settings.population {
                let row = rng.below(table.len());
                population.0.push_back((row, budget.evaluate(row)));
            }
            while budget.open() {
                let parent = population.tournament(settings.sample, rng);
                let mutations = table.neighbours(parent);
                let child = match mutations.is_empty() {
                    true => rng.below(table.len()),
                    false => mutations[rng.below(mutations.len())],
                };
                population.age((child, budget.evaluate(child)));
            }
        }
    }
    budget.trained
}

/// Regularized evolution's population, oldest first: (row, accuracy).
#[derive(Default)]
pub struct Population(pub VecDeque<(usize, f64)>);

impl Population {
    /// The best of `sample` members drawn at random without repeats (the first drawn among
    /// equals).
    pub fn tournament(&self, sample: usize, rng: &mut Rng) -> usize {
        let order = rng.permutation(self.0.len());
        let drawn = &order[..sample.min(self.0.len())];
        let best = drawn.iter().copied().fold(drawn[0], |b, i| match self.0[i].1 > self.0[b].1 {
            true => i,
            false => b,
        });
        self.0[best].0
    }

    /// The child joins, the oldest member leaves (not the worst: ageing).
    pub fn age(&mut self, child: (usize, f64)) {
        self.0.push_back(child);
        self.0.pop_front();
    }
}

/// A mean with its 95% interval over search seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Band {
    #[serde(with = "randbench_schema::real")]
    pub mean: f64,
    #[serde(with = "randbench_schema::real")]
    pub low: f64,
    #[serde(with = "randbench_schema::real")]
    pub high: f64,
}

impl Band {
    pub fn of(xs: &[f64]) -> Band {
        let (mean, low, high) = mean_interval(xs).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        Band { mean, low, high }
    }
}

/// A strategy's searches over many seeds, summarized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub strategy: Strategy,
    /// Regret (the space's best validation accuracy less the best found) after 1, 2, …
    /// models.
    pub by_models: Vec<Band>,
    /// Regret against engine seconds spent (training, compilation, set-up and evaluation of
    /// the rows trained), at the points of `Outcome::seconds`; before the first model ends the
    /// best found counts as 0.
    pub by_seconds: Vec<Band>,
    /// Best validation accuracy found within the budget.
    pub best: Band,
    /// Engine seconds the budget cost.
    pub seconds: Band,
    /// Seeds whose search found the space's best row.
    pub found_best: usize,
    /// The best row each seed found, in seed order.
    pub found: Vec<usize>,
}

/// Where a search stands after a model: engine seconds so far, the best accuracy found and
/// its row.
#[derive(Clone, Copy)]
struct Point {
    seconds: f64,
    best: f64,
    row: usize,
}

/// A search's rows trained, as the points it passed.
fn progress(rows: &[usize], accuracy: &[f64], seconds: &[f64]) -> Vec<Point> {
    let mut at = Point { seconds: 0.0, best: f64::NEG_INFINITY, row: 0 };
    rows.iter()
        .map(|&r| {
            at.seconds += seconds[r];
            if accuracy[r] > at.best {
                (at.best, at.row) = (accuracy[r], r);
            }
            at
        })
        .collect()
}

/// Every strategy run from `seeds` search seeds on the table (`accuracy`, `seconds` per row),
/// with the grid of seconds the curves are read at.
pub fn curves(
    space: &Space,
    table: &Indexed,
    accuracy: &[f64],
    seconds: &[f64],
    settings: Settings,
    seeds: usize,
    cell_seed: u64,
) -> (Vec<Curve>, Vec<f64>) {
    let space_best = accuracy.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let runs: Vec<(Strategy, Vec<Vec<Point>>)> = Strategy::ALL
        .iter()
        .map(|&s| {
            let runs = (0..seeds)
                .map(|k| {
                    let mut rng = Rng::stream(cell_seed, &format!("search/{s:?}/{k}"));
                    progress(
                        &search(s, space, table, accuracy, settings, &mut rng),
                        accuracy,
                        seconds,
                    )
                })
                .collect();
            (s, runs)
        })
        .collect();
    let longest = runs.iter().flat_map(|(_, r)| r).filter_map(|p| p.last()).map(|p| p.seconds);
    let end = longest.fold(0.0, f64::max);
    const POINTS: usize = 40;
    let grid: Vec<f64> = (1..=POINTS).map(|i| end * i as f64 / POINTS as f64).collect();
    let models = settings.models.min(table.len());
    let curves = runs
        .into_iter()
        .map(|(strategy, runs)| {
            // A search that ended early (no new rows left to propose) keeps its last best.
            let best_after = |p: &[Point], k: usize| p[k.min(p.len()) - 1].best;
            let by_models = (1..=models)
                .map(|k| {
                    Band::of(
                        &runs.iter().map(|p| space_best - best_after(p, k)).collect::<Vec<_>>(),
                    )
                })
                .collect();
            let by_seconds = grid
                .iter()
                .map(|&t| {
                    let regret = |p: &Vec<Point>| {
                        let before = p.iter().take_while(|q| q.seconds <= t).last();
                        space_best - before.map_or(0.0, |q| q.best)
                    };
                    Band::of(&runs.iter().map(regret).collect::<Vec<_>>())
                })
                .collect();
            let last = |p: &Vec<Point>| *p.last().expect("a search trains a model");
            Curve {
                strategy,
                by_models,
                by_seconds,
                best: Band::of(&runs.iter().map(|p| last(p).best).collect::<Vec<_>>()),
                seconds: Band::of(&runs.iter().map(|p| last(p).seconds).collect::<Vec<_>>()),
                found_best: runs.iter().filter(|p| last(p).best >= space_best).count(),
                found: runs.iter().map(|p| last(p).row).collect(),
            }
        })
        .collect();
    (curves, grid)
}

#[cfg(test)]
mod tests {
    use super::super::space::{Arch, CnnSpace, MlpSpace};
    use super::*;
    use randbench_core::models::Activation;

    fn space() -> Space {
        Space {
            mlp: Some(MlpSpace {
                layers: vec![0, 1, 2],
                widths: vec![8, 16, 32],
                activations: vec![Activation::Relu, Activation::Tanh],
            }),
            cnn: Some(CnnSpace {
                layers: vec![1, 2],
                filters: vec![4, 8],
                kernels: vec![3, 5],
                hidden: vec![8, 16],
            }),
        }
    }

    /// Accuracies with one clear best row: the deepest, widest MLP with tanh.
    fn scores(t: &Indexed) -> Vec<f64> {
        t.archs
            .iter()
            .map(|a| match a {
                Arch::Mlp { hidden, activation } => {
                    0.5 + 0.01 * hidden.iter().sum::<usize>() as f64 / 8.0
                        + if *activation == Activation::Tanh { 0.05 } else { 0.0 }
                }
                Arch::Cnn { filters, .. } => 0.6 + 0.01 * filters.len() as f64,
            })
            .collect()
    }

    fn settings(models: usize) -> Settings {
        Settings { models, population: 8, sample: 3, replay: 16 }
    }

    #[test]
    fn the_q_update_matches_a_hand_computed_example() {
        let space = Space {
            mlp: Some(MlpSpace {
                layers: vec![0, 1],
                widths: vec![8],
                activations: vec![Activation::Relu],
            }),
            cnn: None,
        };
        let mut agent = QAgent::new(&space);
        let path = [Choice::Mlp(Activation::Relu), Choice::Dense(8), Choice::Stop];
        agent.update(&path, 0.8);
        let s1 = State::START.after(path[0]);
        let s2 = s1.after(path[1]);
        // From the end: 0.99·0.5 + 0.01·0.8; then 0.99·0.5 + 0.01·max(Q(s2, ·)) with Stop the
        // only choice at s2; then the same with max(Q(s1, Dense 8), Q(s1, Stop) = 0.5).
        let q2 = 0.99 * 0.5 + 0.01 * 0.8;
        let q1 = 0.99 * 0.5 + 0.01 * q2;
        let q0 = 0.99 * 0.5 + 0.01 * q1;
        assert!((agent.q(s2, Choice::Stop) - 0.503).abs() < 1e-12);
        assert!((agent.q(s2, Choice::Stop) - q2).abs() < 1e-15);
        assert!((agent.q(s1, Choice::Dense(8)) - q1).abs() < 1e-15);
        assert!((agent.q(State::START, path[0]) - q0).abs() < 1e-15);
        assert_eq!(agent.q(s1, Choice::Stop), 0.5, "a choice not taken keeps its start");
        // A low reward pulls the end below the untaken Stop, and the next pass uses it.
        agent.update(&path, 0.0);
        let q2b = 0.99 * q2;
        assert!((agent.q(s2, Choice::Stop) - q2b).abs() < 1e-15);
        let q1b = 0.99 * q1 + 0.01 * q2b;
        assert!((agent.q(s1, Choice::Dense(8)) - q1b).abs() < 1e-15);
        let q0b = 0.99 * q0 + 0.01 * 0.5_f64.max(q1b);
        assert!((agent.q(State::START, path[0]) - q0b).abs() < 1e-15);
    }

    #[test]
    fn epsilon_follows_metaqnns_schedule_scaled_to_the_budget() {
        assert_eq!(epsilon(0, 2700), 1.0);
        assert_eq!(epsilon(1499, 2700), 1.0);
        assert_eq!(epsilon(1500, 2700), 0.9);
        assert_eq!(epsilon(1799, 2700), 0.7);
        assert_eq!(epsilon(1800, 2700), 0.6);
        assert_eq!(epsilon(2699, 2700), 0.1);
        // A budget of 54 is the schedule at a fiftieth: 30 models at 1.0, 2 at 0.9.
        assert_eq!(epsilon(29, 54), 1.0);
        assert_eq!(epsilon(30, 54), 0.9);
        assert_eq!(epsilon(53, 54), 0.1);
        let all: Vec<f64> = (0..100).map(|k| epsilon(k, 100)).collect();
        assert!(all.windows(2).all(|w| w[1] <= w[0]), "ε only falls");
    }

    #[test]
    fn evolution_picks_the_best_of_its_sample_and_removes_the_oldest() {
        let mut p = Population([(10, 0.3), (11, 0.9), (12, 0.5), (13, 0.7)].into());
        // A sample of the whole population finds its best.
        assert_eq!(p.tournament(4, &mut Rng::new(0)), 11);
        // A sample of one is whichever member was drawn: over many draws, every member.
        let mut rng = Rng::new(1);
        let drawn: HashSet<usize> = (0..200).map(|_| p.tournament(1, &mut rng)).collect();
        assert_eq!(drawn, HashSet::from([10, 11, 12, 13]));
        // A sample of two never returns the worst member.
        assert!((0..200).all(|_| p.tournament(2, &mut rng) != 10));
        // Ageing: the oldest leaves even though it is better than the worst.
        p.age((14, 0.1));
        assert_eq!(p.0.iter().map(|m| m.0).collect::<Vec<_>>(), [11, 12, 13, 14]);
        p.age((15, 0.2));
        assert_eq!(p.0.iter().map(|m| m.0).collect::<Vec<_>>(), [12, 13, 14, 15], "best aged out");
    }

    #[test]
    fn a_seed_gives_the_same_search_and_every_search_trains_distinct_rows_within_budget() {
        let space = space();
        let t = Indexed::new(&space);
        let acc = scores(&t);
        for s in Strategy::ALL {
            let run = |seed| search(s, &space, &t, &acc, settings(20), &mut Rng::new(seed));
            let a = run(3);
            assert_eq!(a, run(3), "{s}");
            assert_ne!(a, run(4), "{s}: another seed, another search");
            assert_eq!(a.len(), 20, "{s}");
            assert_eq!(a.iter().collect::<HashSet<_>>().len(), 20, "{s}: distinct rows");
        }
        // A budget beyond the space trains the space.
        let all = search(Strategy::Random, &space, &t, &acc, settings(1000), &mut Rng::new(0));
        assert_eq!(all.len(), t.len());
    }

    #[test]
    fn guided_searches_beat_random_search_on_a_smooth_table() {
        let mut space = space();
        space.mlp = Some(MlpSpace {
            layers: vec![0, 1, 2, 3],
            widths: vec![8, 16, 32, 64],
            activations: vec![Activation::Relu, Activation::Tanh],
        });
        let t = Indexed::new(&space);
        let acc = scores(&t);
        let seconds = vec![1.0; t.len()];
        let s = Settings { models: 20, population: 4, sample: 2, replay: 16 };
        let (curves, grid) = curves(&space, &t, &acc, &seconds, s, 30, 0);
        assert_eq!(grid.len(), 40);
        let final_regret =
            |s: Strategy| curves.iter().find(|c| c.strategy == s).unwrap().by_models[19].mean;
        // Evolution climbs the smooth table by single mutations.
        assert!(final_regret(Strategy::Evolution) < final_regret(Strategy::Random));
        for c in &curves {
            assert!(
                c.by_models.windows(2).all(|w| w[1].mean <= w[0].mean + 1e-12),
                "{}",
                c.strategy
            );
            assert_eq!(c.found.len(), 30);
            assert!((c.seconds.mean - 20.0).abs() < 1e-9, "a second per model");
        }
    }
}
