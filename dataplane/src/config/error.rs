//! [`ConfigError`] and the small TOML locator that turns byte offsets and key
//! paths into line numbers, so every message names the key and the line.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why a configuration could not be read, parsed or accepted.
///
/// Every variant's message names the file (when there is one), the line
/// (when it is known) and the key, e.g.
/// `blipmq.toml: line 3, column 1: server.foo: unknown field `foo`, expected one of ...`
/// or `blipmq.toml: line 7: limits.max_payload must be between 1 and 67108864 (got 0)`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML, or a key is unknown or has a value of the wrong
    /// type.
    #[error("{}{}{}", location(.file, .line, .column), key_prefix(.key), .message)]
    Parse {
        file: Option<PathBuf>,
        /// 1-based.
        line: Option<usize>,
        /// 1-based.
        column: Option<usize>,
        /// The dotted key the error is about, e.g. `server.foo`, when known.
        key: Option<String>,
        message: String,
    },
    /// The TOML parsed but a value is out of range or inconsistent.
    #[error("{}{}", location(.file, .line, &None), .message)]
    Invalid {
        file: Option<PathBuf>,
        /// 1-based line of the key in the file, when it was set there.
        line: Option<usize>,
        /// The dotted key, e.g. `limits.max_payload`.
        key: String,
        /// The whole message; it starts with or names the key.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: None,
            line: None,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The dotted key the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { key, .. } => key.as_deref(),
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }

    /// The 1-based line the error is about, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { line, .. } | ConfigError::Invalid { line, .. } => *line,
        }
    }

    /// Names `path` as the file the error comes from.
    pub fn with_file(mut self, path: &Path) -> ConfigError {
        match &mut self {
            ConfigError::Read { .. } => {}
            ConfigError::Parse { file, .. } | ConfigError::Invalid { file, .. } => {
                *file = Some(path.to_path_buf())
            }
        }
        self
    }

    /// Fills in the line of an [`ConfigError::Invalid`] key from `text`.
    pub(crate) fn locate_in(mut self, text: &str) -> ConfigError {
        if let ConfigError::Invalid { line, key, .. } = &mut self {
            if line.is_none() {
                *line = find_key_line(text, key);
            }
        }
        self
    }

    /// Converts a `toml` error into a [`ConfigError::Parse`] that names the
    /// line, the column and the key.
    pub(crate) fn from_toml(error: toml::de::Error, text: &str) -> ConfigError {
        // Some messages span lines ("invalid table header\nexpected `.`, `]`").
        let message = error
            .message()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let (line, column, key) = match error.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                (Some(line), Some(column), key_at(text, span.start))
            }
            None => (None, None, None),
        };
        let message = match (line, &key) {
            (Some(line), Some(key))
                if super::users::may_hold_secret(key, text.lines().nth(line - 1)) =>
            {
                super::users::SECRET_LINE_ERROR.to_string()
            }
            _ => message,
        };
        ConfigError::Parse {
            file: None,
            line,
            column,
            key,
            message,
        }
    }
}

fn location(file: &Option<PathBuf>, line: &Option<usize>, column: &Option<usize>) -> String {
    let mut out = String::new();
    if let Some(file) = file {
        let _ = write!(out, "{}: ", file.display());
    }
    match (line, column) {
        (Some(line), Some(column)) => {
            let _ = write!(out, "line {line}, column {column}: ");
        }
        (Some(line), None) => {
            let _ = write!(out, "line {line}: ");
        }
        _ => {}
    }
    out
}

fn key_prefix(key: &Option<String>) -> String {
    match key {
        Some(key) => format!("{key}: "),
        None => String::new(),
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = floor_char_boundary(text, at.min(text.len()));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// One line of TOML, reduced to what the locator needs.
enum LineKind {
    /// `[table]` or `[[table]]`, with the dotted name.
    Header(String),
    /// `key = ...` with the (possibly dotted) key.
    Assignment(String),
    Other,
}

fn classify(line: &str) -> LineKind {
    let line = strip_comment(line).trim();
    if let Some(rest) = line.strip_prefix('[') {
        let rest = rest.strip_prefix('[').unwrap_or(rest);
        if let Some(end) = rest.find(']') {
            if let Some(name) = normalize_key(&rest[..end]) {
                return LineKind::Header(name);
            }
        }
        return LineKind::Other;
    }
    if let Some(eq) = line.find('=') {
        if let Some(key) = normalize_key(&line[..eq]) {
            return LineKind::Assignment(key);
        }
    }
    LineKind::Other
}

/// Removes a `#` comment that is not inside a basic or literal string.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

/// `a . "b" . c` -> `a.b.c`; `None` if it does not look like a key.
fn normalize_key(raw: &str) -> Option<String> {
    let parts: Vec<String> = raw
        .split('.')
        .map(|part| {
            let part = part.trim();
            let unquoted = part
                .strip_prefix('"')
                .and_then(|p| p.strip_suffix('"'))
                .or_else(|| part.strip_prefix('\'').and_then(|p| p.strip_suffix('\'')));
            unquoted.unwrap_or(part).to_string()
        })
        .collect();
    let valid = parts.iter().all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    valid.then(|| parts.join("."))
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

/// The dotted key of the line holding byte offset `at`: the header name on a
/// header line, else the enclosing table plus the assigned key.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = floor_char_boundary(text, at.min(text.len()));
    let line_start = text[..at].rfind('\n').map_or(0, |nl| nl + 1);
    let mut table = String::new();
    for line in text[..line_start].lines() {
        if let LineKind::Header(name) = classify(line) {
            table = name;
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    match classify(line) {
        LineKind::Header(name) => Some(name),
        LineKind::Assignment(key) => Some(join(&table, &key)),
        LineKind::Other => None,
    }
}

/// The 1-based line where the dotted `key` is assigned in `text`, e.g.
/// `max_payload = ...` under `[limits]`, or `limits.max_payload = ...`.
pub(crate) fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let mut table = String::new();
    let mut header_line = None;
    for (index, line) in text.lines().enumerate() {
        match classify(line) {
            LineKind::Header(name) => {
                table = name;
                if table == key {
                    header_line = Some(index + 1);
                }
            }
            LineKind::Assignment(assigned) => {
                let full = join(&table, &assigned);
                if full == key {
                    return Some(index + 1);
                }
                // `limits = { max_payload = 0 }`: the table's line.
                if key.starts_with(&format!("{full}.")) && strip_comment(line).contains('{') {
                    return Some(index + 1);
                }
            }
            LineKind::Other => {}
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbc = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 8), (2, 3));
    }

    #[test]
    fn key_at_uses_the_enclosing_table() {
        let text = "[server]\n# note\nworkers = 4 # four\n\n[ limits ]\n\"max_payload\" = 1\n";
        assert_eq!(
            key_at(text, text.find("workers").unwrap()),
            Some("server.workers".into())
        );
        assert_eq!(
            key_at(text, text.find("\"max").unwrap()),
            Some("limits.max_payload".into())
        );
        assert_eq!(key_at(text, 1), Some("server".into()));
        assert_eq!(key_at(text, text.find("# note").unwrap()), None);
    }

    #[test]
    fn find_key_line_handles_tables_dotted_keys_and_inline_tables() {
        let text = "[server]\nworkers = 4\n[limits]\nmax_payload = 0 # '#'\n";
        assert_eq!(find_key_line(text, "limits.max_payload"), Some(4));
        assert_eq!(find_key_line(text, "server.workers"), Some(2));
        assert_eq!(find_key_line(text, "server.listen"), None);
        assert_eq!(
            find_key_line("limits.max_payload = 0\n", "limits.max_payload"),
            Some(1)
        );
        assert_eq!(
            find_key_line("\nlimits = { max_payload = 0 }\n", "limits.max_payload"),
            Some(2)
        );
        assert_eq!(find_key_line("[auth]\n", "auth"), Some(1));
    }

    #[test]
    fn comments_inside_strings_are_kept() {
        assert_eq!(strip_comment(r#"token = "a#b" # c"#), r#"token = "a#b" "#);
        assert_eq!(
            strip_comment(r##"token = "a\"#b""##),
            r##"token = "a\"#b""##
        );
    }
}
