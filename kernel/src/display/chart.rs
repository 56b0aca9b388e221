//! A small self-contained SVG line chart (loss curves): axes with ticks, one polyline per
//! series, a legend. No dependencies; output is deterministic for the same data.

use super::html::escape_html;

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// CSS colour.
    pub color: String,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// X-axis label.
    pub x_label: String,
    /// Y-axis label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

impl LineChart {
    /// Renders the chart as a standalone SVG document of `width` × `height` pixels.
    pub fn to_svg(&self, width: f64, height: f64) -> String {
        let (left, right, top, bottom) = (60.0, 20.0, 36.0, 44.0);
        let (pw, ph) = (width - left - right, height - top - bottom);
        let finite: Vec<(f64, f64)> = self.series.iter().flat_map(|s| s.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        let (mut x0, mut x1) = bounds(finite.iter().map(|p| p.0));
        let (mut y0, mut y1) = bounds(finite.iter().map(|p| p.1));
        if x1 <= x0 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        if y1 <= y0 {
            y0 -= 0.5;
            y1 += 0.5;
        }
        // Halved values keep the span finite for any finite data (±1e308 from a hostile log).
        let (h0, h1) = (y0 / 2.0, y1 / 2.0);
        let pad = (h1 - h0) * 0.05;
        let (h0, h1) = (h0 - pad, h1 + pad);
        let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| top + (1.0 - (y / 2.0 - h0) / (h1 - h0)) * ph;

        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n"
        );
        svg.push_str(&format!("<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n"));
        svg.push_str(&format!("<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n", width / 2.0, escape_html(&self.title)));
        for i in 0..=4 {
            let (fy, grid_y) = (2.0 * (h0 + (h1 - h0) / 4.0 * i as f64), top + (1.0 - i as f64 / 4.0) * ph);
            let fx = x0 + (x1 - x0) * i as f64 / 4.0;
            svg.push_str(&format!("<line x1=\"{left}\" x2=\"{}\" y1=\"{grid_y:.1}\" y2=\"{grid_y:.1}\" stroke=\"#eee\"/>\n", left + pw));
            svg.push_str(&format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n", left - 4.0, grid_y + 4.0, tick(fy)));
            svg.push_str(&format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", sx(fx), top + ph + 16.0, tick(fx)));
        }
        svg.push_str(&format!("<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>\n"));
        svg.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2.0, height - 6.0, escape_html(&self.x_label)));
        svg.push_str(&format!(
            "<text x=\"14\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">{}</text>\n",
            top + ph / 2.0,
            top + ph / 2.0,
            escape_html(&self.y_label)
        ));
        for (k, s) in self.series.iter().enumerate() {
            let pts: Vec<String> =
                s.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
            let color = escape_html(&s.color);
            if pts.len() == 1 {
                svg.push_str(&format!("<circle cx=\"{}\" r=\"3\" fill=\"{color}\"/>\n", pts[0].replace(',', "\" cy=\"")));
            } else if !pts.is_empty() {
                svg.push_str(&format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n", pts.join(" ")));
            }
            let ly = top + 14.0 + 14.0 * k as f64;
            svg.push_str(&format!(
                "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
                left + pw - 110.0,
                left + pw - 92.0
            ));
            svg.push_str(&format!("<text x=\"{}\" y=\"{}\">{}</text>\n", left + pw - 88.0, ly + 4.0, escape_html(&s.name)));
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

fn tick(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{v:.1e}")
    } else if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_escaped_series() {
        let chart = LineChart {
            title: "loss <run>".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            series: vec![Series { name: "train".into(), color: "#1f77b4".into(), points: vec![(1.0, 2.0), (2.0, 1.5), (3.0, f64::NAN)] }],
        };
        let svg = chart.to_svg(480.0, 300.0);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("loss &lt;run&gt;"));
        assert!(svg.contains("<polyline") && !svg.contains("NaN"));
        // Values at the ends of f64's range keep every coordinate a number.
        let extreme = LineChart { series: vec![Series { points: vec![(1.0, 1e308), (2.0, -1e308)], ..chart.series[0].clone() }], ..chart };
        let svg = extreme.to_svg(480.0, 300.0);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}
