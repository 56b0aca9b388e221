//! evcxr's `:fmt` and `:types` settings mirrored into the library's one-compile value
//! display (`tunelab::notebook::set_value_display`), which shows cell values in place of
//! evcxr's own `Debug` fallback.

/// How values are shown, as the cells' `:fmt` and `:types` commands left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueDisplay {
    format: String,
    types: bool,
}

impl Default for ValueDisplay {
    fn default() -> Self {
        Self { format: "{:?}".into(), types: false }
    }
}

impl ValueDisplay {
    /// Applies the `:fmt` and `:types` lines of `cell` as evcxr does (`:fmt` alone resets the
    /// format, `:types` toggles); `true` when the cell had any.
    pub fn follow(&mut self, cell: &str) -> bool {
        let mut changed = false;
        for line in cell.lines().map(str::trim) {
            let mut words = line.splitn(2, char::is_whitespace);
            match words.next() {
                Some(":fmt") => {
                    self.format = words.next().map(str::trim).filter(|f| !f.is_empty()).unwrap_or("{:?}").to_string();
                    changed = true;
                }
                Some(":types") => {
                    self.types = !self.types;
                    changed = true;
                }
                _ => {}
            }
        }
        changed
    }

    /// The code that hands the settings to the library in the code-running process; a format
    /// it cannot show is reported on the cell's stderr.
    pub fn code(&self) -> String {
        format!("if let Err(e) = tunelab::notebook::set_value_display({:?}, {}) {{ eprintln!(\"{{e}}\"); }}", self.format, self.types)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_followed_as_evcxr_does() {
        let mut d = ValueDisplay::default();
        assert!(!d.follow("let x = 1;\nx"));
        assert!(d.follow(":fmt {:#?}\n:types"));
        assert_eq!(d, ValueDisplay { format: "{:#?}".into(), types: true });
        assert!(d.follow("  :fmt\n:types"));
        assert_eq!(d, ValueDisplay::default());
        assert_eq!(d.code(), "if let Err(e) = tunelab::notebook::set_value_display(\"{:?}\", false) { eprintln!(\"{e}\"); }");
    }
}
