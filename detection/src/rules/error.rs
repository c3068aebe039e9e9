//! Why a rule set did not load: the file, the rule, the position, the problem.

/// A rule file, pack or rule that does not load. Displays as
/// `rules/ssh.yaml: rule `ssh-brute-force`: line 4, column 20: <message>`, leaving out what
/// is not known. For a pattern that does not parse, the line and column are those of the
/// pattern in the file and the message gives the column inside the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct LoadError {
    /// The file path, or the pack (`pack:host`, `pack:sigma/<file>`).
    pub file: String,
    /// The rule's id, or `#N` (1-based position in the file) when its id is unknown.
    pub rule: Option<String>,
    /// 1-based line in the file.
    pub line: Option<usize>,
    /// 1-based column in the file.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl LoadError {
    /// An error about a whole file or pack.
    pub(crate) fn file(file: impl Into<String>, message: impl Into<String>) -> LoadError {
        LoadError {
            file: file.into(),
            rule: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        let mut s = format!("{}: ", self.file);
        if let Some(r) = &self.rule {
            s.push_str(&format!("rule `{r}`: "));
        }
        match (self.line, self.column) {
            (Some(l), Some(c)) => s.push_str(&format!("line {l}, column {c}: ")),
            (Some(l), None) => s.push_str(&format!("line {l}: ")),
            _ => {}
        }
        s.push_str(&self.message);
        s
    }
}
