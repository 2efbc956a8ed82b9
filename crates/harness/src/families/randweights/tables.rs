//! The random-weights tables and charts: reconstruction error against depth, random against
//! trained weights (a row per weights, depth and backend); the classifiers' test accuracy;
//! PSNR against depth; the pictures.

use super::{Family, Metrics, Weights};
use crate::families::Entry;
use crate::report::chart::{ChartKind, Lines, Polyline};
use crate::report::{first_appearance, fmt_percent, fmt_value, Chart, Column, Table};
use randbench_schema::CellResult;

type Row<'a> = Entry<'a, Family>;

/// The first seed's first round of each backend.
fn firsts<'a>(rs: &'a [Row<'a>]) -> Vec<&'a Row<'a>> {
    let seed = rs[0].result.cell.seed;
    first_appearance(rs.iter().map(|r| r.result.cell.backend))
        .into_iter()
        .filter_map(|b| {
            rs.iter().find(|r| {
                r.result.cell.backend == b && r.result.cell.seed == seed && r.result.round == 0
            })
        })
        .collect()
}

fn loss(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3e}"))
}

pub fn all(rs: &[Row]) -> Vec<Table> {
    let firsts = firsts(rs);
    let Some(first) = firsts.first() else { return vec![] };
    let m = first.metrics;
    let workload = &first.result.cell.workload;
    let mut rows = Vec::new();
    let keys = first_appearance(
        firsts.iter().flat_map(|r| r.metrics.reconstructions.iter().map(|x| (x.weights, x.depth))),
    );
    for (weights, depth) in keys {
        for r in &firsts {
            let Some(x) =
                r.metrics.reconstructions.iter().find(|x| x.weights == weights && x.depth == depth)
            else {
                continue;
            };
            rows.push(vec![
                weights.to_string(),
                depth.to_string(),
                r.result.cell.backend.to_string(),
                loss(x.start_loss),
                // The end loss is absent where it was not finite: the reconstruction diverged.
                x.end_loss.map_or_else(|| "diverged".to_string(), |l| loss(Some(l))),
                fmt_value(x.mse),
                format!("{:.1}", x.psnr),
                x.seconds.to_string(),
            ]);
        }
    }
    let reconstructions = Table {
        title: format!("{workload} / reconstructions"),
        caption: format!(
            "{} test images rebuilt from the feature maps after each block of {}, {} Adam steps \
             on the image from uniform noise (seed {})",
            m.images, m.model, m.steps, first.result.cell.seed
        ),
        header: vec![
            Column::plain("weights"),
            Column::plain("depth"),
            Column::plain("backend"),
            Column::figure("feature loss start"),
            Column::figure("end"),
            Column::figure("pixel MSE"),
            Column::figure("PSNR dB"),
            Column::figure("time"),
        ],
        rows,
        notes: vec!["feature loss: mean squared difference of the feature maps; PSNR against the \
             originals, peak: their range; time: all steps of one reconstruction (every image \
             at once)"
            .into()],
    };
    let classifiers = Table {
        title: format!("{workload} / classifiers"),
        caption: format!("test accuracy on {} test examples", m.test_examples),
        header: vec![
            Column::plain("backend"),
            Column::figure("untrained"),
            Column::figure("trained end to end"),
            Column::figure("linear on random features"),
            Column::figure("features"),
        ],
        rows: firsts
            .iter()
            .map(|r| {
                let m: &Metrics = r.metrics;
                vec![
                    r.result.cell.backend.to_string(),
                    fmt_percent(m.untrained_test_accuracy),
                    fmt_percent(m.trained_test_accuracy),
                    fmt_percent(m.probe_test_accuracy),
                    m.probe_features.to_string(),
                ]
            })
            .collect(),
        notes: vec![
            "linear on random features: a softmax classifier trained (Adam) on the random \
             network's last feature maps, the network left as initialized"
                .into(),
        ],
    };
    vec![reconstructions, classifiers]
}

pub fn charts(rs: &[Row]) -> Vec<Chart> {
    let firsts = firsts(rs);
    let Some(first) = firsts.first() else { return vec![] };
    let workload = &first.result.cell.workload;
    let series = [Weights::Random, Weights::Trained]
        .into_iter()
        .flat_map(|weights| {
            firsts.iter().map(move |r| {
                Polyline::new(
                    format!("{weights} ({})", r.result.cell.backend),
                    r.metrics
                        .reconstructions
                        .iter()
                        .filter(|x| x.weights == weights)
                        .map(|x| (x.depth as f64, x.psnr))
                        .collect(),
                )
            })
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    let mut out = vec![Chart {
        title: format!("{workload}: reconstruction PSNR against depth"),
        caption: "higher is a closer reconstruction; He et al. find random weights keep more of \
                  the image than trained ones, and both lose detail with depth"
            .into(),
        kind: ChartKind::Lines(Lines {
            x_label: "blocks before the feature maps".into(),
            y_label: "PSNR (dB)".into(),
            log_y: false,
            series,
        }),
    }];
    out.extend(first.metrics.pictures.iter().map(|file| {
        Chart {
            title: format!("{workload} on {}: {file}", first.result.cell.backend),
            caption: "left: the original; then its reconstruction from the feature maps after \
                  blocks 1, 2, …; top row random weights, bottom row trained"
                .into(),
            kind: ChartKind::Picture { file: file.clone() },
        }
    }));
    out
}

pub fn headline(r: &CellResult, m: &Metrics) -> String {
    let psnr = |w: Weights| {
        m.reconstructions
            .iter()
            .filter(|x| x.weights == w)
            .map(|x| format!("{:.1}", x.psnr))
            .collect::<Vec<_>>()
            .join("/")
    };
    match m.probe_test_accuracy {
        Some(p) => format!(
            "PSNR by depth random {} dB, trained {} dB; linear on random features {:.1}%",
            psnr(Weights::Random),
            psnr(Weights::Trained),
            100.0 * p
        ),
        None => format!("{} ({} reconstructions)", r.status.label(), m.reconstructions.len()),
    }
}
