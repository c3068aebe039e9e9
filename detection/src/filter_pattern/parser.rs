//! A recursive-descent parser for JSON filter patterns.
//!
//! Grammar (from the CloudWatch Logs user guide, "Matching terms in JSON log events"; the
//! precedence `() > && > ||` is stated there):
//!
//! ```text
//! pattern  := "{" or "}"
//! or       := and ( "||" and )*
//! and      := term ( "&&" term )*
//! term     := "(" or ")" | selector ( op value | "IS" ("NULL"|"TRUE"|"FALSE") | "NOT" "EXISTS" )
//! selector := "$" ( "." name | "[" digits "]" )+      name: letters, digits, '-', '_'
//! op       := "=" | "!=" | "<" | "<=" | ">" | ">="
//! value    := '"' chars '"' | word                    word: up to space, ')', '}', '&', '|'
//! ```
//!
//! An unquoted word that reads as a number (`[+-]digits[.digits][e[+-]digits]`) is a number;
//! any other word is a string, which is how the CIS patterns' `kms.amazonaws.com` and the
//! guide's own `123.123.*` parse. `<`, `<=`, `>`, `>=` take numbers only, as the guide's numeric
//! section says. Keywords are upper case, as in every AWS example.
//!
//! Regex values `%...%` follow the guide's "Supported regular expressions (regex) syntax": only
//! ASCII letters and digits, the symbols `: _ # = @ / ; , -`, and the operators
//! `^ $ ? [ ] { } | \ * + .`; no `(` `)`; no multi-byte characters; at most two regex values in
//! one pattern. Spaces are also accepted, as in the CDK's own regex filter example.

use super::ParseError;
use super::ast::{Expr, Op, Regex, Selector, Step, StrMatch, Test, Value};

/// Parses a whole `{ ... }` pattern.
pub(super) fn parse(text: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        regexes: 0,
    };
    p.skip_ws();
    p.expect('{', "a JSON filter pattern starts with '{'")?;
    let expr = p.or()?;
    p.skip_ws();
    p.expect('}', "expected '&&', '||' or the closing '}'")?;
    p.skip_ws();
    if p.pos < p.chars.len() {
        return Err(p.error("unexpected text after the closing '}'"));
    }
    Ok(expr)
}

/// Parses a lone selector such as `$.sourceIPAddress` (a rule's `group_by`), with the same
/// syntax as inside a pattern.
pub(super) fn parse_selector(text: &str) -> Result<Selector, ParseError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        regexes: 0,
    };
    p.skip_ws();
    if p.peek() != Some('$') {
        return Err(p.error("a selector starts with '$', as in $.sourceIPAddress"));
    }
    let selector = p.selector()?;
    p.skip_ws();
    if p.pos < p.chars.len() {
        return Err(p.error("unexpected text after the selector"));
    }
    Ok(selector)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Regex values seen so far (AWS allows two per pattern).
    regexes: usize,
}

impl Parser {
    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            column: self.pos + 1,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek2(&self) -> Option<(char, char)> {
        Some((*self.chars.get(self.pos)?, *self.chars.get(self.pos + 1)?))
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char, message: &str) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(message))
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.and()?];
        loop {
            self.skip_ws();
            if self.peek2() == Some(('|', '|')) {
                self.pos += 2;
                terms.push(self.and()?);
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            fold_one_of(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.term()?];
        loop {
            self.skip_ws();
            if self.peek2() == Some(('&', '&')) {
                self.pos += 2;
                terms.push(self.term()?);
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                let inner = self.or()?;
                self.skip_ws();
                self.expect(')', "expected '&&', '||' or ')'")?;
                Ok(inner)
            }
            Some('$') => self.condition(),
            None => Err(self.error("the pattern ends where a condition was expected")),
            Some(_) => Err(self.error("expected a selector starting with '$' or '('")),
        }
    }

    fn condition(&mut self) -> Result<Expr, ParseError> {
        let selector = self.selector()?;
        self.skip_ws();
        let start = self.pos;
        if let Some(op) = self.op() {
            self.skip_ws();
            let value = self.value()?;
            if !matches!(op, Op::Eq | Op::Ne) && !matches!(value, Value::Num { .. }) {
                self.pos = start;
                return Err(self.error("'<', '<=', '>' and '>=' compare numbers only"));
            }
            return Ok(Expr::Compare {
                selector,
                op,
                value,
            });
        }
        let word = self.keyword();
        let test = match word.as_str() {
            "IS" => {
                self.skip_ws();
                let at = self.pos;
                match self.keyword().as_str() {
                    "NULL" => Test::IsNull,
                    "TRUE" => Test::IsTrue,
                    "FALSE" => Test::IsFalse,
                    "NOT" => {
                        self.pos = at;
                        return Err(
                            self.error("'IS NOT' is not supported; use 'NOT EXISTS' or '!='")
                        );
                    }
                    _ => {
                        self.pos = at;
                        return Err(self.error("expected NULL, TRUE or FALSE after IS"));
                    }
                }
            }
            "NOT" => {
                self.skip_ws();
                let at = self.pos;
                if self.keyword() != "EXISTS" {
                    self.pos = at;
                    return Err(self.error("expected EXISTS after NOT"));
                }
                Test::NotExists
            }
            "EXISTS" => {
                self.pos = start;
                return Err(self.error("'EXISTS' is not supported; use '= *' to test presence"));
            }
            _ => {
                self.pos = start;
                return Err(self.error(
                    "expected an operator (=, !=, <, <=, >, >=), IS NULL/TRUE/FALSE or NOT EXISTS",
                ));
            }
        };
        Ok(Expr::Test { selector, test })
    }

    fn keyword(&mut self) -> String {
        let mut word = String::new();
        while let Some(c) = self.peek().filter(char::is_ascii_alphabetic) {
            word.push(c);
            self.pos += 1;
        }
        word
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let start = self.pos;
        self.pos += 1; // '$'
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    let name_start = self.pos;
                    while self
                        .peek()
                        .is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
                    {
                        self.pos += 1;
                    }
                    if self.pos == name_start {
                        return Err(self.error("expected a property name after '.'"));
                    }
                    steps.push(Step::Field(
                        self.chars[name_start..self.pos].iter().collect(),
                    ));
                }
                Some('[') => {
                    if steps.is_empty() {
                        return Err(
                            self.error("an array index must follow a property, as in $.a[0]")
                        );
                    }
                    self.pos += 1;
                    let digits_start = self.pos;
                    while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    let digits: String = self.chars[digits_start..self.pos].iter().collect();
                    let index = digits
                        .parse::<usize>()
                        .map_err(|_| self.error("expected an array index (digits) inside '[ ]'"))?;
                    self.expect(']', "expected ']' after the array index")?;
                    steps.push(Step::Index(index));
                }
                _ => break,
            }
        }
        if steps.is_empty() {
            return Err(
                self.error("a selector needs at least one property after '$', as in $.eventName")
            );
        }
        let text = self.chars[start..self.pos].iter().collect();
        Ok(Selector { steps, text })
    }

    fn op(&mut self) -> Option<Op> {
        let (op, len) = match (self.peek(), self.chars.get(self.pos + 1).copied()) {
            (Some('!'), Some('=')) => (Op::Ne, 2),
            (Some('<'), Some('=')) => (Op::Le, 2),
            (Some('>'), Some('=')) => (Op::Ge, 2),
            (Some('='), _) => (Op::Eq, 1),
            (Some('<'), _) => (Op::Lt, 1),
            (Some('>'), _) => (Op::Gt, 1),
            _ => return None,
        };
        self.pos += len;
        Some(op)
    }

    fn regex(&mut self) -> Result<Value, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == '%' {
                break;
            }
            let allowed = c.is_ascii_alphanumeric() || ":_#=@/;,- ^$?[]{}|\\*+.".contains(c);
            if !allowed {
                let why = match c {
                    '(' | ')' => "'(' and ')' are not allowed in a regex value".to_string(),
                    c if !c.is_ascii() => {
                        "multi-byte characters are not allowed in a regex value".to_string()
                    }
                    c => format!("{c:?} is not allowed in a regex value"),
                };
                return Err(self.error(why));
            }
            self.pos += 1;
        }
        if self.peek() != Some('%') {
            self.pos = open;
            return Err(self.error("unterminated regex value: no closing '%'"));
        }
        let source: String = self.chars[start..self.pos].iter().collect();
        self.pos += 1;
        self.regexes += 1;
        if self.regexes > 2 {
            self.pos = open;
            return Err(self.error("at most 2 regex values are allowed in one pattern"));
        }
        match regex::Regex::new(&source) {
            Ok(re) => Ok(Value::Regex(Regex(re))),
            Err(e) => {
                self.pos = open;
                Err(self.error(format!("invalid regex: {e}")))
            }
        }
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some('"') => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.error("unterminated quoted string")),
                        Some('"') => {
                            self.pos += 1;
                            break;
                        }
                        Some('\\') if matches!(self.chars.get(self.pos + 1), Some('"' | '\\')) => {
                            s.push(self.chars[self.pos + 1]);
                            self.pos += 2;
                        }
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Ok(Value::Str(wildcard(&s)))
            }
            Some('%') => self.regex(),
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| {
                    !c.is_whitespace() && !matches!(c, ')' | '(' | '}' | '&' | '|' | '"')
                }) {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(self.error("expected a value after the operator"));
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                Ok(match number(&word) {
                    Some(value) => Value::Num { value, text: word },
                    None => Value::Str(wildcard(&word)),
                })
            }
        }
    }
}

/// Folds `||` of exact string equalities on one selector into [`Expr::OneOf`]; any other
/// mix stays an [`Expr::Or`].
fn fold_one_of(terms: Vec<Expr>) -> Expr {
    let exact = |t: &Expr| match t {
        Expr::Compare {
            selector,
            op: Op::Eq,
            value: Value::Str(StrMatch::Exact(v)),
        } => Some((selector.clone(), v.clone())),
        _ => None,
    };
    let Some((first, _)) = exact(&terms[0]) else {
        return Expr::Or(terms);
    };
    let mut values = Vec::with_capacity(terms.len());
    for t in &terms {
        match exact(t) {
            Some((selector, v)) if selector.steps == first.steps => values.push(v),
            _ => return Expr::Or(terms),
        }
    }
    Expr::OneOf {
        selector: first,
        values,
    }
}

/// Reads `[+-]digits[.digits][(e|E)[+-]digits]`, the number syntax of the guide's numeric
/// section; anything else (`1.2.3`, `0x10`, `inf`) is not a number.
fn number(word: &str) -> Option<f64> {
    let b = word.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s
    };
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    if !digits(&mut i) {
        return None;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    word.trim_start_matches('+').parse().ok()
}

/// Resolves leading and trailing `*` (see [`StrMatch`]).
fn wildcard(s: &str) -> StrMatch {
    if s == "*" {
        return StrMatch::Any;
    }
    match (s.strip_prefix('*'), s.strip_suffix('*')) {
        (Some(_), Some(_)) => StrMatch::Contains(s[1..s.len() - 1].to_string()),
        (Some(rest), None) => StrMatch::Suffix(rest.to_string()),
        (None, Some(rest)) => StrMatch::Prefix(rest.to_string()),
        (None, None) => StrMatch::Exact(s.to_string()),
    }
}
