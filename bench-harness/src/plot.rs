//! SVG plots of a run: throughput over time and the latency percentile
//! distribution (x axis in "nines": 90%, 99%, 99.9%, ...).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::report::RunResult;

const SIZE: (u32, u32) = (900, 500);

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// Produce and consume MiB/s per second of the run.
pub fn throughput(r: &RunResult, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let t_max = r.timeseries.iter().map(|s| s.t_s).fold(1.0, f64::max);
    let y_max = r
        .timeseries
        .iter()
        .map(|s| s.produce_mib_per_s.max(s.consume_mib_per_s))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} (acks={}): throughput", r.workload.name, r.settings.acks),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("MiB/s")
        .draw()
        .map_err(err)?;
    let series = [("produce", RED, true), ("consume", BLUE, false)];
    for (label, color, produce) in series {
        let points: Vec<(f64, f64)> = r
            .timeseries
            .iter()
            .map(|s| {
                (
                    s.t_s,
                    if produce {
                        s.produce_mib_per_s
                    } else {
                        s.consume_mib_per_s
                    },
                )
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    let warmup = r.settings.warmup_s;
    chart
        .draw_series(LineSeries::new(
            vec![(warmup, 0.0), (warmup, y_max)],
            BLACK.mix(0.3),
        ))
        .map_err(err)?
        .label("end of warm-up")
        .legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5).stroke_width(2))
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Maps a percentile to "nines": 90 -> 1, 99 -> 2, 99.9 -> 3.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-6);
    -rest.log10()
}

/// "99.9%" for 3 nines: as many decimals as the nines need.
fn percentile_label(nines: f64) -> String {
    let decimals = (nines.round() as usize).saturating_sub(2);
    format!("{:.*}%", decimals, 100.0 - 100.0 * 10f64.powf(-nines))
}

/// Publish and end-to-end latency by percentile.
pub fn latency(r: &RunResult, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let all = r
        .publish_latency_distribution
        .iter()
        .chain(r.e2e_latency_distribution.iter());
    let y_max = all.map(|p| p.1).fold(0.01, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} (acks={}): latency by percentile",
                r.workload.name, r.settings.acks
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..6.0, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()
        .map_err(err)?;
    let series = [
        ("publish", &r.publish_latency_distribution, RED),
        ("end-to-end", &r.e2e_latency_distribution, BLUE),
    ];
    for (label, dist, color) in series {
        let points: Vec<(f64, f64)> = dist.iter().map(|&(p, ms)| (nines(p), ms)).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::nines;

    #[test]
    fn percentile_labels() {
        assert_eq!(super::percentile_label(0.0), "0%");
        assert_eq!(super::percentile_label(1.0), "90%");
        assert_eq!(super::percentile_label(3.0), "99.9%");
        assert_eq!(super::percentile_label(6.0), "99.9999%");
    }

    #[test]
    fn nines_scale() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
    }
}
