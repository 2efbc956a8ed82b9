//! Charts for the HTML report: data ([`Chart`]) drawn as inline SVG by hand, so that a report
//! needs no fonts, no scripts and no network (text is left to the browser's own fonts).

use std::fmt::Write;

/// A titled chart, ready to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    /// What the chart shows and how to read it, under it.
    pub caption: String,
    pub kind: ChartKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ChartKind {
    Lines(Lines),
    Bars(Bars),
    /// A PNG file in the run's directory, embedded where the format can (HTML).
    Picture {
        file: String,
    },
}

/// Polylines: points joined by lines, each with an optional shaded interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Lines {
    pub x_label: String,
    pub y_label: String,
    /// A logarithmic y axis (losses over orders of magnitude); non-positive values are left out.
    pub log_y: bool,
    pub series: Vec<Polyline>,
}

/// One named line of a [`Lines`] chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Polyline {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// (x, low, high): an interval drawn as a band behind the line.
    pub band: Vec<(f64, f64, f64)>,
}

impl Polyline {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, band: vec![] }
    }
}

/// Horizontal bars, one a row, each with an optional interval (whiskers).
#[derive(Clone, Debug, PartialEq)]
pub struct Bars {
    pub value_label: String,
    pub bars: Vec<Bar>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub interval: Option<(f64, f64)>,
}

/// Okabe and Ito's colours, told apart by colour-blind readers too; series beyond them
/// repeat the colours with dashes.
const COLOURS: [&str; 7] =
    ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"];
const DASHES: [&str; 3] = ["", "6 3", "2 3"];

const WIDTH: f64 = 720.0;
const FONT: f64 = 12.0;

/// Escapes text for XML and HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A tick's label: short, without trailing zeros.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// About five round ticks covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
pub fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0))
    };
    let raw = (hi - lo) / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|s| *s >= raw).unwrap_or(10.0 * power);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Maps data to pixels along one axis.
#[derive(Clone, Copy)]
struct Axis {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
    log: bool,
}

impl Axis {
    fn at(&self, v: f64) -> f64 {
        let (v, lo, hi) = if self.log {
            (v.log10(), self.lo.log10(), self.hi.log10())
        } else {
            (v, self.lo, self.hi)
        };
        self.from + (v - lo) / (hi - lo) * (self.to - self.from)
    }
}

impl Chart {
    /// The chart as SVG; `None` for a picture, which is not drawn but shown.
    pub fn svg(&self) -> Option<String> {
        match &self.kind {
            ChartKind::Lines(l) => Some(lines_svg(l)),
            ChartKind::Bars(b) => Some(bars_svg(b)),
            ChartKind::Picture { .. } => None,
        }
    }
}

fn open_svg(height: f64, label: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{}\" width=\"{WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" \
         font-size=\"{FONT}\">\n",
        escape(label)
    )
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, s: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{}</text>",
        escape(s)
    );
}

fn lines_svg(l: &Lines) -> String {
    let keep = |y: f64| y.is_finite() && (!l.log_y || y > 0.0);
    let xs: Vec<f64> = l.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    let ys: Vec<f64> = l
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1).chain(s.band.iter().flat_map(|b| [b.1, b.2])))
        .filter(|y| keep(*y))
        .collect();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let legend_rows = l.series.len().div_ceil(3);
    let plot_bottom = 280.0;
    let height = plot_bottom + 44.0 + 18.0 * legend_rows as f64;
    let mut out = open_svg(height, &format!("{} against {}", l.y_label, l.x_label));
    if xs.is_empty() || ys.is_empty() {
        text(&mut out, WIDTH / 2.0, 140.0, "middle", "no finite values to plot");
        out += "</svg>\n";
        return out;
    }
    let x_ticks = nice_ticks(min(&xs), max(&xs));
    let (left, right, top) = (70.0, WIDTH - 20.0, 12.0);
    let x = Axis {
        lo: x_ticks[0],
        hi: *x_ticks.last().expect("ticks"),
        from: left,
        to: right,
        log: false,
    };
    let (y, y_ticks) = if l.log_y {
        let (lo, hi) =
            (min(&ys).log10().floor(), max(&ys).log10().ceil().max(min(&ys).log10().floor() + 1.0));
        let ticks: Vec<f64> = (lo as i32..=hi as i32).map(|k| 10f64.powi(k)).collect();
        (
            Axis { lo: 10f64.powf(lo), hi: 10f64.powf(hi), from: plot_bottom, to: top, log: true },
            ticks,
        )
    } else {
        let ticks = nice_ticks(min(&ys), max(&ys));
        (
            Axis {
                lo: ticks[0],
                hi: *ticks.last().expect("ticks"),
                from: plot_bottom,
                to: top,
                log: false,
            },
            ticks,
        )
    };
    // Grid and ticks.
    for &t in &y_ticks {
        let py = y.at(t);
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{py:.1}\" x2=\"{right}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>"
        );
        text(&mut out, left - 6.0, py + 4.0, "end", &tick_label(t));
    }
    for &t in &x_ticks {
        let px = x.at(t);
        let _ = writeln!(out, "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{plot_bottom}\" stroke=\"#eee\"/>");
        text(&mut out, px, plot_bottom + 16.0, "middle", &tick_label(t));
    }
    let _ = writeln!(
        out,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>",
        right - left,
        plot_bottom - top
    );
    text(&mut out, (left + right) / 2.0, plot_bottom + 32.0, "middle", &l.x_label);
    let _ = writeln!(
        out,
        "<text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        (top + plot_bottom) / 2.0,
        escape(&l.y_label)
    );
    for (i, s) in l.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let dash = DASHES[(i / COLOURS.len()) % DASHES.len()];
        let band: Vec<&(f64, f64, f64)> =
            s.band.iter().filter(|b| keep(b.1) && keep(b.2)).collect();
        if !band.is_empty() {
            let upper = band.iter().map(|b| format!("{:.1},{:.1}", x.at(b.0), y.at(b.2)));
            let lower = band.iter().rev().map(|b| format!("{:.1},{:.1}", x.at(b.0), y.at(b.1)));
            let pts: Vec<String> = upper.chain(lower).collect();
            let _ = writeln!(
                out,
                "<polygon points=\"{}\" fill=\"{colour}\" fill-opacity=\"0.15\" stroke=\"none\"/>",
                pts.join(" ")
            );
        }
        // A gap (a value that cannot be drawn) breaks the line.
        let mut runs: Vec<Vec<String>> = vec![vec![]];
        for &(px, py) in &s.points {
            if keep(py) {
                runs.last_mut().expect("one run").push(format!("{:.1},{:.1}", x.at(px), y.at(py)));
            } else if !runs.last().expect("one run").is_empty() {
                runs.push(vec![]);
            }
        }
        // Few points get markers, so that a lone point shows and coinciding lines still
        // show each series' own marker size.
        let sparse = s.points.len() <= 12;
        let radius = 5.0 - 1.2 * (i % 3) as f64;
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if sparse || run.len() == 1 {
                for p in run {
                    let (cx, cy) = p.split_once(',').expect("x,y");
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"{radius:.1}\" fill=\"none\" \
                         stroke=\"{colour}\" stroke-width=\"1.5\"/>"
                    );
                }
            }
            if run.len() > 1 {
                let _ = writeln!(
                    out,
                    "<polyline class=\"series\" points=\"{}\" fill=\"none\" stroke=\"{colour}\" \
                     stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>",
                    run.join(" ")
                );
            }
        }
        let (lx, ly) = (left + (i % 3) as f64 * 216.0, plot_bottom + 52.0 + (i / 3) as f64 * 18.0);
        let _ = writeln!(
            out,
            "<line x1=\"{lx}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" \
             stroke-width=\"3\" stroke-dasharray=\"{dash}\"/>",
            ly - 4.0,
            lx + 22.0,
            ly - 4.0
        );
        text(&mut out, lx + 28.0, ly, "start", &s.name);
    }
    out += "</svg>\n";
    out
}

fn bars_svg(b: &Bars) -> String {
    let row = 22.0;
    let (left, right, top) = (300.0, WIDTH - 70.0, 8.0);
    let bottom = top + row * b.bars.len() as f64;
    let height = bottom + 44.0;
    let mut out = open_svg(height, &b.value_label);
    let hi = b
        .bars
        .iter()
        .flat_map(|bar| [bar.value].into_iter().chain(bar.interval.map(|i| i.1)))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let ticks = nice_ticks(0.0, if hi > 0.0 { hi } else { 1.0 });
    let axis =
        Axis { lo: 0.0, hi: *ticks.last().expect("ticks"), from: left, to: right, log: false };
    for &t in &ticks {
        let px = axis.at(t);
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{bottom}\" stroke=\"#eee\"/>"
        );
        text(&mut out, px, bottom + 16.0, "middle", &tick_label(t));
    }
    text(&mut out, (left + right) / 2.0, bottom + 34.0, "middle", &b.value_label);
    for (i, bar) in b.bars.iter().enumerate() {
        let y = top + i as f64 * row;
        text(&mut out, left - 8.0, y + row / 2.0 + 4.0, "end", &bar.label);
        if !bar.value.is_finite() {
            continue;
        }
        let _ = writeln!(
            out,
            "<rect class=\"bar\" x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
            y + 3.0,
            axis.at(bar.value) - left,
            row - 6.0,
            COLOURS[0]
        );
        if let Some((lo, hi)) = bar.interval.filter(|(lo, hi)| lo.is_finite() && hi.is_finite()) {
            let (x1, x2, cy) = (axis.at(lo), axis.at(hi), y + row / 2.0);
            let _ = writeln!(
                out,
                "<path d=\"M{x1:.1} {:.1}V{:.1}M{x1:.1} {cy:.1}H{x2:.1}M{x2:.1} {:.1}V{:.1}\" \
                 stroke=\"#000\" fill=\"none\"/>",
                cy - 5.0,
                cy + 5.0,
                cy - 5.0,
                cy + 5.0
            );
        }
        let end = bar.interval.map_or(bar.value, |i| i.1.max(bar.value));
        text(
            &mut out,
            axis.at(end) + 6.0,
            y + row / 2.0 + 4.0,
            "start",
            &super::fmt_value(bar.value),
        );
    }
    out += "</svg>\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 1.0), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        let t = nice_ticks(3.0, 147.0);
        assert!(t[0] <= 3.0 && *t.last().unwrap() >= 147.0 && t.len() <= 8, "{t:?}");
        // A single value still gets an axis.
        assert!(nice_ticks(5.0, 5.0).len() >= 2);
    }

    #[test]
    fn a_line_chart_draws_each_series_and_breaks_at_gaps() {
        let chart = Chart {
            title: "t".into(),
            caption: "c".into(),
            kind: ChartKind::Lines(Lines {
                x_label: "epoch".into(),
                y_label: "loss <log>".into(),
                log_y: true,
                series: vec![
                    Polyline::new(
                        "a",
                        vec![(0.0, 1.0), (1.0, 0.1), (2.0, 0.0), (3.0, 0.01), (4.0, 0.001)],
                    ),
                    Polyline::new("b & c", vec![(0.0, 2.0), (4.0, 0.5)]),
                ],
            }),
        };
        let svg = chart.svg().unwrap();
        // "a" breaks at its zero (no place on a log axis): two polylines; "b & c" one.
        assert_eq!(svg.matches("class=\"series\"").count(), 3, "{svg}");
        assert!(svg.contains("b &amp; c") && svg.contains("loss &lt;log&gt;"));
        assert!(svg.contains(">0.001<") && svg.contains(">1<"), "decade ticks: {svg}");
    }

    #[test]
    fn bars_carry_their_intervals() {
        let chart = Chart {
            title: "t".into(),
            caption: "c".into(),
            kind: ChartKind::Bars(Bars {
                value_label: "steps/s".into(),
                bars: vec![
                    Bar { label: "x".into(), value: 10.0, interval: Some((9.0, 12.0)) },
                    Bar { label: "y".into(), value: 5.0, interval: None },
                ],
            }),
        };
        let svg = chart.svg().unwrap();
        assert_eq!(svg.matches("class=\"bar\"").count(), 2);
        assert_eq!(svg.matches("<path").count(), 1);
    }
}
