//! Rendering for people: SVG charts (and, for notebooks, HTML tables) with all text escaped.

mod chart;
mod html;

pub use chart::{LineChart, Series};
pub use html::escape_html;
