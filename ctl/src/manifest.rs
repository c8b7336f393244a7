//! Reading what `kumactl apply -f` is given: one or many YAML/JSON documents,
//! `{{ key }}` variables from `-v key=value`, and resources checked against the
//! model before anything is sent. A syntax error names the file and the line in
//! that file (not in the document).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kuma_model::Scope;
use kuma_model::resource::ResourceInput;
use regex::Regex;
use serde_json::Value;

/// Where `-f` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    Url(String),
    Path(PathBuf),
}

impl Source {
    pub fn parse(arg: &str) -> Source {
        if arg == "-" {
            Source::Stdin
        } else if arg.starts_with("http://") || arg.starts_with("https://") {
            Source::Url(arg.to_owned())
        } else {
            Source::Path(PathBuf::from(arg))
        }
    }
}

/// One input file's text and the name errors should use for it.
#[derive(Debug, Clone)]
pub struct Input {
    pub origin: String,
    pub text: String,
}

/// Reads a file, or every `.yaml`, `.yml` and `.json` file of a directory (sorted).
pub fn read_path(path: &Path) -> anyhow::Result<Vec<Input>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("error reading directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
            })
            .collect();
        files.sort();
        files.iter().map(|f| read_file(f)).collect()
    } else {
        Ok(vec![read_file(path)?])
    }
}

fn read_file(path: &Path) -> anyhow::Result<Input> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("error while reading provided file {}", path.display()))?;
    Ok(Input {
        origin: path.display().to_string(),
        text,
    })
}

/// One YAML document and where it starts in its file (1-based line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub origin: String,
    pub first_line: usize,
    pub text: String,
}

/// Splits a YAML stream on `---` lines, dropping documents that hold only
/// comments or blank lines.
pub fn split_documents(input: &Input) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    let mut flush = |text: &mut String, first_line: usize| {
        let meaningful = text.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if meaningful {
            docs.push(Document {
                origin: input.origin.clone(),
                first_line,
                text: std::mem::take(text),
            });
        } else {
            text.clear();
        }
    };
    for (i, line) in input.text.lines().enumerate() {
        let is_separator = line == "---" || line.starts_with("--- ") || line.trim_end() == "---";
        if is_separator {
            flush(&mut current, first_line);
            first_line = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current, first_line);
    docs
}

/// Replaces `{{ key }}` and `{{{ key }}}` with the value of `key`, as Kuma's
/// mustache rendering does; a key without a value renders empty. Values are not
/// HTML-escaped (Kuma's mustache escapes `&<>"` in `{{ }}`, which only ever
/// broke values).
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> String {
    static PATTERN: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = PATTERN.get_or_init(|| {
        Regex::new(r"\{\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}\}|\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
            .expect("static regex")
    });
    re.replace_all(text, |caps: &regex::Captures<'_>| {
        let key = caps
            .get(1)
            .or_else(|| caps.get(2))
            .map_or("", |m| m.as_str());
        vars.get(key).cloned().unwrap_or_default()
    })
    .into_owned()
}

/// Parses one document (YAML or JSON) into JSON. Errors read
/// `FILE:LINE:COLUMN: message` with LINE counted in the whole file.
pub fn parse_document(doc: &Document) -> anyhow::Result<Value> {
    serde_yaml::from_str::<Value>(&doc.text).map_err(|e| {
        let offset = doc.first_line - 1;
        static LINE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
        let re = LINE.get_or_init(|| Regex::new(r"line (\d+)").expect("static regex"));
        let message = re
            .replace_all(&e.to_string(), |c: &regex::Captures<'_>| {
                let n: usize = c[1].parse().unwrap_or(0);
                format!("line {}", n + offset)
            })
            .into_owned();
        match e.location() {
            Some(loc) => anyhow::anyhow!(
                "{}:{}:{}: YAML syntax error: {message}",
                doc.origin,
                loc.line() + offset,
                loc.column()
            ),
            None => anyhow::anyhow!("{}: YAML syntax error: {message}", doc.origin),
        }
    })
}

/// A resource ready to send: its envelope read and checked, the original JSON kept.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `file:line` of the document, for messages.
    pub at: String,
    pub input: ResourceInput,
    pub name: String,
    pub mesh: Option<String>,
    pub body: Value,
}

/// Reads every resource of the inputs, rendering variables when any are given.
/// All problems are reported together, each naming its file and document.
pub fn parse_manifests(
    inputs: &[Input],
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut index = 0usize;
    for input in inputs {
        for mut doc in split_documents(input) {
            let i = index;
            index += 1;
            if !vars.is_empty() {
                doc.text = render(&doc.text, vars);
            }
            match parse_document(&doc).and_then(|v| check(v, &doc)) {
                Ok(m) => out.push(m),
                Err(e) => problems.push(format!("resource[{i}]: {e:#}")),
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "failed to validate some resources:\n{}",
            problems.join("\n")
        );
    }
    if out.is_empty() {
        bail!("no resource(s) passed to apply");
    }
    Ok(out)
}

fn check(value: Value, doc: &Document) -> anyhow::Result<Manifest> {
    let at = format!("{}:{}", doc.origin, doc.first_line);
    let input = ResourceInput::from_kuma_json(value.clone(), None)
        .map_err(|v| anyhow::anyhow!("{at}: failed to parse resource: {v}"))?;
    let Some(name) = input.name.clone().filter(|n| !n.is_empty()) else {
        bail!("{at}: failed to read meta: name: cannot be empty");
    };
    let mesh = input.mesh.clone().filter(|m| !m.is_empty());
    match (input.kind.scope(), &mesh) {
        (Scope::Mesh, None) => bail!("{at}: failed to read meta: mesh: cannot be empty"),
        (Scope::Global, Some(_)) => {
            bail!("{at}: failed to read meta: mesh: must be empty for a global resource")
        }
        _ => {}
    }
    Ok(Manifest {
        at,
        input,
        name,
        mesh,
        body: value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(text: &str) -> Input {
        Input {
            origin: "demo.yaml".into(),
            text: text.into(),
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sources() {
        assert_eq!(Source::parse("-"), Source::Stdin);
        assert_eq!(
            Source::parse("https://x/y.yaml"),
            Source::Url("https://x/y.yaml".into())
        );
        assert_eq!(Source::parse("a.yaml"), Source::Path("a.yaml".into()));
    }

    #[test]
    fn splits_documents_and_remembers_their_first_line() {
        let docs = split_documents(&input(
            "---\ntype: Mesh\nname: a\n---\n# only a comment\n---\ntype: Mesh\nname: b\n",
        ));
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_line, 2);
        assert_eq!(docs[1].first_line, 7);
        assert_eq!(docs[1].text, "type: Mesh\nname: b\n");
    }

    #[test]
    fn renders_variables_like_kuma() {
        let v = vars(&[("name", "demo"), ("a.b", "nested")]);
        assert_eq!(render("name: {{ name }}", &v), "name: demo");
        assert_eq!(
            render("name: {{name}}-{{{ a.b }}}", &v),
            "name: demo-nested"
        );
        assert_eq!(render("x: '{{ missing }}'", &v), "x: ''");
        assert_eq!(render("x: & < >", &v), "x: & < >");
    }

    #[test]
    fn yaml_syntax_error_names_file_and_file_line() {
        let text = "type: Mesh\nname: a\n---\ntype: Mesh\nname: b\n  bad: [\n";
        let docs = split_documents(&input(text));
        let err = parse_document(&docs[1]).unwrap_err().to_string();
        assert!(err.starts_with("demo.yaml:6:"), "{err}");
        assert!(!err.contains("line 3 "), "lines must be file lines: {err}");

        let err = parse_manifests(&[input(text)], &BTreeMap::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains("resource[1]: demo.yaml:6:"),
            "{err:#}"
        );
    }

    #[test]
    fn parses_yaml_and_json_documents_with_variables() {
        let text = "type: Mesh\nname: {{ mesh }}\n---\n{\"type\": \"MeshTimeout\", \"name\": \"t\", \"mesh\": \"{{ mesh }}\", \"spec\": {}}\n";
        let out = parse_manifests(&[input(text)], &vars(&[("mesh", "demo")])).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name, "demo");
        assert_eq!(out[0].input.kind.name(), "Mesh");
        assert_eq!(out[1].mesh.as_deref(), Some("demo"));
        assert_eq!(out[1].body["spec"], serde_json::json!({}));
    }

    #[test]
    fn envelope_problems_are_reported_together() {
        let text = "type: Nope\nname: a\n---\ntype: MeshTimeout\nname: t\n---\ntype: Mesh\n";
        let err = format!(
            "{:#}",
            parse_manifests(&[input(text)], &BTreeMap::new()).unwrap_err()
        );
        assert!(
            err.contains("resource[0]: demo.yaml:1: failed to parse resource"),
            "{err}"
        );
        assert!(err.contains("unknown type"), "{err}");
        assert!(
            err.contains("resource[1]: demo.yaml:4: failed to read meta: mesh: cannot be empty"),
            "{err}"
        );
        assert!(
            err.contains("resource[2]: demo.yaml:7: failed to read meta: name: cannot be empty"),
            "{err}"
        );
    }

    #[test]
    fn empty_input_is_refused() {
        let err = parse_manifests(&[input("# nothing\n")], &BTreeMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "no resource(s) passed to apply");
    }

    #[test]
    fn reads_directories_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), "type: Mesh\nname: b\n").unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            "{\"type\": \"Mesh\", \"name\": \"a\"}",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let inputs = read_path(dir.path()).unwrap();
        assert_eq!(inputs.len(), 2);
        let out = parse_manifests(&inputs, &BTreeMap::new()).unwrap();
        assert_eq!(
            out.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
