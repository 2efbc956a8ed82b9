//! The HTML report in a real browser (Debian's headless Chromium): it opens, its charts are
//! there, and loading it makes no network request. And procurement over the history: two
//! machines side by side with cost and energy to each target.

mod common;

use common::{randbench, run_suite, scratch};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Families, small: three label-corruption levels (Figure 1a–1c charts), a learned optimizer
/// meta-trained for a few problems (loss-against-step charts), and a random CNN's
/// reconstructions (a PSNR chart and a picture).
const SUITE: &str = r#"
seeds: [0]
workloads:
  - randomization:
      name: tiny
      data: {source: synthetic, train: 200, test: 100, image: [1, 16, 16]}
      model:
        mlp: {hidden: [32]}
      optimizer: {kind: momentum, lr: 0.1, momentum: 0.9}
      batch: 50
      conditions: [true_labels, {corrupt_labels: 0.5}, random_labels]
      max_epochs: 60
  - learned_optimizer:
      name: tiny-l2l
      problem: {quadratic: {functions: 16, dim: 4}}
      meta: {epochs: 4, horizon: 20, unroll: 10, eval_every: 2, validation_problems: 3}
      evaluation: {problems: 4, steps: 20}
      baselines: {tuning_problems: 2}
      memory_unrolls: []
  - random_weights:
      name: tiny-rw
      data: {source: synthetic, train: 200, test: 50, image: [1, 8, 8]}
      model:
        cnn: {channels: [3, 4], kernel: 3, hidden: 8}
      images: 1
      reconstruction: {steps: 20, lr: 0.05}
      training: {epochs: 1, batch: 50, optimizer: {kind: adam, lr: 0.01}}
      probe: {epochs: 1, lr: 0.01}
"#;

/// Debian's Chromium, or `None` (then the test says so, and fails where
/// RANDBENCH_REQUIRE_BROWSER is set, as scripts/test.sh sets it).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var_os("RANDBENCH_REQUIRE_BROWSER").is_none(),
            "no Chromium on PATH: install Debian's `chromium` (scripts/test.sh does)"
        );
        eprintln!("skipped: no Chromium on PATH (Debian: apt-get install chromium)");
    }
    found
}

/// Chromium's headless run of `page`: its DOM after loading, and the URLs the page itself
/// asked the network for (from Chromium's net log; the browser's own background requests,
/// which have no page as initiator, are not the page's).
fn open_in_chromium(browser: &Path, page: &Path, scratch: &Path) -> (String, Vec<String>) {
    let log = scratch.join("netlog.json");
    let _ = std::fs::remove_file(&log);
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", scratch.join("profile").display()))
        .arg(format!("--log-net-log={}", log.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("Chromium starts");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&log).expect("a net log")).unwrap();
    let start_job = net["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let requests = net["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start_job)
        .filter(|e| e["params"]["url"].is_string() && e["params"]["initiator"] != "not an origin")
        .map(|e| e["params"]["url"].as_str().unwrap().to_string())
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), requests)
}

#[test]
fn the_html_report_opens_in_headless_chromium_with_its_charts_and_no_network() {
    let Some(browser) = chromium() else { return };
    let dir = scratch("reports", "html");
    let run = run_suite(&dir, SUITE, "run", &["--backends", "candle-cpu"], &[]);
    let page = run.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: no script, no stylesheet or image from elsewhere (pictures are data
    // URLs), and a policy that forbids fetching anything.
    assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"));
    for external in ["<script", "<link", "url(", "@import"] {
        assert!(!html.contains(external), "the page holds {external}");
    }
    assert_eq!(
        html.matches("src=\"").count(),
        html.matches("src=\"data:image/png;base64,").count()
    );

    let (dom, requests) = open_in_chromium(&browser, &page, &dir);
    assert!(requests.is_empty(), "the report asked the network for {requests:?}");
    // Parsed by the browser: the environment, then a figure with an SVG for every chart.
    assert!(dom.contains("<h2 id=\"environment\">Environment</h2>"), "{dom}");
    assert!(dom.contains("CPU energy (RAPL)") && dom.contains("GPUs"));
    let figures = dom.matches("<figure class=\"chart\">").count();
    let svgs = dom.matches("<svg").count();
    let titles = [
        "tiny on candle-cpu: training accuracy",
        "tiny: time to fit against label corruption",
        "tiny: test error against label corruption",
        "tiny-l2l on candle-cpu: base over 20 steps",
        "tiny-l2l on candle-cpu: meta-training",
        "tiny steps_per_second",
        "tiny-l2l unrolls_per_second",
        "tiny-rw: reconstruction PSNR against depth",
        "tiny-rw steps_per_second",
        "tiny-rw on candle-cpu: tiny-rw-seed0-candle-cpu-image0.png",
        "peak memory",
    ];
    for t in titles {
        assert!(dom.contains(&format!("<h3>{t}</h3>")), "no chart {t:?}");
    }
    assert_eq!(figures, titles.len(), "{dom}");
    // Every chart is drawn, but the picture, which is an image.
    assert_eq!(svgs, figures - 1);
    assert_eq!(dom.matches("<img class=\"picture\"").count(), 1);
    // Drawn lines: three conditions' training accuracy, one engine's line in each of the two
    // corruption charts, then the learned optimizer's curves.
    assert!(dom.matches("class=\"series\"").count() >= 5);
    // And it renders: a screenshot of the page is a real image.
    let shot = dir.join("report.png");
    let status = Command::new(&browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1100,2400"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(status.status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "{} bytes", png.len());

    // The check above can see a request: a page that asks for one is caught.
    let leaky = dir.join("leaky.html");
    std::fs::write(&leaky, "<html><body><img src=\"http://example.invalid/x.png\"></body></html>")
        .unwrap();
    let (_, requests) = open_in_chromium(&browser, &leaky, &dir);
    assert_eq!(requests, ["http://example.invalid/x.png"]);
}

#[test]
fn procurement_puts_machines_side_by_side_with_cost_and_energy_to_each_target() {
    let dir = scratch("reports", "procure");
    let db = dir.join("history.sqlite");
    let db = db.to_str().unwrap();
    // Two machines: this one with one thread and with two, named as a user names instances.
    for (name, threads) in [("small", "1"), ("large", "2")] {
        let run = run_suite(
            &dir,
            SUITE,
            name,
            &["--backends", "candle-cpu", "--machine", name],
            &[("RANDBENCH_THREADS", threads)],
        );
        let o = randbench(&["ingest", run.to_str().unwrap(), "--db", db], &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let prices = dir.join("prices.yaml");
    std::fs::write(
        &prices,
        "currency: EUR\nmachines:\n  small: {price_per_hour: 0.5, watts: 60}\n",
    )
    .unwrap();
    let o = randbench(
        &["procure", "--suite", "tiny", "--db", db, "--prices", prices.to_str().unwrap()],
        &[],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The machines, each with the threads it ran with; the priced one with its price.
    assert!(text.contains("0.5 EUR/h") && text.contains("60 W"), "{text}");
    // A target per condition and the learned optimizer's; cost = time × price, energy =
    // time × watts, for the priced machine; the other says it has no price, not zero.
    for target in [
        "tiny true_labels: seconds_to_fit",
        "tiny random_labels: seconds_to_fit",
        "tiny-l2l meta-training: seconds_to_beat_adam",
    ] {
        assert!(text.contains(target), "no table for {target}: {text}");
    }
    let row = |machine: &str, target: &str| -> Vec<String> {
        let table = text.split(target).nth(1).expect("the target's table");
        let line = table.lines().find(|l| l.contains(&format!(" {machine} "))).expect("a row");
        line.split('┆')
            .map(|c| c.trim_matches(|ch: char| ch == '│' || ch.is_whitespace()).to_string())
            .collect()
    };
    let small = row("small", "tiny true_labels: seconds_to_fit");
    let seconds: f64 = small[2].trim_end_matches(" s").parse().unwrap();
    let cost: f64 = small[3].trim_end_matches(" EUR").parse().unwrap();
    let wh: f64 = small[4].trim_end_matches(" Wh").parse().unwrap();
    // Printed to three or four significant digits.
    assert!((cost / (seconds / 3600.0 * 0.5) - 1.0).abs() < 1e-2, "{small:?}");
    assert!((wh / (seconds / 3600.0 * 60.0) - 1.0).abs() < 1e-2, "{small:?}");
    let large = row("large", "tiny true_labels: seconds_to_fit");
    assert_eq!(large[3], "no price", "{large:?}");
    assert!(
        text.contains("large: no price in the price file; add `large: {price_per_hour:"),
        "{text}"
    );

    // A price that is no price is an input error naming the place and the fix.
    std::fs::write(&prices, "machines:\n  small: {price_per_hour: 0}\n").unwrap();
    let o = randbench(
        &["procure", "--suite", "tiny", "--db", db, "--prices", prices.to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("machines.small.price_per_hour: 0 is not a price"), "{err}");
    // No run of the suite: say how to make one.
    let o = randbench(&["procure", "--suite", "absent", "--db", db], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("randbench run absent --machine NAME"));
}
