//! `{{ var }}` placeholders in a Dataplane template, filled from `-v key=value`.

use std::collections::BTreeMap;

/// Renders `template`, failing on a placeholder with no value (as Kuma does).
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unterminated {{ in the dataplane template".to_string())?;
        let key = after[..end].trim().trim_start_matches('.');
        let value = vars.get(key).ok_or_else(|| {
            format!("the dataplane template needs a value for {key:?} (pass -v {key}=VALUE)")
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `key=value` pairs.
pub fn parse_vars(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| format!("invalid --dataplane-var {p:?}: expected key=value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_in_both_spellings() {
        let vars = parse_vars(&["port=8080".into(), "name=web".into()]).unwrap();
        assert_eq!(
            render("name: {{ name }}\nport: {{port}} {{ .port }}", &vars).unwrap(),
            "name: web\nport: 8080 8080"
        );
    }

    #[test]
    fn missing_value_is_an_error() {
        let err = render("{{ address }}", &BTreeMap::new()).unwrap_err();
        assert!(err.contains("address"));
        assert!(parse_vars(&["novalue".into()]).is_err());
    }
}
