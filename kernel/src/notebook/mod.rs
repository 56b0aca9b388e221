//! Notebook support: live displays that update in place while a cell runs, rich HTML views
//! of tunelab's types (evcxr's `evcxr_display` convention), side-by-side generations, and
//! the interrupt flag that lets the kernel stop a training loop gracefully (defined in
//! [`crate::train`], re-exported here), and [`input`] for
//! asking the user a question from inside a cell.
//!
//! All text from datasets and models is HTML-escaped before it is shown.

mod input;
mod live;
pub mod markers;
mod value;
mod views;

pub use crate::train::{install_interrupt_handler, interrupt_flag};
pub use input::{input, password};
pub use live::{clear_output, live_training, LiveDisplay};
pub use value::{set_value_display, DebugDisplay};
pub use views::{compare, Comparison, HtmlFile};
