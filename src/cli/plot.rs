//! `migsim plot`: figures from a results directory, as SVG and PNG.
//!
//! Text is drawn with the DejaVu Sans file shipped in `assets/fonts/` (plotters' `ab_glyph`
//! backend), so plotting needs no system fonts or fontconfig.
//!
//! Series are keyed by the `param_policy` column when a sweep varied the policy (so variants of
//! one policy stay apart), else by `policy`; facets likewise use `param_workload` / `workload`.
//! Replicates are summarised by their median.

use super::table::Table;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Every plot kind, in the order `--kind all` draws them.
pub const KINDS: &[&str] = &[
    "downtime-vs-rate",
    "time-vs-bandwidth",
    "downtime-cdf",
    "timeline",
    "predicted-vs-measured",
];

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Results directory (with runs.csv and, for timelines, rounds.csv).
    pub dir: PathBuf,
    /// downtime-vs-rate, time-vs-bandwidth, downtime-cdf, timeline, predicted-vs-measured, or
    /// all (every kind the data supports).
    #[arg(long, default_value = "all")]
    pub kind: String,
    /// Output file; `.svg` or `.png` picks the format. Default: `<dir>/plots/<kind>.svg` and
    /// `.png`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run to draw with `--kind timeline` (default: the longest converged pre-copy run of the
    /// first policy with several rounds).
    #[arg(long)]
    pub run_id: Option<usize>,
}

pub fn run(a: PlotArgs) -> Result<ExitCode> {
    let kinds: Vec<&str> = if a.kind == "all" {
        KINDS.to_vec()
    } else if KINDS.contains(&a.kind.as_str()) {
        vec![a.kind.as_str()]
    } else {
        bail!(
            "--kind: unknown plot kind `{}` (known: {}, all)",
            a.kind,
            KINDS.join(", ")
        );
    };
    if let Some(out) = &a.out {
        if kinds.len() != 1 {
            bail!("--out needs a single --kind");
        }
        let data = Data::load(&a.dir)?;
        render(&data, kinds[0], out, a.run_id)?;
        println!("wrote {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let explicit = a.kind != "all";
    let data = Data::load(&a.dir)?;
    for k in kinds {
        match render_default(&data, &a.dir, k, a.run_id) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
            }
            Err(e) if !explicit => eprintln!("skipped {k}: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Draw `kinds` into `<dir>/plots/` as SVG and PNG; returns the files written.
pub fn render_kinds(dir: &Path, kinds: &[&str]) -> Result<Vec<PathBuf>> {
    let data = Data::load(dir)?;
    let mut out = Vec::new();
    for k in kinds {
        out.extend(render_default(&data, dir, k, None)?);
    }
    Ok(out)
}

fn render_default(
    data: &Data,
    dir: &Path,
    kind: &str,
    run_id: Option<usize>,
) -> Result<Vec<PathBuf>> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots)
        .with_context(|| format!("failed to create {}", plots.display()))?;
    let mut files = Vec::new();
    for ext in ["svg", "png"] {
        let p = plots.join(format!("{kind}.{ext}"));
        render(data, kind, &p, run_id)?;
        files.push(p);
    }
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// Data

struct Data {
    runs: Table,
    rounds: Option<Table>,
}

impl Data {
    fn load(dir: &Path) -> Result<Data> {
        let runs = Table::read(&dir.join("runs.csv"))?;
        let rp = dir.join("rounds.csv");
        let rounds = if rp.exists() {
            Some(Table::read(&rp)?)
        } else {
            None
        };
        Ok(Data { runs, rounds })
    }

    fn num(&self, row: usize, col: &str) -> Option<f64> {
        let c = self.runs.col(col)?;
        self.runs.rows[row][c]
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    }

    fn text(&self, row: usize, col: &str) -> String {
        self.runs
            .col(col)
            .map(|c| self.runs.rows[row][c].clone())
            .unwrap_or_default()
    }

    /// `param_<name>` when the sweep varied it, else the plain column.
    fn key(&self, row: usize, name: &str) -> String {
        let p = format!("param_{name}");
        if self.runs.col(&p).is_some() {
            self.text(row, &p)
        } else {
            self.text(row, name)
        }
    }

    fn rows(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.runs.rows.len())
            .filter(|&r| !matches!(self.text(r, "status").as_str(), "invalid" | "error"))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_bps(bps: f64) -> String {
    if bps >= 1e9 {
        format!(
            "{} Gbit/s",
            super::sweep::render_value(&toml::Value::Float(bps / 1e9))
        )
    } else {
        format!(
            "{} Mbit/s",
            super::sweep::render_value(&toml::Value::Float(bps / 1e6))
        )
    }
}

/// Tick labels for log axes: plain numbers with SI suffixes.
fn si(v: f64) -> String {
    let a = v.abs();
    let (x, s) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let t = if x.abs() >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    let t = if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    };
    format!("{t}{s}")
}

/// Tableau 10: distinguishable, colour-blind friendlier than the primaries.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// How series `i` is drawn: colours cycle through the palette; each further cycle changes the
/// marker shape and dashes the line, so up to 40 series stay distinguishable.
fn cycle(i: usize) -> usize {
    (i / PALETTE.len()) % 4
}

fn plot_series<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    i: usize,
    pts: &[(f64, f64)],
    markers: bool,
) -> Result<()> {
    let c = color(i);
    if cycle(i) == 0 {
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(pe)?;
    } else {
        chart
            .draw_series(DashedLineSeries::new(
                pts.iter().copied(),
                10,
                5,
                c.stroke_width(2),
            ))
            .map_err(pe)?;
    }
    if !markers {
        return Ok(());
    }
    let s = c.filled();
    match cycle(i) {
        0 => chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, s)))
            .map(|_| ()),
        1 => chart
            .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 7, s)))
            .map(|_| ()),
        2 => chart
            .draw_series(pts.iter().map(|&p| Cross::new(p, 6, c.stroke_width(3))))
            .map(|_| ()),
        _ => chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.stroke_width(2))))
            .map(|_| ()),
    }
    .map_err(pe)
}

/// A legend drawn in its own strip (right of the panels), shared by every panel.
fn legend_strip<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    heading: &str,
    names: &[String],
) -> Result<()> {
    let font = ("sans-serif", 17).into_font().color(&BLACK);
    area.draw_text(
        heading,
        &("sans-serif", 19).into_font().color(&BLACK),
        (10, 40),
    )
    .map_err(pe)?;
    for (i, n) in names.iter().enumerate() {
        let y = 78 + 28 * i as i32;
        let c = color(i);
        let line = if cycle(i) == 0 {
            vec![(10, y), (50, y)]
        } else {
            vec![(10, y), (22, y)]
        };
        area.draw(&PathElement::new(line, c.stroke_width(3)))
            .map_err(pe)?;
        if cycle(i) != 0 {
            area.draw(&PathElement::new(vec![(38, y), (50, y)], c.stroke_width(3)))
                .map_err(pe)?;
        }
        let s = c.filled();
        match cycle(i) {
            0 => area.draw(&Circle::new((30, y), 5, s)),
            1 => area.draw(&TriangleMarker::new((30, y), 7, s)),
            2 => area.draw(&Cross::new((30, y), 6, c.stroke_width(3))),
            _ => area.draw(&Circle::new((30, y), 5, c.stroke_width(2))),
        }
        .map_err(pe)?;
        area.draw_text(n, &font, (60, y - 9)).map_err(pe)?;
    }
    Ok(())
}

/// Split off the legend strip on the right.
fn with_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    heading: &str,
    names: &[String],
) -> Result<DrawingArea<DB, Shift>> {
    let w = area.dim_in_pixel().0;
    let (plots, legend) = area.split_horizontally(w.saturating_sub(LEGEND_W));
    legend_strip(&legend, heading, names)?;
    Ok(plots)
}

/// Width of the legend strip (pixels).
const LEGEND_W: u32 = 300;

/// Ordered distinct values (first-seen order), used for stable series colours.
fn distinct(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for s in it {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

fn log_range(vals: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in vals.filter(|v| *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return None;
    }
    Some(lo / 1.6..hi * 1.6)
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        // The bytes are a valid TrueType file shipped in the repository; a failure here would
        // surface as missing text, never as a crash.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn pe<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// Something that draws itself on any plotters backend.
trait Painter {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Draw `p` into `out` (`.svg` or `.png`, `size` pixels) through a temporary file that is
/// renamed into place, so a failed plot leaves nothing behind. `what` names the output in the
/// error for any other extension.
fn write_plot(out: &Path, size: (u32, u32), what: &str, p: &impl Painter) -> Result<()> {
    register_font();
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{name}.tmp{}.{ext}", std::process::id()));
    let res = match ext.as_str() {
        "svg" => {
            let root = SVGBackend::new(&tmp, size).into_drawing_area();
            p.paint(&root).and_then(|_| root.present().map_err(pe))
        }
        "png" => {
            let root = BitMapBackend::new(&tmp, size).into_drawing_area();
            p.paint(&root).and_then(|_| root.present().map_err(pe))
        }
        _ => bail!("{what}use a .svg or .png file name, got {}", out.display()),
    };
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("failed to move {} into place", out.display()))?;
    Ok(())
}

fn render(data: &Data, kind: &str, out: &Path, run_id: Option<usize>) -> Result<()> {
    struct Kind<'a>(&'a Data, &'a str, Option<usize>);
    impl Painter for Kind<'_> {
        fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
            draw(self.0, self.1, root, self.2)
        }
    }
    write_plot(
        out,
        size_of(data, kind),
        "--out: ",
        &Kind(data, kind, run_id),
    )
}

fn grid_of(n: usize) -> (usize, usize) {
    match n {
        0 | 1 => (1, 1),
        2 => (1, 2),
        3 => (1, 3),
        4 => (2, 2),
        5 | 6 => (2, 3),
        n => (n.div_ceil(4), 4),
    }
}

fn size_of(data: &Data, kind: &str) -> (u32, u32) {
    match kind {
        "downtime-vs-rate" => {
            let n = distinct(data.rows().map(|r| data.text(r, "link_bps"))).len();
            let (r, c) = grid_of(n);
            (700 * c as u32 + LEGEND_W, 560 * r as u32 + 60)
        }
        "time-vs-bandwidth" => {
            let n = distinct(data.rows().map(|r| data.key(r, "workload"))).len();
            let (r, c) = grid_of(n);
            (560 * c as u32 + LEGEND_W, 460 * r as u32 + 60)
        }
        "timeline" => (1200, 1100),
        "predicted-vs-measured" => (1400, 700),
        _ => (1000 + LEGEND_W, 700),
    }
}

fn draw<DB: DrawingBackend>(
    data: &Data,
    kind: &str,
    root: &DrawingArea<DB, Shift>,
    run_id: Option<usize>,
) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    match kind {
        "downtime-vs-rate" => downtime_vs_rate(data, root),
        "time-vs-bandwidth" => time_vs_bandwidth(data, root),
        "downtime-cdf" => downtime_cdf(data, root),
        "timeline" => timeline(data, root, run_id),
        "predicted-vs-measured" => predicted_vs_measured(data, root),
        other => bail!("unknown plot kind `{other}`"),
    }
}

/// A title strip on top; returns the area below it.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    note: &str,
) -> Result<DrawingArea<DB, Shift>> {
    let (top, rest) = root.split_vertically(60);
    top.draw_text(
        title,
        &("sans-serif", 26).into_font().color(&BLACK),
        (20, 6),
    )
    .map_err(pe)?;
    top.draw_text(
        note,
        &("sans-serif", 16).into_font().color(&RGBColor(90, 90, 90)),
        (20, 36),
    )
    .map_err(pe)?;
    Ok(rest)
}

/// Series: name -> (x, y) points sorted by x.
type Series = BTreeMap<String, Vec<(f64, f64)>>;

#[allow(clippy::too_many_arguments)]
fn loglog_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    series: &Series,
    order: &[String],
    xr: std::ops::Range<f64>,
    yr: std::ops::Range<f64>,
    xdesc: &str,
    ydesc: &str,
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(xr.log_scale(), yr.log_scale())
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_desc(xdesc)
        .y_desc(ydesc)
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| si(*v))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(pe)?;
    for (i, name) in order.iter().enumerate() {
        if let Some(pts) = series.get(name) {
            plot_series(&mut chart, i, pts, true)?;
        }
    }
    Ok(())
}

fn downtime_vs_rate<DB: DrawingBackend>(data: &Data, root: &DrawingArea<DB, Shift>) -> Result<()> {
    data.runs
        .need("write_rate_pps")
        .context("downtime-vs-rate needs a sweep's runs.csv")?;
    let policies = distinct(data.rows().map(|r| data.key(r, "policy")));
    let mut links: Vec<f64> = distinct(data.rows().map(|r| data.text(r, "link_bps")))
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    links.sort_by(f64::total_cmp);
    // (link, policy, rate) -> downtimes (ms)
    let mut acc: BTreeMap<(String, String), BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    let mut stuck = 0usize;
    for r in data.rows() {
        let (Some(rate), Some(link)) = (data.num(r, "write_rate_pps"), data.num(r, "link_bps"))
        else {
            continue;
        };
        let Some(dt) = data.num(r, "downtime_ns") else {
            stuck += 1;
            continue;
        };
        acc.entry((fmt_bps(link), data.key(r, "policy")))
            .or_default()
            .entry(rate.to_bits())
            .or_default()
            .push(dt / 1e6);
    }
    let ys: Vec<f64> = acc
        .values()
        .flat_map(|m| m.values().flatten().copied())
        .collect();
    let yr = log_range(ys.into_iter()).context("no run switched over: nothing to plot")?;
    let xr = log_range(data.rows().filter_map(|r| data.num(r, "write_rate_pps")))
        .context("no write rates")?;
    let area = titled(
        root,
        "Downtime vs guest write rate, per policy",
        &format!(
            "median over replicates; {stuck} runs that never switched over (timeout/cancel) are not shown"
        ),
    )?;
    let area = with_legend(&area, "policy", &policies)?;
    let (rows, cols) = grid_of(links.len());
    let panels = area.split_evenly((rows, cols));
    for (li, link) in links.iter().enumerate() {
        let link = fmt_bps(*link);
        let mut series = Series::new();
        for p in &policies {
            if let Some(m) = acc.get_mut(&(link.clone(), p.clone())) {
                let mut pts: Vec<(f64, f64)> = m
                    .iter_mut()
                    .map(|(x, v)| (f64::from_bits(*x), median(v)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                series.insert(p.clone(), pts);
            }
        }
        loglog_panel(
            &panels[li],
            &format!("link {link}"),
            &series,
            &policies,
            xr.clone(),
            yr.clone(),
            "guest write rate (pages/s)",
            "downtime (ms)",
        )?;
    }
    Ok(())
}

fn time_vs_bandwidth<DB: DrawingBackend>(data: &Data, root: &DrawingArea<DB, Shift>) -> Result<()> {
    let policies = distinct(data.rows().map(|r| data.key(r, "policy")));
    let workloads = distinct(data.rows().map(|r| data.key(r, "workload")));
    let mut acc: BTreeMap<(String, String), BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    let mut stuck = 0usize;
    for r in data.rows() {
        let (Some(link), Some(t)) = (data.num(r, "link_bps"), data.num(r, "total_time_ns")) else {
            continue;
        };
        if data.num(r, "downtime_ns").is_none() {
            stuck += 1;
            continue;
        }
        acc.entry((data.key(r, "workload"), data.key(r, "policy")))
            .or_default()
            .entry((link / 1e9).to_bits())
            .or_default()
            .push(t / 1e9);
    }
    let yr = log_range(acc.values().flat_map(|m| m.values().flatten().copied()))
        .context("no run switched over: nothing to plot")?;
    let xr = log_range(
        data.rows()
            .filter_map(|r| data.num(r, "link_bps").map(|b| b / 1e9)),
    )
    .context("no link rates")?;
    let area = titled(
        root,
        "Total migration time vs link bandwidth, per workload",
        &format!("median over replicates; {stuck} runs that never switched over are not shown"),
    )?;
    let area = with_legend(&area, "policy", &policies)?;
    let (rows, cols) = grid_of(workloads.len());
    let panels = area.split_evenly((rows, cols));
    for (wi, w) in workloads.iter().enumerate() {
        let mut series = Series::new();
        for p in &policies {
            if let Some(m) = acc.get_mut(&(w.clone(), p.clone())) {
                let mut pts: Vec<(f64, f64)> = m
                    .iter_mut()
                    .map(|(x, v)| (f64::from_bits(*x), median(v)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                series.insert(p.clone(), pts);
            }
        }
        loglog_panel(
            &panels[wi],
            w,
            &series,
            &policies,
            xr.clone(),
            yr.clone(),
            "link bandwidth (Gbit/s)",
            "total time (s)",
        )?;
    }
    Ok(())
}

fn downtime_cdf<DB: DrawingBackend>(data: &Data, root: &DrawingArea<DB, Shift>) -> Result<()> {
    let policies = distinct(data.rows().map(|r| data.key(r, "policy")));
    let mut per: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
    for r in data.rows() {
        let e = per.entry(data.key(r, "policy")).or_default();
        e.1 += 1;
        if let Some(dt) = data.num(r, "downtime_ns") {
            e.0.push(dt / 1e6);
        }
    }
    let xr = log_range(per.values().flat_map(|v| v.0.iter().copied()))
        .context("no run switched over: nothing to plot")?;
    let area = titled(
        root,
        "CDF of downtime over the sweep, per policy",
        "fraction of all runs of a policy with downtime ≤ x; runs that never switched over keep the curve below 1",
    )?;
    let names: Vec<String> = policies
        .iter()
        .map(|p| {
            let (v, n) = per.get(p).map_or((0, 0), |e| (e.0.len(), e.1));
            format!("{p} ({v}/{n})")
        })
        .collect();
    let area = with_legend(&area, "policy (switched over / runs)", &names)?;
    let mut chart = ChartBuilder::on(&area)
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(xr.clone().log_scale(), 0.0..1.02)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc("downtime (ms)")
        .y_desc("fraction of runs")
        .x_label_formatter(&|v| si(*v))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(pe)?;
    for (i, p) in policies.iter().enumerate() {
        let Some((v, n)) = per.get_mut(p) else {
            continue;
        };
        v.sort_by(f64::total_cmp);
        let n = (*n).max(1) as f64;
        let mut pts = vec![(xr.start, 0.0)];
        for (k, x) in v.iter().enumerate() {
            pts.push((*x, k as f64 / n));
            pts.push((*x, (k + 1) as f64 / n));
        }
        pts.push((xr.end, v.len() as f64 / n));
        plot_series(&mut chart, i, &pts, false)?;
    }
    Ok(())
}

/// The default run of a timeline: the longest converged run (of at least three rounds) of
/// `qemu-auto-converge`, else `qemu`, else the first policy in file order with such a run.
fn default_timeline_run(data: &Data) -> Option<usize> {
    let rank = |p: &str| match p {
        "qemu-auto-converge" => 0,
        "qemu" => 1,
        _ => 2,
    };
    let mut best: Option<(String, usize, f64)> = None;
    for r in data.rows() {
        let rounds = data.num(r, "rounds").unwrap_or(0.0);
        if data.text(r, "status") != "converged" || rounds < 3.0 {
            continue;
        }
        let p = data.text(r, "policy");
        match &best {
            None => best = Some((p, r, rounds)),
            // QEMU's rules give the most telling timelines (like guestperf's plots); prefer
            // auto-converge (it throttles), then plain qemu.
            Some((bp, _, _)) if rank(&p) < rank(bp) => best = Some((p, r, rounds)),
            Some((bp, _, br)) if *bp == p && rounds > *br => best = Some((p, r, rounds)),
            _ => {}
        }
    }
    best.map(|b| b.1)
}

fn timeline<DB: DrawingBackend>(
    data: &Data,
    root: &DrawingArea<DB, Shift>,
    run_id: Option<usize>,
) -> Result<()> {
    let rounds = data.rounds.as_ref().context(
        "rounds.csv is missing (a sweep run with `--no-rounds` or `[sweep] rounds = false` writes none); the timeline needs it",
    )?;
    let row = match run_id {
        Some(id) => data
            .rows()
            .find(|&r| data.text(r, "run_id") == id.to_string())
            .with_context(|| format!("--run-id {id}: no such run in runs.csv"))?,
        None => {
            default_timeline_run(data).context("no converged run with ≥ 3 rounds; pass --run-id")?
        }
    };
    let id = data.text(row, "run_id");
    let col = |n: &str| rounds.need(n);
    let (c_id, c_start, c_dur, c_bytes, c_dirty, c_thr, c_est) = (
        col("run_id")?,
        col("start_ns")?,
        col("duration_ns")?,
        col("bytes_sent")?,
        col("pages_dirtied")?,
        col("throttle_pct")?,
        col("est_downtime_ns")?,
    );
    let f = |r: &Vec<String>, c: usize| r[c].parse::<f64>().unwrap_or(0.0);
    let rs: Vec<&Vec<String>> = rounds.rows.iter().filter(|r| r[c_id] == id).collect();
    if rs.is_empty() {
        bail!("run {id} has no rounds in rounds.csv");
    }
    let end_s = rs
        .iter()
        .map(|r| (f(r, c_start) + f(r, c_dur)) / 1e9)
        .fold(0.0, f64::max)
        .max(data.num(row, "total_time_ns").unwrap_or(0.0) / 1e9);
    let downtime_ms = data.num(row, "downtime_ns").map(|d| d / 1e6);
    let title = format!(
        "Run {id}: {} / {} / {} / {}",
        data.key(row, "policy"),
        data.key(row, "workload"),
        fmt_bps(data.num(row, "link_bps").unwrap_or(0.0)),
        data.text(row, "status")
    );
    let note = format!(
        "{} rounds, total {:.2} s, downtime {}; bars span each round",
        rs.len(),
        data.num(row, "total_time_ns").unwrap_or(0.0) / 1e9,
        downtime_ms.map_or("none".to_string(), |d| format!("{d:.1} ms"))
    );
    let area = titled(root, &title, &note)?;
    let panels = area.split_evenly((4, 1));
    type Getter<'a> = Box<dyn Fn(&Vec<String>) -> f64 + 'a>;
    let specs: Vec<(&str, Getter, RGBColor)> = vec![
        (
            "sent per round (MiB)",
            Box::new(|r| f(r, c_bytes) / 1048576.0),
            color(0),
        ),
        (
            "dirty set at round end (pages)",
            Box::new(|r| f(r, c_dirty)),
            color(3),
        ),
        ("vCPU throttle (%)", Box::new(|r| f(r, c_thr)), color(2)),
        (
            "policy's downtime estimate (ms)",
            Box::new(|r| f(r, c_est) / 1e6),
            color(4),
        ),
    ];
    for (i, (label, get, c)) in specs.iter().enumerate() {
        let ymax = rs.iter().map(|r| get(r)).fold(0.0, f64::max);
        let ymax = if i == 2 {
            100.0
        } else if i == 3 {
            ymax.max(downtime_ms.unwrap_or(0.0)) * 1.1 + 1e-9
        } else {
            ymax * 1.1 + 1e-9
        };
        let mut chart = ChartBuilder::on(&panels[i])
            .margin(10)
            .x_label_area_size(if i == 3 { 48 } else { 28 })
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..end_s * 1.02, 0.0..ymax)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc(if i == 3 {
                "time since migration start (s)"
            } else {
                ""
            })
            .y_desc(*label)
            .y_label_formatter(&|v| si(*v))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(pe)?;
        let c = *c;
        chart
            .draw_series(rs.iter().map(|r| {
                let x0 = f(r, c_start) / 1e9;
                let x1 = x0 + f(r, c_dur) / 1e9;
                Rectangle::new([(x0, 0.0), (x1, get(r))], c.mix(0.55).filled())
            }))
            .map_err(pe)?;
        chart
            .draw_series(rs.iter().map(|r| {
                let x0 = f(r, c_start) / 1e9;
                let x1 = x0 + f(r, c_dur) / 1e9;
                PathElement::new(vec![(x0, get(r)), (x1, get(r))], c.stroke_width(2))
            }))
            .map_err(pe)?;
        if i == 3 {
            if let Some(d) = downtime_ms {
                let red = RGBColor(214, 39, 40);
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(0.0, d), (end_s * 1.02, d)],
                        red.stroke_width(2),
                    )))
                    .map_err(pe)?
                    .label(format!("actual downtime {d:.1} ms"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 24, y)], red.stroke_width(3))
                    });
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(160, 160, 160))
                    .label_font(("sans-serif", 15))
                    .draw()
                    .map_err(pe)?;
            }
        }
    }
    Ok(())
}

/// Columns that identify "the same experiment" across backends when point ids are absent.
const PAIR_KEYS: &[&str] = &["scenario", "policy", "workload", "mem_bytes", "replicate"];

fn predicted_vs_measured<DB: DrawingBackend>(
    data: &Data,
    root: &DrawingArea<DB, Shift>,
) -> Result<()> {
    let params: Vec<String> = data.runs.param_columns().into_iter().map(|p| p.1).collect();
    let key = |r: usize| -> String {
        let pid = data.text(r, "point_id");
        if !pid.is_empty() {
            return pid;
        }
        let mut k: Vec<String> = PAIR_KEYS.iter().map(|c| data.text(r, c)).collect();
        k.extend(params.iter().map(|p| data.text(r, &format!("param_{p}"))));
        k.join("\u{1f}")
    };
    let mut sim: BTreeMap<String, usize> = BTreeMap::new();
    let mut kvm: Vec<usize> = Vec::new();
    for r in data.rows() {
        match data.text(r, "backend").as_str() {
            "sim" => {
                sim.entry(key(r)).or_insert(r);
            }
            "kvm" => kvm.push(r),
            _ => {}
        }
    }
    if kvm.is_empty() {
        bail!("no rows with backend = kvm in runs.csv");
    }
    let pairs: Vec<(usize, usize)> = kvm
        .iter()
        .filter_map(|&k| sim.get(&key(k)).map(|&s| (s, k)))
        .collect();
    if pairs.is_empty() {
        bail!("no kvm row has a matching sim row (matched by point_id, else by scenario, policy, workload, memory, replicate and params)");
    }
    let policies = distinct(pairs.iter().map(|&(_, k)| data.key(k, "policy")));
    let area = titled(
        root,
        "Predicted (simulator) vs measured (KVM)",
        &format!(
            "{} paired runs; dashed: prediction = measurement",
            pairs.len()
        ),
    )?;
    let panels = area.split_evenly((1, 2));
    for (pi, (col, scale, desc)) in [
        ("downtime_ns", 1e6, "downtime (ms)"),
        ("total_time_ns", 1e9, "total time (s)"),
    ]
    .into_iter()
    .enumerate()
    {
        let pts: Vec<(String, f64, f64)> = pairs
            .iter()
            .filter_map(|&(s, k)| {
                Some((
                    data.key(k, "policy"),
                    data.num(s, col)? / scale,
                    data.num(k, col)? / scale,
                ))
            })
            .collect();
        let Some(r) = log_range(pts.iter().flat_map(|p| [p.1, p.2])) else {
            continue;
        };
        let mut chart = ChartBuilder::on(&panels[pi])
            .caption(desc, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(52)
            .y_label_area_size(72)
            .build_cartesian_2d(r.clone().log_scale(), r.clone().log_scale())
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc(format!("predicted {desc}"))
            .y_desc(format!("measured {desc}"))
            .x_label_formatter(&|v| si(*v))
            .y_label_formatter(&|v| si(*v))
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .draw()
            .map_err(pe)?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(r.start, r.start), (r.end, r.end)],
                8,
                6,
                RGBColor(120, 120, 120).stroke_width(2),
            ))
            .map_err(pe)?;
        for (i, p) in policies.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(
                    pts.iter()
                        .filter(|q| q.0 == *p)
                        .map(|q| Circle::new((q.1, q.2), 6, c.filled())),
                )
                .map_err(pe)?
                .label(p.clone())
                .legend(move |(x, y)| Circle::new((x + 10, y), 6, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(pe)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Ratio figures (used by `migsim crosscheck --geometric-plot`)

/// Named lines of one panel, in legend order: (name, points sorted by x).
pub type Lines = Vec<(String, Vec<(f64, f64)>)>;

/// A grid of log–log panels of ratios, one line per series, with a reference line at 1.
pub struct RatioFigure {
    pub title: String,
    pub note: String,
    pub legend_heading: String,
    pub x_desc: String,
    pub y_desc: String,
    /// Panels per row.
    pub cols: usize,
    /// (caption, lines); x and y must be > 0.
    pub panels: Vec<(String, Lines)>,
    /// Tick label of an x value.
    pub x_label: fn(f64) -> String,
    /// Where the x ticks go.
    pub x_ticks: Vec<f64>,
}

/// Draw `fig` to `out` (`.svg` or `.png`), atomically.
pub fn render_ratio_figure(fig: &RatioFigure, out: &Path) -> Result<()> {
    struct Ratio<'a>(&'a RatioFigure, usize, usize);
    impl Painter for Ratio<'_> {
        fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
            draw_ratio_figure(self.0, root, self.1, self.2)
        }
    }
    let cols = fig.cols.max(1);
    let rows = fig.panels.len().div_ceil(cols).max(1);
    let size = (620 * cols as u32 + LEGEND_W, 480 * rows as u32 + 60);
    write_plot(out, size, "", &Ratio(fig, rows, cols))
}

fn draw_ratio_figure<DB: DrawingBackend>(
    fig: &RatioFigure,
    root: &DrawingArea<DB, Shift>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    root.fill(&WHITE).map_err(pe)?;
    let all = || {
        fig.panels
            .iter()
            .flat_map(|p| p.1.iter().flat_map(|s| s.1.iter().copied()))
    };
    let xr = log_range(all().map(|p| p.0)).context("no points to plot")?;
    // Keep the reference line (ratio 1) in view.
    let yr = log_range(all().map(|p| p.1).chain([1.0])).context("no points to plot")?;
    let area = titled(root, &fig.title, &fig.note)?;
    let names: Vec<String> = distinct(
        fig.panels
            .iter()
            .flat_map(|p| p.1.iter().map(|s| s.0.clone())),
    );
    let area = with_legend(&area, &fig.legend_heading, &names)?;
    let panels = area.split_evenly((rows, cols));
    for (i, (caption, series)) in fig.panels.iter().enumerate() {
        let mut chart = ChartBuilder::on(&panels[i])
            .caption(caption, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(52)
            .y_label_area_size(72)
            .build_cartesian_2d(
                xr.clone().log_scale().with_key_points(fig.x_ticks.clone()),
                yr.clone().log_scale(),
            )
            .map_err(pe)?;
        let x_label = fig.x_label;
        chart
            .configure_mesh()
            .x_desc(fig.x_desc.as_str())
            .y_desc(fig.y_desc.as_str())
            .x_label_formatter(&|v| x_label(*v))
            .y_label_formatter(&|v| si(*v))
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(pe)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(xr.start, 1.0), (xr.end, 1.0)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(pe)?;
        for (name, pts) in series {
            let k = names.iter().position(|n| n == name).unwrap_or(0);
            plot_series(&mut chart, k, pts, true)?;
        }
    }
    Ok(())
}
