//! Configuration reference generated from the config types themselves, and environment
//! overrides applied to the TOML before it is deserialized.
//!
//! `config --example` must not drift from the code, so nothing here holds a description of a
//! field: the descriptions are the `///` doc comments of the config structs, read from their
//! source files (embedded with `include_str!`), and the values are the real `Default` values,
//! serialized with `toml`. [`render`] walks both together and fails when a serialized key has
//! no documented field, so a new field without a doc comment breaks `config --example` and the
//! test that compares it with the checked-in example.
//!
//! The parser reads rustfmt-formatted Rust: `pub struct Name {` / `pub enum Name {` at column 0,
//! one field per line (`pub name: Type,`), `///` docs and `#[serde(...)]` attributes above it.

use std::collections::HashMap;

/// A field of a config struct (or of a struct-like enum variant).
#[derive(Debug, Clone)]
pub struct Field {
    /// The TOML key (after `#[serde(rename = "...")]`).
    pub key: String,
    /// The Rust type as written, e.g. `Option<PathBuf>`.
    pub ty: String,
    /// The doc comment, one entry per line.
    pub doc: Vec<String>,
}

#[derive(Debug, Clone)]
struct Variant {
    name: String,
    doc: Vec<String>,
    /// `None`: a unit (or tuple) variant.
    fields: Option<Vec<Field>>,
}

#[derive(Debug, Clone)]
enum Item {
    Struct {
        fields: Vec<Field>,
    },
    Enum {
        tag: Option<String>,
        rename_all: Option<String>,
        variants: Vec<Variant>,
    },
}

/// The config types found in a set of source files.
#[derive(Debug, Default)]
pub struct Docs {
    items: HashMap<String, Item>,
}

fn attr_value(attr: &str, key: &str) -> Option<String> {
    let at = attr.find(&format!("{key} = \""))? + key.len() + 4;
    let rest = &attr[at..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Reads (possibly multi-line) attributes and docs; returns the index of the next other line.
fn leading(lines: &[&str], mut i: usize, doc: &mut Vec<String>, attrs: &mut Vec<String>) -> usize {
    while i < lines.len() {
        let t = lines[i].trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            i += 1;
        } else if t.starts_with("#[") {
            let mut a = t.to_string();
            while !a.ends_with(']') && i + 1 < lines.len() {
                i += 1;
                a.push_str(lines[i].trim());
            }
            attrs.push(a);
            i += 1;
        } else if t.starts_with("//") {
            i += 1;
        } else {
            break;
        }
    }
    i
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Parses the fields of a `{ ... }` body starting at `i`; returns them and the index after `}`.
fn fields(lines: &[&str], mut i: usize) -> (Vec<Field>, usize) {
    let mut out = Vec::new();
    while i < lines.len() {
        let (mut doc, mut attrs) = (Vec::new(), Vec::new());
        i = leading(lines, i, &mut doc, &mut attrs);
        if i >= lines.len() {
            break;
        }
        let t = lines[i].trim();
        if t.starts_with('}') {
            return (out, i + 1);
        }
        let decl = t.strip_prefix("pub ").unwrap_or(t);
        let Some(colon) = decl.find(": ") else {
            i += 1;
            continue;
        };
        let mut ty = decl[colon + 2..].to_string();
        while !ty.ends_with(',') && i + 1 < lines.len() && !lines[i + 1].trim().starts_with('}') {
            i += 1;
            ty.push_str(lines[i].trim());
        }
        i += 1;
        if attrs.iter().any(|a| a.contains("serde(skip")) {
            continue;
        }
        let key = attrs
            .iter()
            .find_map(|a| attr_value(a, "rename"))
            .unwrap_or_else(|| ident(&decl[..colon]));
        out.push(Field {
            key,
            ty: ty.trim_end_matches(',').trim().to_string(),
            doc,
        });
    }
    (out, i)
}

impl Docs {
    /// Reads every `pub struct` and `pub enum` of rustfmt-formatted sources.
    pub fn parse(sources: &[&str]) -> Docs {
        let mut docs = Docs::default();
        for src in sources {
            let lines: Vec<&str> = src.lines().collect();
            let mut i = 0;
            while i < lines.len() {
                let (mut doc, mut attrs) = (Vec::new(), Vec::new());
                i = leading(&lines, i, &mut doc, &mut attrs);
                if i >= lines.len() {
                    break;
                }
                let line = lines[i];
                i += 1;
                if let Some(rest) = line.strip_prefix("pub struct ")
                    && line.trim_end().ends_with('{')
                {
                    let (fields, next) = fields(&lines, i);
                    i = next;
                    docs.items.insert(ident(rest), Item::Struct { fields });
                } else if let Some(rest) = line.strip_prefix("pub enum ")
                    && line.trim_end().ends_with('{')
                {
                    let serde = attrs.iter().filter(|a| a.contains("serde(")).cloned();
                    let serde: String = serde.collect();
                    let mut variants = Vec::new();
                    while i < lines.len() {
                        let (mut vdoc, mut vattrs) = (Vec::new(), Vec::new());
                        i = leading(&lines, i, &mut vdoc, &mut vattrs);
                        let t = lines.get(i).map(|l| l.trim()).unwrap_or("}");
                        i += 1;
                        if t.starts_with('}') {
                            break;
                        }
                        let name = ident(t);
                        let fields = if t.ends_with('{') {
                            let (f, next) = fields(&lines, i);
                            i = next;
                            Some(f)
                        } else {
                            None
                        };
                        variants.push(Variant {
                            name,
                            doc: vdoc,
                            fields,
                        });
                    }
                    docs.items.insert(
                        ident(rest),
                        Item::Enum {
                            tag: attr_value(&serde, "tag"),
                            rename_all: attr_value(&serde, "rename_all"),
                            variants,
                        },
                    );
                }
            }
        }
        docs
    }

    /// The fields of a struct, if `name` is one.
    pub fn fields(&self, name: &str) -> Option<&[Field]> {
        match self.items.get(name)? {
            Item::Struct { fields } => Some(fields),
            Item::Enum { .. } => None,
        }
    }
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn variant_key(name: &str, rename_all: Option<&str>) -> String {
    match rename_all {
        Some("snake_case") => snake(name),
        Some("lowercase") => name.to_ascii_lowercase(),
        _ => name.to_string(),
    }
}

/// `Option<Vec<a::B>>` -> (optional, list, "B").
fn shape(ty: &str) -> (bool, bool, String) {
    let mut t = ty.trim();
    let mut optional = false;
    let mut list = false;
    loop {
        if let Some(inner) = t.strip_prefix("Option<").and_then(|s| s.strip_suffix('>')) {
            optional = true;
            t = inner.trim();
        } else if let Some(inner) = t.strip_prefix("Vec<").and_then(|s| s.strip_suffix('>')) {
            list = true;
            t = inner.trim();
        } else {
            break;
        }
    }
    let base = t.rsplit("::").next().unwrap_or(t).to_string();
    (optional, list, base)
}

fn placeholder(base: &str, list: bool) -> String {
    let one = match base {
        "String" => "\"<text>\"",
        "PathBuf" => "\"<path>\"",
        "SocketAddr" => "\"<address:port>\"",
        "Duration" => "\"<duration, e.g. 30s>\"",
        "bool" => "<true|false>",
        b if b.starts_with('u') || b.starts_with('i') => "<integer>",
        _ => "\"<value>\"",
    };
    if list {
        format!("[{one}]")
    } else {
        one.to_string()
    }
}

struct Renderer<'a> {
    docs: &'a Docs,
    out: String,
    errors: Vec<String>,
}

impl Renderer<'_> {
    fn doc(&mut self, doc: &[String]) {
        for line in doc {
            if line.is_empty() {
                self.out.push_str("#\n");
            } else {
                self.out.push_str(&format!("# {line}\n"));
            }
        }
    }

    /// A struct-like type: unit enums are values, structs and tagged enums are tables.
    fn is_table(&self, base: &str) -> bool {
        match self.docs.items.get(base) {
            Some(Item::Struct { .. }) => true,
            Some(Item::Enum { variants, .. }) => variants.iter().any(|v| v.fields.is_some()),
            None => false,
        }
    }

    fn one_of(&self, base: &str) -> Option<String> {
        let Some(Item::Enum {
            variants,
            rename_all,
            ..
        }) = self.docs.items.get(base)
        else {
            return None;
        };
        if variants.iter().any(|v| v.fields.is_some()) {
            return None;
        }
        let names: Vec<String> = variants
            .iter()
            .map(|v| format!("`{}`", variant_key(&v.name, rename_all.as_deref())))
            .collect();
        Some(format!("One of {}.", names.join(", ")))
    }

    /// Writes the keys of one table (struct fields) and then its sub-tables.
    fn table(&mut self, path: &str, fields: &[Field], value: Option<&toml::Table>) {
        if let Some(v) = value {
            for key in v.keys() {
                if !fields.iter().any(|f| &f.key == key) {
                    self.errors.push(format!(
                        "{path}.{key}: serialized but not a documented field"
                    ));
                }
            }
        }
        let (tables, scalars): (Vec<&Field>, Vec<&Field>) = fields.iter().partition(|f| {
            let (_, _, base) = shape(&f.ty);
            self.is_table(&base)
        });
        for f in scalars {
            let full = join(path, &f.key);
            if f.doc.is_empty() {
                self.errors
                    .push(format!("{full}: field has no doc comment"));
            }
            let (_, list, base) = shape(&f.ty);
            self.out.push('\n');
            self.doc(&f.doc);
            if let Some(one_of) = self.one_of(&base) {
                self.out.push_str(&format!("# {one_of}\n"));
            }
            match value.and_then(|v| v.get(&f.key)) {
                Some(v) => self.out.push_str(&format!("#{} = {}\n", f.key, inline(v))),
                None => self
                    .out
                    .push_str(&format!("#{} = {}\n", f.key, placeholder(&base, list))),
            }
        }
        for f in tables {
            let full = join(path, &f.key);
            if f.doc.is_empty() {
                self.errors
                    .push(format!("{full}: field has no doc comment"));
            }
            let (_, list, base) = shape(&f.ty);
            let v = value.and_then(|v| v.get(&f.key));
            if list {
                let elements = v.and_then(|v| v.as_array()).filter(|a| !a.is_empty());
                match elements {
                    Some(elems) => {
                        for e in elems {
                            self.element(&full, &f.doc, &base, e.as_table());
                        }
                    }
                    None => self.element(&full, &f.doc, &base, None),
                }
            } else {
                self.out.push('\n');
                self.doc(&f.doc);
                self.out.push_str(&format!("#[{full}]\n"));
                match self.docs.items.get(&base) {
                    Some(Item::Struct { fields }) => {
                        let fields = fields.clone();
                        self.table(&full, &fields, v.and_then(|v| v.as_table()));
                    }
                    _ => self.errors.push(format!("{full}: {base} is not a struct")),
                }
            }
        }
    }

    /// One `[[path]]` entry: a struct, or each variant of a tagged enum.
    fn element(&mut self, path: &str, doc: &[String], base: &str, value: Option<&toml::Table>) {
        match self.docs.items.get(base).cloned() {
            Some(Item::Struct { fields }) => {
                self.out.push('\n');
                self.doc(doc);
                self.out.push_str(&format!("#[[{path}]]\n"));
                self.table(path, &fields, value);
            }
            Some(Item::Enum {
                tag: Some(tag),
                rename_all,
                variants,
            }) => {
                self.out.push('\n');
                self.doc(doc);
                for v in variants {
                    let key = variant_key(&v.name, rename_all.as_deref());
                    self.out.push('\n');
                    self.doc(&v.doc);
                    self.out
                        .push_str(&format!("#[[{path}]]\n#{tag} = \"{key}\"\n"));
                    let fields = v.fields.unwrap_or_default();
                    // The value belongs to the variant its tag names; the others show theirs
                    // without values.
                    let mut value = value
                        .filter(|t| t.get(&tag).and_then(|t| t.as_str()) == Some(key.as_str()))
                        .cloned();
                    if let Some(v) = &mut value {
                        v.remove(&tag);
                    }
                    self.table(path, &fields, value.as_ref());
                }
            }
            _ => self.errors.push(format!(
                "{path}: {base} is neither a struct nor a tagged enum"
            )),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn inline(v: &toml::Value) -> String {
    v.to_string()
}

/// Renders the commented example of `root` (a struct in `docs`) with the values in `value`
/// (the serialized defaults). Every line is a comment, so the output itself is a valid config
/// that means the embedded default. Fails, naming them, when a serialized key has no documented
/// field or a field has no doc comment.
pub fn render(
    docs: &Docs,
    root: &str,
    value: &toml::Table,
    header: &str,
) -> Result<String, String> {
    let Some(fields) = docs.fields(root) else {
        return Err(format!("{root} is not a struct in the sources"));
    };
    let mut r = Renderer {
        docs,
        out: String::new(),
        errors: Vec::new(),
    };
    for line in header.lines() {
        r.out.push_str(format!("# {line}").trim_end());
        r.out.push('\n');
    }
    let fields = fields.to_vec();
    r.table("", &fields, Some(value));
    if r.errors.is_empty() {
        Ok(r.out)
    } else {
        Err(r.errors.join("\n"))
    }
}

/// Environment overrides: `<PREFIX>__SECTION__FIELD=value` sets `[section] field` (keys are
/// lowercased; a numeric segment indexes an array of tables, one past its end appends). The
/// value is read as a TOML value when it parses as one (`8080`, `true`, `["a","b"]`,
/// `"quoted"`), else taken as a string; but where the file or `defaults` (the serialized
/// defaults) hold a string, the value is always that string (an account id `012345678901`
/// stays text). Returns the names of the variables applied.
pub fn apply_env(
    table: &mut toml::Table,
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
    defaults: Option<&toml::Table>,
) -> Result<Vec<String>, String> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{prefix}__")))
        .collect();
    vars.sort();
    let mut applied = Vec::new();
    for (name, raw) in vars {
        let path: Vec<String> = name[prefix.len() + 2..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(|s| s.is_empty()) {
            return Err(format!("{name}: empty path segment"));
        }
        let is_string =
            |t: Option<&toml::Table>| t.and_then(|t| lookup(t, &path)).is_some_and(|v| v.is_str());
        let value = if is_string(Some(table)) || is_string(defaults) {
            toml::Value::String(raw.clone())
        } else {
            match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
                Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.clone())),
                Err(_) => toml::Value::String(raw.clone()),
            }
        };
        set(table, &path, value).map_err(|e| format!("{name}: {e}"))?;
        applied.push(name);
    }
    Ok(applied)
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let mut v = table.get(first)?;
    for seg in rest {
        v = match v {
            toml::Value::Table(t) => t.get(seg)?,
            toml::Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty path")?;
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    // A missing key followed by an index starts a list (`DESTINATIONS__0__PATH`).
    let next_is_index = rest[0].bytes().all(|b| b.is_ascii_digit());
    let slot = table.entry(first.clone()).or_insert_with(|| {
        if next_is_index {
            toml::Value::Array(Vec::new())
        } else {
            toml::Value::Table(toml::Table::new())
        }
    });
    set_in(slot, first, rest, value)
}

fn set_in(
    slot: &mut toml::Value,
    name: &str,
    rest: &[String],
    value: toml::Value,
) -> Result<(), String> {
    match slot {
        toml::Value::Table(t) => set(t, rest, value),
        toml::Value::Array(a) => {
            let (idx, tail) = rest.split_first().ok_or("empty path")?;
            let i: usize = idx
                .parse()
                .map_err(|_| format!("{name} is a list: the next segment must be an index"))?;
            if i == a.len() {
                a.push(toml::Value::Table(toml::Table::new()));
            }
            let len = a.len();
            let elem = a.get_mut(i).ok_or(format!(
                "{name} has {len} entries; index {i} is past the end"
            ))?;
            if tail.is_empty() {
                *elem = value;
                Ok(())
            } else {
                set_in(elem, idx, tail, value)
            }
        }
        _ => Err(format!("{name} is not a table")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
/// Root.
#[derive(Serialize)]
pub struct Root {
    /// The server.
    pub server: Server,
    /// Places.
    pub dest: Vec<Dest>,
}

/// `[server]`
pub struct Server {
    /// Where to listen.
    pub listen: String,
    /// Optional cert.
    pub cert: Option<PathBuf>,
    /// Mode.
    pub mode: Mode,
    #[serde(rename = "type")]
    /// Kind.
    pub kind: String,
}

#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A.
    FailOpen,
    FailClosed,
}

#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dest {
    /// Local dir.
    Local {
        /// The dir.
        path: PathBuf,
    },
}
"#;

    #[test]
    fn renders_docs_and_defaults() {
        let docs = Docs::parse(&[SRC]);
        let value: toml::Table = toml::from_str(
            "[server]\nlisten = \"127.0.0.1:1\"\nmode = \"fail_open\"\ntype = \"x\"\n",
        )
        .unwrap();
        let out = render(&docs, "Root", &value, "Example").unwrap();
        assert!(
            out.contains("# Where to listen.\n#listen = \"127.0.0.1:1\"\n"),
            "{out}"
        );
        assert!(out.contains("#cert = \"<path>\"\n"), "{out}");
        assert!(
            out.contains("# One of `fail_open`, `fail_closed`."),
            "{out}"
        );
        assert!(out.contains("#type = \"x\""), "{out}");
        assert!(out.contains("#[[dest]]\n#type = \"local\"\n"), "{out}");
        let bad: toml::Table = toml::from_str("[server]\nlisen = 1\n").unwrap();
        let err = render(&docs, "Root", &bad, "").unwrap_err();
        assert!(err.contains("server.lisen"), "{err}");
    }

    #[test]
    fn env_overrides() {
        let mut t: toml::Table =
            toml::from_str("[server]\nlisten = \"a\"\n[[d]]\nx = 1\n").unwrap();
        let vars = [
            ("GT__SERVER__LISTEN", "0.0.0.0:7480"),
            ("GT__SERVER__MAX", "12"),
            ("GT__TRAIL__NAME", "\"quoted\""),
            ("GT__D__0__X", "2"),
            ("GT__D__1__X", "3"),
            ("GT__NEW__0__Y", "4"),
            ("OTHER__X", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let defaults: toml::Table = toml::from_str("[trail]\naccount = \"\"\n").unwrap();
        let mut vars = vars.to_vec();
        vars.push(("GT__TRAIL__ACCOUNT".into(), "012345678901".into()));
        let applied = apply_env(&mut t, "GT", vars, Some(&defaults)).unwrap();
        assert_eq!(t["trail"]["account"].as_str(), Some("012345678901"));
        assert_eq!(applied.len(), 7);
        assert_eq!(t["new"][0]["y"].as_integer(), Some(4));
        assert_eq!(t["server"]["listen"].as_str(), Some("0.0.0.0:7480"));
        assert_eq!(t["server"]["max"].as_integer(), Some(12));
        assert_eq!(t["trail"]["name"].as_str(), Some("quoted"));
        assert_eq!(t["d"][1]["x"].as_integer(), Some(3));
        let err = apply_env(&mut t, "GT", [("GT__D__5__X".into(), "1".into())], None).unwrap_err();
        assert!(err.contains("past the end"), "{err}");
    }
}
