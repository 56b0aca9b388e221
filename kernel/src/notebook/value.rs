//! A cell's final value shown with its `Debug` form in one compile.
//!
//! Why: for a cell ending in a value, evcxr first compiles `(value).evcxr_display()` and,
//! when the type has no such method, compiles the whole cell again with a `{:?}` print: two
//! compiles of about 0.3 s each (mostly rustc loading the metadata of the library's
//! hundred dependencies) for every `x + 1`. With [`DebugDisplay`] in scope (the prelude
//! brings it) every `Debug` type has that method, so the first compile succeeds. Types with
//! a view of their own (tunelab's `Dataset`, `TrainOutcome` …) keep it: inherent methods win
//! over trait methods.
//!
//! The display path is `#[inline]` (here and `neutralize_text`): its code is compiled into
//! each cell instead of being linked from the library, whose codegen unit would otherwise pull
//! some five hundred archive members of sixty crates into every cell's link (`lld
//! --why-extract`; the effect on warm cells is in BENCHMARKS.md).
//!
//! The kernel mirrors evcxr's `:fmt` and `:types` settings here with
//! [`set_value_display`]; formats other than `Debug`'s are refused there.

use super::markers::neutralize_text;

/// The `Debug` formats a value can be shown with, as `:fmt` names them.
const FORMATS: [&str; 6] = ["{:?}", "{:#?}", "{:x?}", "{:X?}", "{:#x?}", "{:#X?}"];

/// Where the settings live: the process environment, because evcxr links every cell with
/// its own copy of this library, so a static set by one cell is not the next cell's.
/// The value is the format's index in [`FORMATS`] and `1` when types are shown: `"1 0"`.
const SETTINGS_ENV: &str = "TUNELAB_VALUE_DISPLAY";

/// The current settings: (index into [`FORMATS`], show types).
#[inline]
fn settings() -> (usize, bool) {
    let raw = std::env::var(SETTINGS_ENV).unwrap_or_default();
    let mut parts = raw.split(' ').map(str::parse::<usize>);
    let format = parts.next().and_then(Result::ok).filter(|&i| i < FORMATS.len()).unwrap_or(0);
    (format, parts.next().and_then(Result::ok) == Some(1))
}

/// Sets how values are shown: `format` is one of `Debug`'s formats (`{:?}`, `{:#?}`, `{:x?}`,
/// `{:X?}`, `{:#x?}`, `{:#X?}`), `types` prefixes the type name as evcxr's `:types` does.
/// The kernel calls it between cells, when no other thread of the notebook reads the
/// environment.
pub fn set_value_display(format: &str, types: bool) -> Result<(), String> {
    let at = FORMATS.iter().position(|f| *f == format.trim()).ok_or_else(|| {
        format!("tunelab: values are shown with Debug formats only ({}); `{format}` is not one, so values keep {}", FORMATS.join(" "), FORMATS[settings().0])
    })?;
    std::env::set_var(SETTINGS_ENV, format!("{at} {}", u8::from(types)));
    Ok(())
}

/// Formats a value through its `Debug` implementation (the cell's only generic code is the
/// closure that calls it).
struct Via<'a>(&'a dyn Fn(&mut std::fmt::Formatter<'_>) -> std::fmt::Result);

impl std::fmt::Debug for Via<'_> {
    #[inline]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (self.0)(f)
    }
}

/// The text of a value (its `Debug` formatter, and its type's name) as the current settings
/// show it.
#[inline]
fn render(value: Via<'_>, type_name: &str) -> String {
    let (format, types) = settings();
    let text = match format {
        1 => format!("{value:#?}"),
        2 => format!("{value:x?}"),
        3 => format!("{value:X?}"),
        4 => format!("{value:#x?}"),
        5 => format!("{value:#X?}"),
        _ => format!("{value:?}"),
    };
    match types {
        true => format!(": {} = {text}", short_type_name(type_name)),
        false => text,
    }
}

/// Prints a value as evcxr's plain-text output.
#[inline]
fn show(value: Via<'_>, type_name: &str) {
    println!("EVCXR_BEGIN_CONTENT text/plain\n{}\nEVCXR_END_CONTENT", neutralize_text(&render(value, type_name)));
}

/// A type name without module paths (`Option<String>` for
/// `core::option::Option<alloc::string::String>`), as evcxr's `:types` shows it.
#[inline]
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(""));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(""));
    out
}

/// Gives every `Debug` type the `evcxr_display` method evcxr calls on a cell's final value
/// (see the module documentation).
pub trait DebugDisplay {
    /// Shows the value as plain text in the notebook.
    fn evcxr_display(&self);
}

impl<T: std::fmt::Debug + ?Sized> DebugDisplay for T {
    fn evcxr_display(&self) {
        show(Via(&|f| std::fmt::Debug::fmt(self, f)), std::any::type_name::<T>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `value` rendered as the current settings say.
    fn rendered<T: std::fmt::Debug + ?Sized>(value: &T) -> String {
        render(Via(&|f| std::fmt::Debug::fmt(value, f)), std::any::type_name::<T>())
    }

    #[test]
    fn values_render_as_the_settings_say() {
        assert_eq!(rendered(&2), "2");
        assert_eq!(rendered("a\"b"), "\"a\\\"b\"");
        assert_eq!(short_type_name("core::option::Option<alloc::string::String>"), "Option<String>");
        assert_eq!(short_type_name("(i32, &str)"), "(i32, &str)");
        assert!(set_value_display("{}", false).is_err(), "Display is not a Debug format");
        set_value_display("{:x?}", true).unwrap();
        assert_eq!(rendered(&vec![255u8]), ": Vec<u8> = [ff]");
        set_value_display("{:#?}", false).unwrap();
        assert_eq!(rendered(&Some(1)), "Some(\n    1,\n)");
        set_value_display("{:?}", false).unwrap();
        assert_eq!(rendered(&Some(1)), "Some(1)");
    }
}
