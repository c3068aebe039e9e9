//! The parsed form of a JSON filter pattern: what the parser builds and the evaluator walks.

/// One step of a selector: `.name` or `[index]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `.name`: a property of an object.
    Field(String),
    /// `[n]`: the n-th element of an array (0-based).
    Index(usize),
}

/// A property selector such as `$.resources[0].ARN`, kept with its source text so that errors
/// and explanations can quote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The steps after `$`, in order.
    pub steps: Vec<Step>,
    /// The selector as written, e.g. `$.resources[0].ARN`.
    pub text: String,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A string value with its `*` wildcards resolved at parse time.
///
/// AWS documents `*` as matching "any text at, before, or after a search term": a leading
/// and/or trailing `*`. An interior `*` is literal (the doc's `Ev*ent` matches only the string
/// `Ev*ent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatch {
    /// `*` alone: any string or number.
    Any,
    /// No leading or trailing `*`: the whole value equals this.
    Exact(String),
    /// `text*`
    Prefix(String),
    /// `*text`
    Suffix(String),
    /// `*text*`
    Contains(String),
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted string, or an unquoted word that is not a number (`ConsoleLogin`,
    /// `kms.amazonaws.com`, `123.123.*`).
    Str(StrMatch),
    /// An unquoted number (`400`, `+1000`, `10e-3`), with the text as written for comparing
    /// against string fields.
    Num { value: f64, text: String },
    /// A regex value `%...%`, matched anywhere in the string (the guide's `%AUTHORIZED%` matches
    /// `UNAUTHORIZED REQUEST`).
    Regex(Regex),
}

/// A compiled regex value; two are equal when their source text is.
#[derive(Debug, Clone)]
pub struct Regex(pub regex::Regex);

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// What a postfix test (`IS ...`, `NOT EXISTS`) asks of a selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `IS NULL`: the property is present and JSON `null`.
    IsNull,
    /// `IS TRUE`: the property is JSON `true`.
    IsTrue,
    /// `IS FALSE`: the property is JSON `false`.
    IsFalse,
    /// `NOT EXISTS`: the property is absent.
    NotExists,
}

/// A boolean expression over one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a && b && ...`
    And(Vec<Expr>),
    /// `a || b || ...`
    Or(Vec<Expr>),
    /// `selector op value`
    Compare {
        selector: Selector,
        op: Op,
        value: Value,
    },
    /// `selector = "a" || selector = "b" || ...` with the same selector and exact strings,
    /// folded by the parser so the selector is resolved once (the CIS patterns are mostly this
    /// shape). Matches exactly as the `||` of the comparisons would.
    OneOf {
        selector: Selector,
        values: Vec<String>,
    },
    /// `selector IS NULL` and friends.
    Test { selector: Selector, test: Test },
}
