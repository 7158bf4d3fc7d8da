//! Errors of a `gevaldi.toml`, each pointing at its line.

use std::fmt;
use std::path::PathBuf;

/// One mistake in a `gevaldi.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the file could not be read).
    pub line: usize,
    /// 1-based column (0 when the file could not be read).
    pub column: usize,
    /// The key path, e.g. `pair[1].max_divergence` (empty for the whole file).
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No line: the file itself (it could not be read).
        if self.line == 0 {
            write!(f, "{}: ", self.file.display())?;
        } else {
            write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every mistake found in one `gevaldi.toml`, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file.
    pub file: PathBuf,
    /// The mistakes, at least one.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{n} error{} in `{}`:",
            if n == 1 { "" } else { "s" },
            self.file.display()
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_without_a_line_names_the_file_only() {
        let e = ConfigError {
            file: PathBuf::from("nowhere.toml"),
            line: 0,
            column: 0,
            key: String::new(),
            message: "failed to read the file".into(),
        };
        assert_eq!(e.to_string(), "nowhere.toml: failed to read the file");
        let e = ConfigError {
            line: 3,
            column: 9,
            ..e
        };
        assert_eq!(e.to_string(), "nowhere.toml:3:9: failed to read the file");
    }
}
